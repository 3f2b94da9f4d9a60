"""VLLMSampler on a real vLLM engine (vLLM's CPU build here; run with scripts/test-vllm.sh).

One engine serves the whole module (starting one takes 20+ s). Every test first pushes the weights it
needs, so the tests do not depend on their order. The references are the transformers model and
:class:`TransformersSampler` with the same weights, in float32.
"""

import time
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm")

from grpokit.algorithms import group_advantages, policy_loss, truncated_importance_weights  # noqa: E402
from grpokit.models import build_char_tokenizer, build_tiny_model, completion_logprobs  # noqa: E402
from grpokit.rollout import RolloutBatch, Sampler, TransformersSampler, encode_prompts  # noqa: E402
from grpokit.rollout.vllm_sampler import VLLMSampler, WeightSyncTimeout  # noqa: E402

PROMPTS = ["12+34=", "1+2=", "123+456=", "9="]
MAX_NEW = 12
# float32 on both sides, but other kernels and summation orders: with this model's large logits (init range
# 0.3) the sampled-token log-probs agree to ~1e-5. A real mismatch (weights one update behind) is > 1e-2.
ATOL = 5e-5


def _build(tok, seed=0):
    # head_dim 64 / 2 = 32: vLLM's CPU attention supports head sizes 32, 64, 80, ... only. A large init
    # range makes next-token distributions peaked and varied (greedy outputs differ between prompts,
    # EOS is sampled now and then).
    return build_tiny_model(tok, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                            max_position_embeddings=128, tie_word_embeddings=True, seed=seed,
                            initializer_range=0.3).eval()


@pytest.fixture(scope="module")
def vtok():
    return build_char_tokenizer("0123456789+=")


@pytest.fixture(scope="module")
def model_dir(vtok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen2")
    _build(vtok).save_pretrained(path)
    vtok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def engine(model_dir, vtok):
    sampler = VLLMSampler(model_dir, vtok, max_new_tokens=MAX_NEW, seed=0, kv_cache_gib=0.125, max_num_seqs=64,
                          weight_sync_timeout_s=60)
    yield sampler
    sampler.close()


@pytest.fixture
def policy(vtok):
    """The engine's starting weights as a transformers model (float32); tests may perturb it."""
    return _build(vtok)


def _perturb(model, names=None, scale=0.3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if names is None or name in names:
                param.add_(scale * param.abs().mean() * torch.randn(param.shape, generator=generator))
    return model


def _trainer_logprobs(model, batch):
    with torch.no_grad():
        logprobs, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                          batch.completion_mask, temperature=batch.temperatures)
    return logprobs  # (N, T)


def _max_gap(a, b, mask):
    return float(((a - b).abs() * mask).max())


def test_generate_shapes_grouping_eos_and_masks(engine, policy, vtok):
    engine.update_weights(policy)
    assert isinstance(engine, Sampler)
    batch = engine.generate(PROMPTS[:3], 8, columns={"answer": ["46", "3", "579"]})
    assert isinstance(batch, RolloutBatch) and batch.num_responses == 24
    N, T = batch.completion_ids.shape
    assert T <= MAX_NEW and batch.prompt_ids.shape == batch.prompt_mask.shape == (24, 8)
    assert batch.group_ids.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert batch.prompts == [p for p in PROMPTS[:3] for _ in range(8)]
    assert batch.columns["answer"] == ["46"] * 8 + ["3"] * 8 + ["579"] * 8
    # Prompts are encoded by grpokit and left-padded, exactly as the transformers sampler does.
    assert batch.prompt_mask[8].tolist() == [0] * 4 + [1] * 4
    assert batch.prompt_ids[8, 4:].tolist() == encode_prompts(vtok, ["1+2="])[0]
    assert batch.temperatures.tolist() == [1.0] * 24 and batch.sampler_logprobs.shape == (N, T)

    eos, pad = vtok.eos_token_id, vtok.pad_token_id
    lengths = batch.completion_mask.sum(1).long()
    for row in range(N):
        n = int(lengths[row])
        ids = batch.completion_ids[row].tolist()
        assert batch.completion_mask[row].tolist() == [1.0] * n + [0.0] * (T - n)  # a prefix of ones
        assert ids[n:] == [pad] * (T - n) and batch.sampler_logprobs[row, n:].eq(0).all()
        assert eos not in ids[: n - 1]  # nothing after a stop token
        if batch.truncated[row]:
            assert n == MAX_NEW and ids[n - 1] != eos
        else:
            assert ids[n - 1] == eos  # the EOS is part of the completion
        assert batch.completions[row] == vtok.decode(ids[:n], skip_special_tokens=True)
        assert (batch.sampler_logprobs[row, :n] < 0).all()
    # Both endings occur with this seed, so both branches above were exercised.
    assert batch.truncated.any() and (~batch.truncated).any()
    # G samples of a group are different samples, not copies.
    assert len({tuple(r) for r in batch.completion_ids[:8].tolist()}) > 1


def test_call_larger_than_one_engine_step(engine, policy):
    # The first step schedules max_num_seqs=64 requests x 70 prompt tokens = 4480 > the 4096-token step
    # budget: with chunked prefill on, vLLM 0.32's CPU worker died here on its seeded requests ("CPU
    # Generator does not use offset").
    engine.update_weights(policy)
    prompts = [("1+2=" * 18)[: 70 - i] + "9" * i for i in range(17)]
    batch = engine.generate(prompts, 4)
    assert batch.num_responses == 68 and batch.prompt_ids.shape[1] == 70
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), batch.completion_mask) < ATOL


