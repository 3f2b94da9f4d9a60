"""VLLMServerSampler against the real HTTP server of grpokit.rollout.vllm_server with a stub engine (no vLLM).

The stub answers each request spec with deterministic tokens and log-probs computed from the spec (prompt,
seed, sample index), so the tests can recompute what every row of a batch must hold. A silent socket (accepts
and never answers) and a closed port stand in for a stuck and a missing server. The same client against a real
vLLM engine is tests/rollout/test_vllm_server.py (scripts/test-vllm.sh).
"""

import contextlib
import socket
import threading

import pytest
import torch

from grpokit.rollout import Sampler
from grpokit.rollout.base import Continuation, TurnSampler
from grpokit.rollout.vllm_client import VLLMServerError, VLLMServerSampler, VLLMServerTimeout, wait_for_server
from grpokit.rollout.vllm_server import VLLMServer

PROMPTS = ["12+34=", "1+2=", "9="]


class StubEngine:
    """An EngineHost without vLLM: tensors of a tiny fake checkpoint, deterministic samples."""

    def __init__(self, tok, dtype="float32"):
        self.vocab = len(tok)
        self.eos = tok.eos_token_id
        self.dtype = dtype
        self.tensors = {"embed.weight": [[self.vocab, 8], "F32"], "layer.weight": [[8, 8], "F32"],
                        "layer.bias": [[8], "F32"], "steps": [[1], "I64"]}  # fmt: skip
        self.specs, self.loaded, self.block = [], [], None
        self.failure = None  # an exception update_weights raises once

    def info(self):
        return {"model": "stub", "dtype": self.dtype, "max_model_len": 64, "tensors": self.tensors}

    def unusable(self):
        return None

    @staticmethod
    def sample(spec, i, vocab, eos):
        """Sample i of a spec: tokens drawn from (prompt, seed, i); EOS after len(prompt) tokens when seeded."""
        base = sum(spec["prompt_token_ids"]) + (spec["seed"] or 0) + 7 * i
        ids = [3 + (base + k) % (vocab - 3) for k in range(spec["max_tokens"])]
        if spec["seed"] is not None and len(spec["prompt_token_ids"]) + i < spec["max_tokens"]:
            ids = ids[: len(spec["prompt_token_ids"]) + i] + [eos]
        return ids, [-0.01 * (k + 1) - 0.1 * i for k in range(len(ids))]

    def run_requests(self, specs):
        if self.block is not None:
            self.block.wait(30)  # a stuck engine (released at teardown)
        self.specs.append(specs)
        return [[self.sample(spec, i, self.vocab, self.eos) for i in range(spec["n"])] for spec in specs]

    def update_weights(self, tensors):
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        self.loaded.append(tensors)
        return {"weight_sync/load_s": 0.0}

    def reset_prefix_cache(self):
        pass

    def close(self):
        pass


def stub_weights(vocab, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(vocab, 8, generator=generator).to(dtype),
        "layer.weight": torch.randn(8, 8, generator=generator).to(dtype),
        "layer.bias": torch.randn(8, generator=generator).to(dtype),
        "steps": torch.tensor([seed]),
    }


@pytest.fixture
def stub(tok):
    engine = StubEngine(tok)
    server = VLLMServer(engine, "127.0.0.1", 0, request_timeout_s=5).start()
    yield engine, server
    if engine.block is not None:
        engine.block.set()
    server.shutdown()


def client(tok, server, **kwargs):
    kwargs.setdefault("max_new_tokens", 8)
    return VLLMServerSampler(tok, host="127.0.0.1", port=server.port, timeout_s=5, **kwargs)


