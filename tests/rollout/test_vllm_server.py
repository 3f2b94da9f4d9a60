"""Server mode on a real vLLM engine: ``grpokit vllm-serve`` in a subprocess, VLLMServerSampler in the test.

vLLM's CPU build here (run with scripts/test-vllm.sh -k server). One server serves the whole module (starting
one takes 20+ s); each test pushes the weights it needs first. The references are the transformers model with
the same weights, in float32, as in test_vllm_sampler.py.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("vllm")

from grpokit.models import build_char_tokenizer, build_tiny_model, completion_logprobs  # noqa: E402
from grpokit.rollout import Sampler, TransformersSampler  # noqa: E402
from grpokit.rollout.vllm_client import VLLMServerError, VLLMServerSampler, wait_for_server  # noqa: E402

PROMPTS = ["12+34=", "1+2=", "123+456=", "9="]
MAX_NEW = 12
ATOL = 5e-5  # as test_vllm_sampler.py: float32 on both sides, other kernels; a stale engine is > 1e-2 off


def _build(tok, seed=0):
    # As test_vllm_sampler.py: head size 32 (vLLM CPU attention), peaked distributions, tied embeddings.
    return build_tiny_model(tok, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                            max_position_embeddings=128, tie_word_embeddings=True, seed=seed,
                            initializer_range=0.3).eval()  # fmt: skip


@pytest.fixture(scope="module")
def vtok():
    return build_char_tokenizer("0123456789+=")


@pytest.fixture(scope="module")
def model_dir(vtok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen2")
    _build(vtok).save_pretrained(path)
    vtok.save_pretrained(path)
    return path


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """``grpokit vllm-serve`` in a subprocess; yields its port, and stops it (POST /close, then SIGTERM)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "grpokit", "vllm-serve", "--model", str(model_dir), "--host", "127.0.0.1",
             "--port", str(port), "--max-num-seqs", "64", "--weight-sync-timeout-s", "60"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        try:
            wait_for_server("127.0.0.1", port, 240)
        except VLLMServerError:
            process.kill()
            raise AssertionError(f"grpokit vllm-serve did not start; its log:\n{log.read_text()[-4000:]}") from None
        yield port
    finally:
        if process.poll() is None:
            try:
                VLLMServerSampler(build_char_tokenizer("0123456789+="), port=port, timeout_s=10).shutdown_server()
                process.wait(60)
            except (VLLMServerError, subprocess.TimeoutExpired):
                process.terminate()
                process.wait(30)
        print(f"--- grpokit vllm-serve log (tail) ---\n{log.read_text()[-3000:]}")


@pytest.fixture
def policy(vtok):
    return _build(vtok)


def _perturb(model, scale=0.3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * param.abs().mean() * torch.randn(param.shape, generator=generator))
    return model


def _trainer_logprobs(model, batch):
    with torch.no_grad():
        logprobs, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                          batch.completion_mask, temperature=batch.temperatures)  # fmt: skip
    return logprobs


def _max_gap(a, b, mask):
    return float(((a - b).abs() * mask).max())


def test_push_weights_then_generate_logprobs_match_the_trainer(server, vtok, policy):
    sampler = VLLMServerSampler(vtok, port=server, model=policy, max_new_tokens=MAX_NEW, timeout_s=120,
                                weight_sync_timeout_s=60)  # fmt: skip
    assert isinstance(sampler, Sampler) and sampler.engine_dtype == torch.float32
    batch = sampler.generate(PROMPTS, 8)
    assert batch.num_responses == 32 and batch.truncated.any() and (~batch.truncated).any()
    mask = batch.completion_mask
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), mask) < ATOL

    # A pushed update reaches the engine (tied embeddings included): the log-probs follow the new weights,
    # and differ from the old ones far beyond rounding.
    version = sampler.weight_version
    _perturb(policy)
    metrics = sampler.update_weights(policy)
    assert sampler.weight_version == version + 1 and metrics["weight_sync/megabytes"] > 0
    batch = sampler.generate(PROMPTS, 8)
    fresh = _trainer_logprobs(policy, batch)
    assert _max_gap(batch.sampler_logprobs, fresh, batch.completion_mask) < ATOL
    stale = _trainer_logprobs(_build(vtok), batch)
    assert _max_gap(batch.sampler_logprobs, stale, batch.completion_mask) > 1e-2

    # Greedy decoding after the push matches the transformers sampler's with the same weights.
    greedy = sampler.with_sampling(temperature=0).generate(PROMPTS, 2)
    reference = TransformersSampler(policy, vtok, max_new_tokens=MAX_NEW, temperature=0).generate(PROMPTS, 2)
    assert torch.equal(greedy.completion_ids, reference.completion_ids)
    assert torch.equal(greedy.completion_mask, reference.completion_mask)