def test_seeded_and_resumable(engine, policy):
    engine.update_weights(policy)
    engine.set_seed(7)
    first = engine.generate(PROMPTS, 4)
    state = engine.state_dict()
    second = engine.generate(PROMPTS, 4)
    assert not torch.equal(first.completion_ids, second.completion_ids)
    engine.set_seed(7)
    assert torch.equal(engine.generate(PROMPTS, 4).completion_ids, first.completion_ids)
    engine.load_state_dict(state)
    assert torch.equal(engine.generate(PROMPTS, 4).completion_ids, second.completion_ids)


def test_rollout_logprobs_match_transformers_forward(engine, policy):
    engine.update_weights(policy)
    batch = engine.generate(PROMPTS, 8)
    mask = batch.completion_mask
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), mask) < ATOL


def test_temperature_schedule_logprobs_are_temperature_scaled(engine, policy):
    engine.update_weights(policy)
    scheduled = engine.with_sampling(temperature_schedule=(0.5, 1.5), seed=3)
    batch = scheduled.generate(PROMPTS[:2], 5)
    assert batch.temperatures.tolist() == [0.5, 0.75, 1.0, 1.25, 1.5] * 2
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), batch.completion_mask) < ATOL
    # The same tokens at temperature 1 have other log-probs: the check above could fail.
    unscaled = _trainer_logprobs(policy, RolloutBatch(**{**batch.__dict__, "temperatures": torch.ones(10)}))
    assert _max_gap(batch.sampler_logprobs, unscaled, batch.completion_mask) > 1e-2


def test_top_k_and_min_tokens_logprobs_are_the_sampling_distribution(engine, policy):
    engine.update_weights(policy)
    k, min_new = 3, 4
    filtered = engine.with_sampling(top_k=k, min_new_tokens=min_new, seed=5)
    batch = filtered.generate(PROMPTS, 6)
    assert (batch.completion_mask.sum(1) >= min_new).all()
    from grpokit.models import compute_logits_for_completion

    with torch.no_grad():
        logits = compute_logits_for_completion(policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                               batch.completion_mask).float()  # (N, T, V)
    T = logits.shape[1]
    # The distribution vLLM sampled from: EOS masked for the first min_new tokens, then top-k, renormalised.
    logits[:, : min(min_new, T), policy.config.eos_token_id] = float("-inf")
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (N, T, 1)
    logits = logits.masked_fill(logits < kth, float("-inf"))
    expected = logits.log_softmax(-1).gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)  # (N, T)
    assert torch.isfinite(expected[batch.completion_mask.bool()]).all()  # every sampled token was in the top k
    assert _max_gap(batch.sampler_logprobs, expected.masked_fill(batch.completion_mask == 0, 0), batch.completion_mask) < ATOL