def test_generate_round_trip_builds_the_batch_from_the_servers_samples(tok, stub):
    engine, server = stub
    sampler = client(tok, server, seed=3)
    assert isinstance(sampler, Sampler)
    batch = sampler.generate(PROMPTS, 4, {"answer": ["46", "3", "9"]})

    assert batch.num_responses == 12 and batch.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert batch.columns["answer"] == ["46"] * 4 + ["3"] * 4 + ["9"] * 4
    (specs,) = engine.specs
    assert [spec["n"] for spec in specs] == [4, 4, 4]
    for b, spec in enumerate(specs):
        assert spec["prompt_token_ids"] == tok(PROMPTS[b])["input_ids"]
        assert spec["max_tokens"] == 8 and spec["stop_token_ids"] == [tok.eos_token_id]
        for i in range(4):
            ids, logprobs = StubEngine.sample(spec, i, engine.vocab, engine.eos)
            row = 4 * b + i
            n = len(ids)
            assert batch.completion_ids[row, :n].tolist() == ids
            assert batch.completion_mask[row].sum() == n
            assert torch.allclose(batch.sampler_logprobs[row, :n], torch.tensor(logprobs))
            assert bool(batch.truncated[row]) == (ids[-1] != tok.eos_token_id)
    assert batch.truncated.any() and not batch.truncated.all()

    # The seeds come from the sampler's generator: same seed, same requests; state_dict resumes them.
    again = client(tok, server, seed=3)
    state = again.state_dict()
    again.generate(PROMPTS, 4)
    assert [s["seed"] for s in engine.specs[1]] == [s["seed"] for s in specs]
    again.generate(PROMPTS, 4)
    again.load_state_dict(state)
    again.generate(PROMPTS, 4)
    assert engine.specs[3] == engine.specs[1] and engine.specs[2] != engine.specs[1]


def test_greedy_and_temperature_schedule_requests(tok, stub):
    engine, server = stub
    greedy = client(tok, server).with_sampling(temperature=0)
    batch = greedy.generate(PROMPTS[:2], 3)
    assert [(s["n"], s["temperature"], s["seed"]) for s in engine.specs[-1]] == [(1, 0.0, None)] * 2
    assert torch.equal(batch.completion_ids[0], batch.completion_ids[2]) and batch.temperatures.eq(0).all()

    scheduled = client(tok, server, temperature_schedule=(0.5, 1.5))
    batch = scheduled.generate(PROMPTS[:1], 3)
    specs = engine.specs[-1]
    assert [s["temperature"] for s in specs] == [0.5, 1.0, 1.5] and [s["n"] for s in specs] == [1, 1, 1]
    assert [s["seed"] - specs[0]["seed"] for s in specs] == [0, 1, 2]
    assert batch.temperatures.tolist() == [0.5, 1.0, 1.5]


def test_continue_from_ids_round_trips_each_row_in_order(tok, stub):
    """Multi-turn: token-id prefixes go to the server as they are, one n=1 request each, with their own
    temperature and seed; each row's ids, log-probs and stop flag come back in the order of the prefixes."""
    engine, server = stub
    sampler = client(tok, server, seed=5, top_k=3)
    assert isinstance(sampler, TurnSampler)
    # Row 0 is seeded and shorter than max_tokens: the stub ends it with EOS. Row 1 is longer: cut at max_tokens.
    # Row 2 is at temperature 0: greedy (no seed), cut. Ids a tokenizer would never produce pass unchanged.
    prefixes = [[5, 6, 14], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4], [1, 15, 2, 13]]
    turns = sampler.continue_from_ids(prefixes, [0.7, 1.3, 0.0], max_new_tokens=6)

    (specs,) = engine.specs
    assert [spec["prompt_token_ids"] for spec in specs] == prefixes
    assert [spec["temperature"] for spec in specs] == [0.7, 1.3, 0.0]
    knobs = [(spec["n"], spec["max_tokens"], spec["min_tokens"], spec["top_k"]) for spec in specs]
    assert knobs == [(1, 6, 0, 3)] * 3
    assert all(spec["stop_token_ids"] == [tok.eos_token_id] for spec in specs)
    assert specs[0]["seed"] != specs[1]["seed"] and specs[2]["seed"] is None
    assert len(turns) == 3 and all(isinstance(turn, Continuation) for turn in turns)
    for spec, turn in zip(specs, turns):
        ids, logprobs = StubEngine.sample(spec, 0, engine.vocab, engine.eos)
        assert turn.token_ids == ids and turn.logprobs == pytest.approx(logprobs)
    assert turns[0].stopped and len(turns[0].token_ids) == 4 and turns[0].token_ids[-1] == tok.eos_token_id
    assert [turn.stopped for turn in turns[1:]] == [False, False]
    assert [len(turn.token_ids) for turn in turns[1:]] == [6, 6]

    # max_new_tokens defaults to the sampler's; the seeds come from its generator (state_dict resumes them).
    state = sampler.state_dict()
    again = sampler.continue_from_ids(prefixes[1:], [1.0, 1.0])
    assert [spec["max_tokens"] for spec in engine.specs[-1]] == [8, 8] and len(again[0].token_ids) == 8
    sampler.load_state_dict(state)
    sampler.continue_from_ids(prefixes[1:], [1.0, 1.0])
    assert engine.specs[-1] == engine.specs[-2]

    # A greedy sampler ignores the temperatures.
    sampler.with_sampling(temperature=0).continue_from_ids(prefixes[:2], [0.7, 1.3])
    assert [(spec["temperature"], spec["seed"]) for spec in engine.specs[-1]] == [(0.0, None)] * 2
    assert sampler.continue_from_ids([], []) == [] and len(engine.specs) == 4