def test_continue_from_ids_through_the_server_matches_the_trainer(server, vtok, policy):
    """Multi-turn over HTTP: token-id prefixes (the second holds the first turn's exact ids) come back as
    continuations whose log-probs are the pushed policy's, with per-row temperatures; greedy turns equal the
    transformers sampler's."""
    from grpokit.rollout import encode_prompts

    _perturb(policy, seed=5)
    sampler = VLLMServerSampler(vtok, port=server, model=policy, max_new_tokens=MAX_NEW, timeout_s=120,
                                weight_sync_timeout_s=60)  # fmt: skip
    prefixes = encode_prompts(vtok, PROMPTS)
    first = sampler.continue_from_ids(prefixes, [1.0] * 4, max_new_tokens=4)
    assert all(len(turn.token_ids) <= 4 for turn in first)
    prefixes = [ids + turn.token_ids + vtok("+1=")["input_ids"] for ids, turn in zip(prefixes, first)]
    temperatures = [0.5, 0.8, 1.2, 1.5]
    turns = sampler.continue_from_ids(prefixes, temperatures)
    n, P, T = len(prefixes), max(map(len, prefixes)), max(len(turn.token_ids) for turn in turns)
    prompt_ids, prompt_mask = torch.zeros(n, P, dtype=torch.long), torch.zeros(n, P, dtype=torch.long)
    completion_ids, mask, logprobs = torch.zeros(n, T, dtype=torch.long), torch.zeros(n, T), torch.zeros(n, T)
    for row, (ids, turn) in enumerate(zip(prefixes, turns)):
        prompt_ids[row, P - len(ids) :], prompt_mask[row, P - len(ids) :] = torch.tensor(ids), 1
        k = len(turn.token_ids)
        completion_ids[row, :k], mask[row, :k] = torch.tensor(turn.token_ids), 1
        logprobs[row, :k] = torch.tensor(turn.logprobs)
        assert turn.stopped == (turn.token_ids[-1] == vtok.eos_token_id) and (turn.stopped or k == MAX_NEW)
    with torch.no_grad():
        trainer, _ = completion_logprobs(policy, prompt_ids, prompt_mask, completion_ids, mask,
                                         temperature=torch.tensor(temperatures))  # fmt: skip
    assert _max_gap(logprobs, trainer, mask) < ATOL

    greedy = sampler.with_sampling(temperature=0).continue_from_ids(prefixes, temperatures)
    reference = TransformersSampler(policy, vtok, max_new_tokens=MAX_NEW, temperature=0).continue_from_ids(
        prefixes, temperatures
    )
    assert [turn.token_ids for turn in greedy] == [turn.token_ids for turn in reference]


def test_chunked_push_and_seeded_resume(server, vtok, policy):
    # 64 KiB chunks: the model's ~300 KB of tensors travel in several requests.
    sampler = VLLMServerSampler(vtok, port=server, model=policy, max_new_tokens=MAX_NEW, timeout_s=120,
                                weight_chunk_mb=1 / 16, seed=7)  # fmt: skip
    assert sampler.last_sync["weight_sync/chunks"] > 2
    state = sampler.state_dict()
    first = sampler.generate(PROMPTS, 4)
    sampler.load_state_dict(state)
    again = sampler.generate(PROMPTS, 4)
    assert torch.equal(first.completion_ids, again.completion_ids)
    assert torch.equal(first.sampler_logprobs, again.sampler_logprobs)