def test_weight_update_makes_greedy_match_the_trainer(engine, policy, vtok):
    engine.update_weights(policy)
    greedy = engine.with_sampling(temperature=0)
    before = greedy.generate(PROMPTS, 2)
    assert before.temperatures.eq(0).all() and torch.equal(before.completion_ids[0], before.completion_ids[1])

    _perturb(policy)
    metrics = engine.update_weights(policy)
    assert metrics["weight_sync/total_s"] > 0 and metrics["weight_sync/megabytes"] > 0
    after = greedy.generate(PROMPTS, 2)
    reference = TransformersSampler(policy, vtok, max_new_tokens=MAX_NEW, temperature=0).generate(PROMPTS, 2)
    assert torch.equal(after.completion_ids, reference.completion_ids)
    assert torch.equal(after.completion_mask, reference.completion_mask)
    assert not torch.equal(after.completion_ids, before.completion_ids)  # the update changed the outputs
    sampled = engine.generate(PROMPTS, 4)
    assert _max_gap(sampled.sampler_logprobs, _trainer_logprobs(policy, sampled), sampled.completion_mask) < ATOL


def test_tied_embedding_update_reaches_the_lm_head(engine, policy, vtok):
    # Only the embedding changes; with tied weights it is also the output projection, which vLLM's CPU
    # backend keeps as a separately packed GEMM (refreshed by the worker extension after each reload).
    engine.update_weights(policy)
    assert policy.config.tie_word_embeddings and policy.lm_head.weight is policy.model.embed_tokens.weight
    _perturb(policy, names={"model.embed_tokens.weight"}, scale=1.0, seed=2)
    engine.update_weights(policy)
    batch = engine.generate(PROMPTS, 4)
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), batch.completion_mask) < ATOL
    greedy = engine.with_sampling(temperature=0).generate(PROMPTS, 1)
    reference = TransformersSampler(policy, vtok, max_new_tokens=MAX_NEW, temperature=0).generate(PROMPTS, 1)
    assert torch.equal(greedy.completion_ids, reference.completion_ids)


def test_update_weights_rejects_mismatches_and_leaves_the_engine_alive(engine, policy):
    engine.update_weights(policy)
    state = {k: v.clone() for k, v in policy.state_dict().items() if k != "lm_head.weight"}
    missing = {k: v for k, v in state.items() if k != "model.norm.weight"}
    with pytest.raises(ValueError, match=r"missing: model\.norm\.weight"):
        engine.update_weights(missing)
    with pytest.raises(ValueError, match=r"unexpected: extra\.weight"):
        engine.update_weights({**state, "extra.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"wrong shape: model\.norm\.weight: \(3,\) != \(64,\)"):
        engine.update_weights({**state, "model.norm.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="PEFT"):
        engine.update_weights({f"base_model.model.{k}": v for k, v in state.items()})
    with pytest.raises(ValueError, match="not a tensor"):
        engine.update_weights({**state, "model.norm.weight": [1.0]})
    # A lm_head that is *not* the embedding cannot be pushed into a tied checkpoint.
    with pytest.raises(ValueError, match=r"unexpected: lm_head\.weight"):
        engine.update_weights({**state, "lm_head.weight": state["model.embed_tokens.weight"].clone()})
    batch = engine.generate(PROMPTS, 2)  # nothing was pushed: still the policy's weights
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), batch.completion_mask) < ATOL


def test_truncated_importance_weights_on_engine_logprobs(engine, policy):
    engine.update_weights(policy)
    batch = engine.generate(PROMPTS, 8)
    mask = batch.completion_mask
    # Same weights in engine and trainer: the correction is the identity (to rounding).
    weights, metrics = truncated_importance_weights(_trainer_logprobs(policy, batch), batch.sampler_logprobs, mask)
    assert torch.allclose(weights[mask.bool()], torch.ones(()), rtol=0, atol=ATOL)
    assert metrics["is_capped_fraction"] == 0.0 and metrics["rollout_logprob_abs_diff"] < ATOL

    # The engine lags the trainer (weights not pushed): tokens the trainer now prefers get w > 1, capped at C.
    _perturb(policy, scale=0.5, seed=3)
    trainer = _trainer_logprobs(policy, batch)
    weights, metrics = truncated_importance_weights(trainer, batch.sampler_logprobs, mask, cap=2.0)
    real = weights[mask.bool()]
    assert metrics["is_capped_fraction"] > 0 and real.max() == 2.0 and real.min() < 1.0
    ratio = (trainer - batch.sampler_logprobs).exp()[mask.bool()]
    assert torch.allclose(real, ratio.clamp(max=2.0), rtol=1e-6, atol=0)
    assert metrics["rollout_logprob_abs_diff"] > 1e-2
    seq_weights, seq_metrics = truncated_importance_weights(trainer, batch.sampler_logprobs, mask, level="sequence")
    assert seq_weights.max() == 2.0 and 0 < seq_metrics["is_capped_fraction"] <= 1


def test_weight_sync_timeout_raises_and_recovers(engine, policy, monkeypatch):
    engine.update_weights(policy)
    slow_rpc_s = 2.0
    real_rpc = engine.llm.collective_rpc

    def stuck_rpc(*args, **kwargs):
        time.sleep(slow_rpc_s)  # an engine that does not answer in time
        return real_rpc(*args, **kwargs)

    monkeypatch.setattr(engine.llm, "collective_rpc", stuck_rpc)
    monkeypatch.setattr(engine, "weight_sync_timeout_s", 0.3)
    start = time.perf_counter()
    with pytest.raises(WeightSyncTimeout, match=r"weight_sync_timeout_s=0\.3 s"):
        engine.update_weights(policy)
    assert time.perf_counter() - start < 1.5  # the caller got control back at the deadline, not at the end
    with pytest.raises(RuntimeError, match="timed out"):
        engine.generate(PROMPTS, 1)

    monkeypatch.undo()
    _perturb(policy, seed=4)
    engine.update_weights(policy)  # waits for the stuck sync, then pushes again; generation is allowed again
    batch = engine.generate(PROMPTS, 2)
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), batch.completion_mask) < ATOL