def test_continue_from_ids_rejects_bad_rows_before_sending_anything(tok, stub):
    engine, server = stub
    sampler = client(tok, server)
    with pytest.raises(ValueError, match="2 prefixes but 1 temperatures"):
        sampler.continue_from_ids([[5], [6]], [1.0])
    with pytest.raises(ValueError, match="prefix 1 is empty"):
        sampler.continue_from_ids([[5], []], [1.0, 1.0])
    with pytest.raises(ValueError, match="prefix 0 holds a non-integer token"):
        sampler.continue_from_ids([[5, 1.5]], [1.0])
    with pytest.raises(ValueError, match="prefix 0 holds a negative token id -1"):
        sampler.continue_from_ids([[5, -1]], [1.0])
    with pytest.raises(ValueError, match=r"temperature 1 is -0\.5"):
        sampler.continue_from_ids([[5], [6]], [1.0, -0.5])
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        sampler.continue_from_ids([[5]], [1.0], max_new_tokens=0)
    # The stub engine's max_model_len is 64: 60 tokens leave room for 4 new ones, not 5.
    sampler.continue_from_ids([[5] * 60], [1.0], max_new_tokens=4)
    with pytest.raises(ValueError, match=r"prefix 1 has 60 tokens; with max_new_tokens=5 .*max_model_len=64"):
        sampler.continue_from_ids([[5], [5] * 60], [1.0, 1.0], max_new_tokens=5)
    assert len(engine.specs) == 1
    # The server refuses such a request on its own too (vLLM would cut it silently at max_model_len).
    spec = sampler.request_spec([5] * 60, 1, 1.0, 1) | {"max_tokens": 5}
    with pytest.raises(VLLMServerError, match=r"HTTP 400.*request 0: 60 prompt tokens \+ max_tokens=5"):
        sampler._conn.request("POST", "/generate", "test", payload={"requests": [spec]})


def test_continue_from_ids_checks_the_weight_version_and_names_the_call_on_timeout(tok, stub):
    engine, server = stub
    sampler = client(tok, server)
    other = client(tok, server)
    other.update_weights(stub_weights(engine.vocab))
    with pytest.raises(VLLMServerError, match=r"continuing token prefixes.*HTTP 409.*the client expected 0"):
        sampler.continue_from_ids([[5, 6]], [1.0])
    slow = VLLMServerSampler(tok, host="127.0.0.1", port=server.port, timeout_s=1.0, max_new_tokens=4)
    engine.block = threading.Event()
    with pytest.raises(VLLMServerTimeout) as caught:
        slow.continue_from_ids([[5, 6], [7, 8, 9]], [1.0, 1.0])
    message = str(caught.value)
    assert f"the vLLM server at http://127.0.0.1:{server.port} did not answer within 1 s" in message
    assert "continuing token prefixes, call 1 of this run (2 prefixes of up to 3 tokens, max_new_tokens=4) " \
           "with weight version 1" in message  # fmt: skip