def test_grpo_trainer_with_the_vllm_server_backend(server, model_dir, tmp_path):
    """Two GRPO steps with ``generation.backend: vllm_server``: the trainer pushes its weights at start and after
    each step, and the server's rollout log-probs match the trainer's (importance weights 1)."""
    from grpokit.config import GRPOConfig, build_config
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer

    def ones(prompts, completions, **columns):
        return [text.count("1") / 8 for text in completions]

    config = build_config(GRPOConfig, {
        "max_steps": 2, "seed": 11,
        "model": {"name_or_path": str(model_dir), "device": "cpu"},
        "data": {"prompts_per_step": 4, "shuffle": False},
        "generation": {"max_new_tokens": 8, "backend": "vllm_server"},
        "vllm": {"server_port": server, "server_timeout_s": 120, "weight_sync_timeout_s": 60},
        "optim": {"learning_rate": 3e-3},
        "algorithm": {"num_generations": 8},
        "logging": {"output_dir": str(tmp_path), "run_name": "server", "quiet": True, "report_to": [],
                    "report": False},
    })  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[ones], dataset=[{"prompt": p} for p in ["1+1=", "2+2=", "12=", "3+4="]])
    sampler = trainer.sampler.sampler
    assert isinstance(sampler, VLLMServerSampler) and trainer.rollout_importance == "token"
    start_version = sampler.weight_version  # the push at start
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    rows = read_metrics(trainer.train().run_dir)

    assert [row["step"] for row in rows] == [1, 2]
    assert all(not torch.equal(before[name], p) for name, p in trainer.model.named_parameters())
    assert [row["weight_sync/version"] for row in rows] == [start_version + 1, start_version + 2]
    for row in rows:
        assert row["weight_sync/megabytes"] > 0 and row["weight_sync/chunks"] >= 1
        # Step 2's rollouts come from the weights pushed after step 1: a stale server would be > 1e-2 off.
        assert row["rollout_is/logprob_abs_diff"] < ATOL and row["rollout_is/capped_fraction"] == 0.0
    with pytest.raises(RuntimeError, match="closed"):  # train() closed the client; the server keeps running
        sampler.generate(PROMPTS, 1)
    wait_for_server("127.0.0.1", server, 10)


def test_async_grpo_rollouts_on_the_vllm_server(server, model_dir, tmp_path):
    """Three GRPO steps with ``async_rollouts`` on the server (k = 1): step 1's batch comes from the pushed
    start weights (log-probs equal to the trainer's), steps 2 and 3 lag one version, and the server receives
    only the pushes a later batch needs (the start's, then step 1's: v(3) = 1)."""
    from grpokit.config import GRPOConfig, build_config
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer

    def ones(prompts, completions, **columns):
        return [text.count("1") / 8 for text in completions]

    config = build_config(GRPOConfig, {
        "max_steps": 3, "seed": 11,
        "model": {"name_or_path": str(model_dir), "device": "cpu"},
        "data": {"prompts_per_step": 4, "shuffle": False},
        "generation": {"max_new_tokens": 8, "backend": "vllm_server", "async_rollouts": True,
                       "async_timeout_s": 120},
        "vllm": {"server_port": server, "server_timeout_s": 120, "weight_sync_timeout_s": 60},
        "optim": {"learning_rate": 3e-2},
        "algorithm": {"num_generations": 8},
        "logging": {"output_dir": str(tmp_path), "run_name": "async-server", "quiet": True, "report_to": [],
                    "report": False},
    })  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[ones], dataset=[{"prompt": p} for p in ["1+1=", "2+2=", "12=", "3+4="]])
    sampler = trainer.sampler.sampler
    start_version = sampler.weight_version  # the push at start
    rows = read_metrics(trainer.train().run_dir)

    assert [row["step"] for row in rows] == [1, 2, 3]
    assert [row["async/staleness_max"] for row in rows] == [0, 1, 1]
    assert sampler.weight_version == start_version + 1
    assert rows[0]["rollout_is/logprob_abs_diff"] < ATOL  # sampled with the trainer's own weights
    assert rows[1]["rollout_is/logprob_abs_diff"] > 10 * ATOL  # one version behind the policy it trains
    wait_for_server("127.0.0.1", server, 10)