def test_grpo_steps_with_weight_sync_and_truncated_importance_sampling(engine, policy):
    """A few GRPO steps on rollouts from vLLM: reward = fraction of '1' characters in the completion."""
    engine.update_weights(policy)
    sampler = engine.with_sampling(max_new_tokens=8, seed=11)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    prompts = ["1+1=", "2+2=", "12=", "3+4="]

    rewards_per_step, gaps, drifts = [], [], []
    for _ in range(4):
        batch = sampler.generate(prompts, 8)
        rewards = torch.tensor([text.count("1") / 8 for text in batch.completions])  # (N,)
        rewards_per_step.append(rewards.mean().item())
        advantages = group_advantages(rewards, batch.group_ids)  # (N,)
        mask = batch.completion_mask  # (N, T)
        policy.train()
        logprobs, _ = completion_logprobs(policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, mask,
                                          temperature=batch.temperatures)
        old = logprobs.detach()  # pi_old is the trainer's own forward, not the engine's numbers
        weights, is_metrics = truncated_importance_weights(old, batch.sampler_logprobs, mask, level="token", cap=2.0)
        gaps.append(is_metrics["rollout_logprob_abs_diff"])
        loss, _ = policy_loss(logprobs, old, advantages, mask, importance_weights=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        policy.eval()
        drifts.append(_max_gap(_trainer_logprobs(policy, batch), batch.sampler_logprobs, mask))  # what a stale engine costs
        engine.update_weights(policy)
    # Each step moves the policy well past rounding, yet each step's rollouts match the trainer's weights:
    # the engine was synced after every step.
    assert min(drifts) > 10 * ATOL and max(gaps) < ATOL
    assert rewards_per_step[-1] > rewards_per_step[0]


def test_grpo_trainer_with_the_vllm_backend(model_dir, tmp_path):
    """GRPOTrainer with ``generation.backend: vllm``: the engine is built from the config, gets the weights
    after every step, and its rollout log-probs feed the importance weights (equal to 1 while in sync)."""
    from grpokit.config import GRPOConfig, build_config
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer

    def ones(prompts, completions, **columns):
        return [text.count("1") / 8 for text in completions]

    config = build_config(GRPOConfig, {
        "max_steps": 4, "seed": 11,
        "model": {"name_or_path": str(model_dir), "device": "cpu"},
        "data": {"prompts_per_step": 4, "shuffle": False},
        "generation": {"max_new_tokens": 8, "backend": "vllm"},
        "vllm": {"kv_cache_gib": 0.125, "weight_sync_timeout_s": 60},
        "optim": {"learning_rate": 3e-3},
        "algorithm": {"num_generations": 8},
        "logging": {"output_dir": str(tmp_path), "run_name": "vllm", "quiet": True, "report_to": [], "report": False},
    })  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[ones], dataset=[{"prompt": p} for p in ["1+1=", "2+2=", "12=", "3+4="]])
    engine = trainer.sampler.sampler
    assert isinstance(engine, VLLMSampler) and trainer.rollout_importance == "token"  # auto -> token with vLLM
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    rows = read_metrics(trainer.train().run_dir)

    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert rows[-1]["reward/mean"] > rows[0]["reward/mean"] + 0.1  # seeded: 0.03 -> 0.18 here
    assert all(not torch.equal(before[name], p) for name, p in trainer.model.named_parameters())
    for row in rows:
        assert row["weight_sync/megabytes"] > 0 and row["weight_sync/total_s"] > 0
        # Each step's rollouts come from the weights the trainer had: without the push after the previous
        # step the gap would be that step's update (> 1e-2, test_grpo_steps_with_weight_sync_...).
        assert row["rollout_is/logprob_abs_diff"] < ATOL and row["rollout_is/capped_fraction"] == 0.0
        assert row["rollout_is/weight_mean"] == pytest.approx(1.0, abs=ATOL)
    with pytest.raises(RuntimeError, match="closed"):  # train() shut the engine down
        engine.generate(PROMPTS, 1)