def test_weights_are_pushed_in_chunks_cast_to_the_engine_dtype_and_versioned(tok):
    engine = StubEngine(tok, dtype="bfloat16")
    server = VLLMServer(engine, "127.0.0.1", 0, request_timeout_s=5).start()
    try:
        weights = stub_weights(engine.vocab)
        # 256-byte chunks: embed.weight (16 x 8 bfloat16 = 256 bytes) alone, then the small tensors together.
        sampler = client(tok, server, model=None, weight_chunk_mb=256 / 2**20)
        assert sampler.weight_version == 0
        metrics = sampler.update_weights(weights)
        assert metrics["weight_sync/chunks"] == 2 and metrics["weight_sync/version"] == 1
        (loaded,) = engine.loaded
        assert set(loaded) == set(weights)
        for name, tensor in weights.items():
            expected = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
            assert loaded[name].dtype == expected.dtype and torch.equal(loaded[name], expected)

        sampler.update_weights(stub_weights(engine.vocab, seed=1))
        assert sampler.weight_version == server.weight_version == 2
        sampler.generate(PROMPTS[:1], 2)
        assert sampler.last_sync["weight_sync/version"] == 2

        # A second trainer on the same server: the first one's next request is refused, not served
        # silently from the other trainer's weights.
        other = client(tok, server)
        other.update_weights(stub_weights(engine.vocab, seed=2))
        with pytest.raises(VLLMServerError, match=r"HTTP 409.*weight version 3, the client expected 2"):
            sampler.generate(PROMPTS[:1], 2)
        with pytest.raises(VLLMServerError, match=r"version 3 cannot follow the engine's version 3"):
            sampler.update_weights(weights)
    finally:
        server.shutdown()


def test_the_model_passed_at_start_is_pushed_before_any_generation(tok, stub):
    engine, server = stub

    class Policy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(engine.vocab, 8)
            self.layer = torch.nn.Linear(8, 8)
            self.register_buffer("steps", torch.tensor([5]))

    policy = Policy()
    sampler = client(tok, server, model=policy)
    assert sampler.weight_version == 1 and len(engine.loaded) == 1
    assert torch.equal(engine.loaded[0]["layer.weight"], policy.layer.weight.detach())


def test_mismatched_weights_send_nothing(tok, stub):
    engine, server = stub
    sampler = client(tok, server)
    weights = stub_weights(engine.vocab)
    weights["layer.weight"] = torch.zeros(8, 9)
    with pytest.raises(ValueError, match=r"wrong shape: layer.weight: \(8, 9\) != \(8, 8\)"):
        sampler.update_weights(weights)
    del weights["layer.weight"]
    with pytest.raises(ValueError, match="missing: layer.weight"):
        sampler.update_weights(weights)
    assert engine.loaded == [] and server.upload is None and server.weight_version == 0
    sampler.generate(PROMPTS[:1], 2)  # still usable: nothing was sent


def test_a_failed_push_blocks_generation_until_a_push_succeeds(tok, stub):
    engine, server = stub
    sampler = client(tok, server)
    engine.failure = RuntimeError("reload failed in the worker")
    with pytest.raises(VLLMServerError, match=r"failed while pushing weight version 1 .*HTTP 500.*reload failed"):
        sampler.update_weights(stub_weights(engine.vocab))
    with pytest.raises(RuntimeError, match="the last weight push failed"):
        sampler.generate(PROMPTS[:1], 2)
    sampler.update_weights(stub_weights(engine.vocab))
    assert sampler.generate(PROMPTS[:1], 2).num_responses == 2