# Multi-turn: prompts of about 40 tokens, so a conversation spans several 32-token KV blocks.
LONG_PROMPTS = ["12+34=" * 7, "1+2=" * 10, "123+456=" * 5, "9=" * 20]


@pytest.fixture(scope="module")
def turn_engine(model_dir, vtok):
    """An engine with 32-token KV blocks: the CPU default (128) is this model's whole context, where the prefix
    cache could never hold a full block of an earlier turn."""
    sampler = VLLMSampler(model_dir, vtok, max_new_tokens=MAX_NEW, seed=0, kv_cache_gib=0.125, max_num_seqs=64,
                          weight_sync_timeout_s=60, engine_kwargs={"block_size": 32})  # fmt: skip
    yield sampler
    sampler.close()


def _turn_batch(prefixes, turns, temperatures):
    """Prefixes left-padded and turns right-padded, as completion_logprobs takes them."""
    n, P, T = len(prefixes), max(map(len, prefixes)), max(len(turn.token_ids) for turn in turns)
    batch = SimpleNamespace(prompt_ids=torch.zeros(n, P, dtype=torch.long), prompt_mask=torch.zeros(n, P, dtype=torch.long),
                            completion_ids=torch.zeros(n, T, dtype=torch.long), completion_mask=torch.zeros(n, T),
                            sampler_logprobs=torch.zeros(n, T), temperatures=torch.tensor(temperatures))  # fmt: skip
    for row, (ids, turn) in enumerate(zip(prefixes, turns)):
        batch.prompt_ids[row, P - len(ids) :] = torch.tensor(ids)
        batch.prompt_mask[row, P - len(ids) :] = 1
        k = len(turn.token_ids)
        batch.completion_ids[row, :k] = torch.tensor(turn.token_ids)
        batch.completion_mask[row, :k] = 1
        batch.sampler_logprobs[row, :k] = torch.tensor(turn.logprobs)
    return batch


def _cached_tokens(engine, prefix):
    """How many of ``prefix``'s tokens vLLM's prefix cache already holds (a one-token greedy probe)."""
    from vllm import SamplingParams

    (output,) = engine.llm.generate([{"prompt_token_ids": prefix}], SamplingParams(max_tokens=1, temperature=0),
                                    use_tqdm=False)  # fmt: skip
    return output.num_cached_tokens


def test_continue_from_ids_two_turns_with_a_push_match_the_trainer_and_the_transformers_sampler(
    turn_engine, policy, vtok
):
    """Turn 1 at the starting weights, turn 2 (turn 1's exact ids plus a user reply) after a push: the prefix
    cache, which held turn 2's prefix under the old weights, was emptied by the push, so turn 2's log-probs are
    the new policy's; greedy turns equal the transformers sampler's continue_from_ids."""
    engine, eos = turn_engine, vtok.eos_token_id
    assert engine.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching  # vLLM's default, left on
    engine.update_weights(policy)
    prefixes = encode_prompts(vtok, LONG_PROMPTS)
    temperatures = [0.5, 0.8, 1.0, 1.5]
    first = engine.continue_from_ids(prefixes, temperatures, max_new_tokens=8)
    batch = _turn_batch(prefixes, first, temperatures)
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), batch.completion_mask) < ATOL
    for turn in first:
        assert turn.stopped == (turn.token_ids[-1] == eos) and eos not in turn.token_ids[:-1]
        assert turn.stopped or len(turn.token_ids) == 8

    reply = vtok("+1=")["input_ids"]
    second = [ids + turn.token_ids + reply for ids, turn in zip(prefixes, first)]
    engine.continue_from_ids(second, temperatures)  # under the old weights: their KV blocks are now cached
    assert _cached_tokens(engine, second[0]) >= 32
    _perturb(policy)
    engine.update_weights(policy)
    assert _cached_tokens(engine, second[1]) == 0  # the push emptied the cache

    turns = engine.continue_from_ids(second, temperatures)
    batch = _turn_batch(second, turns, temperatures)
    assert (batch.completion_mask.sum(1) <= MAX_NEW).all()
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), batch.completion_mask) < ATOL
    # The weights before the push are far off, so the check above can fail.
    stale = _trainer_logprobs(_build(vtok), batch)
    assert _max_gap(batch.sampler_logprobs, stale, batch.completion_mask) > 1e-2

    greedy = engine.with_sampling(temperature=0).continue_from_ids(second, temperatures)
    reference = TransformersSampler(policy, vtok, max_new_tokens=MAX_NEW, temperature=0).continue_from_ids(
        second, temperatures
    )
    assert [turn.token_ids for turn in greedy] == [turn.token_ids for turn in reference]
    assert [turn.stopped for turn in greedy] == [turn.stopped for turn in reference]
    assert len({tuple(turn.token_ids) for turn in greedy}) > 1  # the rows are not all alike
    batch = _turn_batch(second, greedy, [1.0] * 4)  # greedy log-probs are under tau = 1
    assert _max_gap(batch.sampler_logprobs, _trainer_logprobs(policy, batch), batch.completion_mask) < ATOL


class _Sum:
    """A two-turn environment: the model answers, hears "=" and answers again; reward = share of '1's."""

    def reset(self, row, seed):
        self.turns = 0
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, message):
        from grpokit.agents import EnvStep

        self.turns += 1
        reward = message["content"].count("1") / 8
        if self.turns >= 2:
            return EnvStep(reward=reward, terminated=True)
        return EnvStep(messages=[{"role": "user", "content": "="}], reward=reward)


def test_multi_turn_grpo_trainer_with_the_vllm_backend(tmp_path):
    """Multi-turn episodes (env.name) generated through the colocated engine: token prefixes in, each turn's
    ids out, the weights pushed after every step, and the engine's log-probs match the trainer's on the
    sampled tokens only (the environment's tokens are masked out)."""
    from grpokit.agents.registry import register_environment
    from grpokit.config import GRPOConfig, build_config
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer

    tok = build_char_tokenizer("0123456789+=\n")
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
        "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
    )
    _build(tok).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    register_environment("vllm_test_sum")(_Sum)
    config = build_config(GRPOConfig, {
        "max_steps": 3, "seed": 5,
        "model": {"name_or_path": str(tmp_path / "model"), "device": "cpu"},
        "data": {"prompts_per_step": 2, "shuffle": False},
        "env": {"name": "vllm_test_sum", "max_turns": 3},
        "generation": {"max_new_tokens": MAX_NEW, "backend": "vllm", "temperature": 2.0},
        "vllm": {"kv_cache_gib": 0.125, "weight_sync_timeout_s": 60},
        "optim": {"learning_rate": 3e-3},
        "algorithm": {"num_generations": 4},
        "logging": {"output_dir": str(tmp_path), "run_name": "vllm-turns", "quiet": True, "report_to": [], "report": False},
    })  # fmt: skip
    trainer = GRPOTrainer(config, dataset=[{"prompt": p} for p in PROMPTS])
    assert isinstance(trainer.sampler.sampler, VLLMSampler)
    rows = read_metrics(trainer.train().run_dir)
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        # A hot temperature makes the random model stop within MAX_NEW tokens often: episodes go on after a turn
        assert row["env/turns_mean"] > 1
        assert row["weight_sync/megabytes"] > 0
        assert row["rollout_is/logprob_abs_diff"] < ATOL  # engine and trainer agree on every sampled token