def test_server_rejects_bad_uploads_and_requests(tok, stub):
    engine, server = stub
    sampler = client(tok, server)
    conn = sampler._conn
    with pytest.raises(VLLMServerError, match="no upload of weight version 1 in progress"):
        conn.request("POST", "/weights/chunk?version=1&index=0", "test", data=b"x")
    conn.request("POST", "/weights/begin", "test", payload={"version": 1, "num_chunks": 2})
    with pytest.raises(VLLMServerError, match="not safetensors data"):
        conn.request("POST", "/weights/chunk?version=1&index=0", "test", data=b"not safetensors")
    with pytest.raises(VLLMServerError, match=r"missing chunks \[0, 1\] of 2"):
        conn.request("POST", "/weights/commit", "test", payload={"version": 1})
    spec = sampler.request_spec([1, 2], 2, 0.0, None)
    with pytest.raises(VLLMServerError, match=r"HTTP 400.*greedy decoding \(temperature 0\) with n=2"):
        conn.request("POST", "/generate", "test", payload={"requests": [spec]})
    with pytest.raises(VLLMServerError, match=r"HTTP 400.*request 0 lacks \['seed'\]"):
        conn.request("POST", "/generate", "test", payload={"requests": [{k: v for k, v in spec.items() if k != "seed"}]})
    with pytest.raises(VLLMServerError, match="HTTP 404"):
        conn.request("GET", "/nothing", "test")
    conn.request("POST", "/reset", "test")  # drops the unfinished upload
    with pytest.raises(VLLMServerError, match=r"HTTP 409.*no upload of weight version 1 in progress"):
        conn.request("POST", "/weights/commit", "test", payload={"version": 1})
    small = VLLMServer(engine, "127.0.0.1", 0, max_request_bytes=100).start()
    try:
        with pytest.raises(VLLMServerError, match=r"HTTP 413.*over max_request_bytes=100"):
            client(tok, small)._conn.request("POST", "/weights/chunk?version=1&index=0", "test", data=b"x" * 101)
    finally:
        small.shutdown()
    assert engine.loaded == []


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers (a stuck server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_server_that_never_answers_is_an_error_naming_host_port(tok, silent_port):
    with pytest.raises(VLLMServerTimeout) as caught:
        VLLMServerSampler(tok, host="127.0.0.1", port=silent_port, connect_timeout_s=1.0)
    message = str(caught.value)
    assert f"127.0.0.1:{silent_port}" in message and "within 1 s" in message
    assert f"grpokit vllm-serve --model PATH --port {silent_port}" in message


def test_no_server_at_all_is_an_error_saying_what_to_run(tok):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(VLLMServerTimeout, match=rf"no healthy grpokit vLLM server at http://127.0.0.1:{port}.*"
                                                r"Connection ?Refused"):  # fmt: skip
        wait_for_server("127.0.0.1", port, 0.6, poll_s=0.2)


def test_a_stuck_generation_times_out_saying_what_was_asked(tok, stub):
    engine, server = stub
    sampler = VLLMServerSampler(tok, host="127.0.0.1", port=server.port, timeout_s=1.0, max_new_tokens=4)
    engine.block = threading.Event()
    with pytest.raises(VLLMServerTimeout) as caught:
        sampler.generate(PROMPTS, 2)
    message = str(caught.value)
    assert f"the vLLM server at http://127.0.0.1:{server.port} did not answer within 1 s" in message
    assert "generating rollout batch 1 of this run (3 prompts, 6 samples) with weight version 0" in message


def test_a_stuck_weight_push_times_out(tok, stub):
    engine, server = stub
    sampler = client(tok, server, weight_sync_timeout_s=1.0)
    release = threading.Event()
    engine.update_weights = lambda tensors: release.wait(30) and {}
    try:
        with pytest.raises(VLLMServerTimeout, match=r"within \d.* s while pushing weight version 1 .*loading it"):
            sampler.update_weights(stub_weights(engine.vocab))
    finally:
        release.set()


def test_close_leaves_the_server_running_and_shutdown_server_stops_it(tok, stub):
    engine, server = stub
    sampler = client(tok, server)
    sampler.close()
    with pytest.raises(RuntimeError, match="closed"):
        sampler.generate(PROMPTS[:1], 2)
    other = client(tok, server)
    other.shutdown_server()
    with pytest.raises(VLLMServerTimeout):
        wait_for_server("127.0.0.1", server.port, 0.5, poll_s=0.1)


def test_grpo_trainer_with_the_vllm_server_backend_pushes_every_step(tok, make_config, rows, tiny_model_dir):
    """generation.backend: vllm_server end to end on the stub: the trainer connects, pushes its weights at start
    and after each step (the last push is the final policy), samples from the server and closes the client."""
    from grpokit.rollout.vllm_sampler import _checkpoint_tensors
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer

    engine = StubEngine(tok)
    engine.tensors = {name: [list(shape), dtype] for name, (shape, dtype) in _checkpoint_tensors(tiny_model_dir).items()}
    engine.vocab = 12  # ids 3..11: the tiny model's characters
    server = VLLMServer(engine, "127.0.0.1", 0, request_timeout_s=5).start()
    try:
        config = make_config(max_steps=2, generation={"max_new_tokens": 6, "backend": "vllm_server"},
                             vllm={"server_port": server.port, "server_timeout_s": 10})  # fmt: skip
        trainer = GRPOTrainer(config, reward_funcs=[lambda prompts, completions, **c: [len(x) / 6 for x in completions]],
                              dataset=rows)  # fmt: skip
        sampler = trainer.sampler.sampler
        assert isinstance(sampler, VLLMServerSampler) and trainer.rollout_importance == "token"
        assert len(engine.loaded) == 1  # the push at start
        result = trainer.train()
    finally:
        server.shutdown()
    metrics = read_metrics(result.run_dir)
    assert [row["weight_sync/version"] for row in metrics] == [2, 3] and len(engine.loaded) == 3
    assert [len(specs) for specs in engine.specs] == [2, 2]  # one request per prompt, G samples each
    final = trainer.model.state_dict()
    assert all(torch.equal(engine.loaded[-1][name], final[name]) for name in engine.loaded[-1])
    assert any(not torch.equal(engine.loaded[0][name], final[name]) for name in engine.loaded[-1])
    with pytest.raises(RuntimeError, match="closed"):
        sampler.generate(PROMPTS[:1], 1)


def test_trainer_without_a_server_stops_naming_it(make_config, rows):
    from grpokit.trainers.grpo import GRPOTrainer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(generation={"backend": "vllm_server"}, vllm={"server_port": port, "server_timeout_s": 1})
    with pytest.raises(VLLMServerTimeout, match=rf"127.0.0.1:{port} within 1 s.*grpokit vllm-serve --model PATH"):
        GRPOTrainer(config, reward_funcs=[lambda prompts, completions, **c: [0.0] * len(completions)], dataset=rows)


def test_resume_on_a_restarted_server_reproduces_the_run(tok, make_config, rows, tiny_model_dir, tmp_path):
    """A run resumed from its step-2 checkpoint against a fresh server (weight version 0 again) pushes the
    checkpoint's weights first, sends the same requests (seeds restored) and logs the same metrics."""
    import shutil

    from grpokit.rollout.vllm_sampler import _checkpoint_tensors
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer

    def stub_server():
        engine = StubEngine(tok)
        engine.tensors = {n: [list(shape), dtype] for n, (shape, dtype) in _checkpoint_tensors(tiny_model_dir).items()}
        engine.vocab = 12
        return engine, VLLMServer(engine, "127.0.0.1", 0, request_timeout_s=5).start()

    def reward(prompts, completions, **columns):
        return [x.count("a") / 6 for x in completions]

    engine, server = stub_server()
    try:
        full = make_config(max_steps=4, checkpoint={"save_steps": 2, "save_total_limit": None},
                           generation={"max_new_tokens": 6, "backend": "vllm_server"},
                           vllm={"server_port": server.port, "server_timeout_s": 10})  # fmt: skip
        reference = GRPOTrainer(full, reward_funcs=[reward], dataset=rows).train()
    finally:
        server.shutdown()
    resumed_run = tmp_path / "resumed"
    shutil.copytree(reference.run_dir, resumed_run)
    shutil.rmtree(resumed_run / "checkpoints" / "step-000004")
    lines = (resumed_run / "metrics.jsonl").read_text().splitlines()[:2]
    (resumed_run / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    restarted, server = stub_server()
    try:
        resume = full.model_copy(update={
            "checkpoint": full.checkpoint.model_copy(update={"resume": str(resumed_run)}),
            "vllm": full.vllm.model_copy(update={"server_port": server.port}),
        })  # fmt: skip
        trainer = GRPOTrainer(resume, reward_funcs=[reward], dataset=rows)
        assert trainer.start_step == 2
        trainer.train()
    finally:
        server.shutdown()
    # Pushes: at start (the step-2 weights), after step 3, after step 4; the full run pushed the same weights.
    assert len(restarted.loaded) == 3
    for got, want in zip(restarted.loaded, engine.loaded[2:]):
        assert all(torch.equal(got[name], want[name]) for name in want)
    assert restarted.specs == engine.specs[2:]
    keys = ("reward/mean", "loss", "grad_norm", "rollout_is/weight_mean")
    assert [{k: m[k] for k in keys} for m in read_metrics(resumed_run)] == [
        {k: m[k] for k in keys} for m in read_metrics(reference.run_dir)
    ]


def test_an_unusable_engine_fails_health_and_generation_with_its_reason(tok, stub):
    engine, server = stub
    sampler = client(tok, server)
    engine.unusable = lambda: "the last weight sync failed (EngineDeadError)"
    with pytest.raises(VLLMServerError, match=r"HTTP 503: the last weight sync failed \(EngineDeadError\)"):
        sampler.generate(PROMPTS[:1], 2)
    with pytest.raises(VLLMServerTimeout, match=r"last: .*HTTP 503: the last weight sync failed"):
        wait_for_server("127.0.0.1", server.port, 0.3, poll_s=0.1)
