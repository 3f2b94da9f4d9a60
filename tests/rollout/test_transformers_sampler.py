import pytest
import torch

from grpokit.models import completion_logprobs
from grpokit.rollout import (
    RolloutBatch,
    Sampler,
    TransformersSampler,
    group_temperatures,
    schedule_for_spacing,
)

PROMPTS = ["12+34=", "1+2=", "123+456=", "9="]


def test_shapes_order_and_columns(model, tok):
    sampler = TransformersSampler(model, tok, max_new_tokens=6, seed=0)
    assert isinstance(sampler, Sampler)
    batch = sampler.generate(PROMPTS[:3], 4, columns={"answer": ["46", "3", "579"]})
    assert isinstance(batch, RolloutBatch) and batch.num_responses == 12
    N, T = batch.completion_ids.shape
    assert T <= 6 and batch.prompt_ids.shape == batch.prompt_mask.shape == (12, 8)
    assert batch.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert batch.prompts == [p for p in PROMPTS[:3] for _ in range(4)]
    assert batch.columns["answer"] == ["46"] * 4 + ["3"] * 4 + ["579"] * 4
    # left padding: the short prompt "1+2=" sits at the end of its row
    assert batch.prompt_mask[4].tolist() == [0] * 4 + [1] * 4
    assert batch.prompt_ids[4, 4:].tolist() == tok("1+2=")["input_ids"]
    assert batch.sampler_logprobs.shape == (N, T) and batch.temperatures.tolist() == [1.0] * 12
    # Sampling runs under inference_mode, but the batch must be usable in autograd (and in-place) later.
    tensors = [batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask,
               batch.group_ids, batch.temperatures, batch.truncated, batch.sampler_logprobs]
    assert not any(torch.is_inference(t) for t in tensors)


def test_same_seed_same_samples_and_resume(model, tok):
    a = TransformersSampler(model, tok, max_new_tokens=8, seed=7)
    b = TransformersSampler(model, tok, max_new_tokens=8, seed=7)
    first = a.generate(PROMPTS, 4)
    assert torch.equal(first.completion_ids, b.generate(PROMPTS, 4).completion_ids)
    other = TransformersSampler(model, tok, max_new_tokens=8, seed=8).generate(PROMPTS, 4)
    assert not torch.equal(first.completion_ids, other.completion_ids)

    state = a.state_dict()
    expected = a.generate(PROMPTS, 4)
    b.set_seed(123)
    b.load_state_dict(state)
    assert torch.equal(b.generate(PROMPTS, 4).completion_ids, expected.completion_ids)
    assert not torch.equal(expected.completion_ids, first.completion_ids)


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
def test_greedy_matches_transformers_generate(model, tok, decoder):
    batch = TransformersSampler(model, tok, max_new_tokens=10, temperature=0, decoder=decoder).generate(PROMPTS, 1)
    encoded = tok(PROMPTS, padding=True, return_tensors="pt")
    reference = model.generate(**encoded, do_sample=False, max_new_tokens=10, pad_token_id=tok.pad_token_id)
    reference = reference[:, encoded["input_ids"].shape[1]:]
    for row in range(len(PROMPTS)):
        n = int(batch.completion_mask[row].sum())
        assert batch.completion_ids[row, :n].tolist() == reference[row, :n].tolist()
    assert len({tuple(r) for r in reference.tolist()}) > 1  # the prompts really get different outputs
    assert batch.temperatures.tolist() == [0.0] * 4
    top1 = TransformersSampler(model, tok, max_new_tokens=10, top_k=1, seed=3).generate(PROMPTS, 1)
    assert torch.equal(top1.completion_ids, batch.completion_ids)
    no_sample = TransformersSampler(model, tok, max_new_tokens=10, do_sample=False).generate(PROMPTS, 1)
    assert torch.equal(no_sample.completion_ids, batch.completion_ids)


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
@pytest.mark.parametrize("settings", [{}, {"temperature_schedule": (0.7, 1.3), "top_k": 5, "top_p": 0.9}])
def test_old_logprobs_equal_a_full_forward(model, tok, settings, decoder):
    sampler = TransformersSampler(model, tok, max_new_tokens=8, seed=1, decoder=decoder, **settings)
    batch = sampler.generate(PROMPTS, 3)
    recomputed, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                        batch.completion_mask, temperature=batch.temperatures)
    torch.testing.assert_close(batch.sampler_logprobs, recomputed, rtol=0, atol=1e-5)
    assert (batch.sampler_logprobs[batch.completion_mask.bool()] < 0).all()


def test_eos_stops_rows_and_masks(model, tok):
    sampler = TransformersSampler(model, tok, max_new_tokens=12, temperature=2.0, seed=0)
    batch = sampler.generate(PROMPTS, 16)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ids, mask = batch.completion_ids, batch.completion_mask.bool()
    lengths = mask.sum(1)
    saw_eos = 0
    for row in range(batch.num_responses):
        n = int(lengths[row])
        real = ids[row, :n].tolist()
        assert eos not in real[:-1]
        assert (ids[row, n:] == pad).all() and not mask[row, n:].any() and mask[row, :n].all()
        assert bool(batch.truncated[row]) == (real[-1] != eos)
        assert batch.truncated[row] == (n == 12 and real[-1] != eos)
        assert batch.completions[row] == tok.decode(real, skip_special_tokens=True)
        saw_eos += real[-1] == eos
    assert 0 < saw_eos < batch.num_responses  # both cases are exercised


def test_min_new_tokens_masks_eos(model, tok):
    eos = tok.eos_token_id
    free = TransformersSampler(model, tok, max_new_tokens=12, temperature=2.0, seed=0).generate(PROMPTS, 16)
    assert (free.completion_ids[:, :5] == eos).any()  # without the constraint EOS comes early
    held = TransformersSampler(model, tok, max_new_tokens=12, min_new_tokens=5, temperature=2.0,
                               seed=0).generate(PROMPTS, 16)
    assert not (held.completion_ids[:, :5] == eos).any()
    assert (held.completion_mask.sum(1) >= 5).all()


def test_stops_early_when_every_row_is_done(model, tok):
    batch = TransformersSampler(model, tok, max_new_tokens=64, temperature=2.0, seed=0).generate(["1="], 2)
    assert not batch.truncated.any()
    assert batch.completion_ids.shape[1] == int(batch.completion_mask.sum(1).max()) < 64


def test_temperature_schedule_values():
    assert group_temperatures(1.0, (0.7, 1.0), 4).tolist() == pytest.approx([0.7, 0.8, 0.9, 1.0], abs=1e-6)
    assert group_temperatures(0.9, None, 3).tolist() == pytest.approx([0.9] * 3)
    assert group_temperatures(1.0, (0.7, 1.0), 1).tolist() == pytest.approx([0.7])


def test_exclusive_spacing_is_the_founding_schedule():
    for G in (1, 2, 8):
        pair = schedule_for_spacing((0.7, 1.0), G, "exclusive")
        assert group_temperatures(1.0, pair, G).tolist() == pytest.approx([0.7 + 0.3 * i / G for i in range(G)])
    assert group_temperatures(1.0, schedule_for_spacing((0.7, 1.0), 8, "exclusive"), 8)[-1].item() == (
        pytest.approx(0.9625)
    )
    assert schedule_for_spacing((0.7, 1.0), 8, "inclusive") == (0.7, 1.0)
    assert schedule_for_spacing(None, 8, "exclusive") is None
    with pytest.raises(ValueError, match="temperature_schedule_spacing"):
        schedule_for_spacing((0.7, 1.0), 8, "founding")


def test_schedule_is_applied_per_group(model, tok):
    sampler = TransformersSampler(model, tok, max_new_tokens=4, temperature_schedule=(0.7, 1.0))
    batch = sampler.generate(PROMPTS[:2], 4)
    assert batch.temperatures.tolist() == pytest.approx([0.7, 0.8, 0.9, 1.0] * 2, abs=1e-6)


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
def test_batch_invariance_of_a_prompt(model, tok, decoder):
    greedy = TransformersSampler(model, tok, max_new_tokens=10, temperature=0, decoder=decoder)
    together = greedy.generate(PROMPTS, 2)
    for index, prompt in enumerate(PROMPTS):
        alone = greedy.generate([prompt], 2)
        rows = together.group_ids == index
        n = alone.completion_ids.shape[1]
        assert torch.equal(together.completion_ids[rows, :n], alone.completion_ids)
        torch.testing.assert_close(together.sampler_logprobs[rows, :n], alone.sampler_logprobs, rtol=0, atol=1e-5)


def test_model_mode_is_restored(model, tok):
    model.train()
    try:
        TransformersSampler(model, tok, max_new_tokens=2).generate(["1="], 1)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"min_new_tokens": 9, "max_new_tokens": 8}, "min_new_tokens"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"temperature_schedule": (0.7, 0.0)}, "temperature_schedule"),
        ({"temperature_schedule": (0.7, 1.0), "temperature": 0}, "greedy"),
        ({"prompt_truncation": "right"}, "prompt_truncation"),
        ({"decoder": "vllm"}, "decoder must be one of"),
    ],
)
def test_bad_arguments(model, tok, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformersSampler(model, tok, **kwargs)


def test_bad_generate_calls(model, tok):
    sampler = TransformersSampler(model, tok, max_new_tokens=2)
    with pytest.raises(ValueError, match="num_generations"):
        sampler.generate(["1="], 0)
    with pytest.raises(ValueError, match="column 'answer' has 1 entries but there are 2 prompts"):
        sampler.generate(["1=", "2="], 2, columns={"answer": ["1"]})
    with pytest.raises(ValueError, match="prompt 1 is an empty string"):
        sampler.generate(["1=", ""], 2)


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
def test_finished_rows_leave_the_decoder_batch(model, tok, decoder, monkeypatch):
    rows_per_step = []
    make_decoder = TransformersSampler._decoder

    def spy(self, total_length):
        instance = make_decoder(self, total_length)
        step = instance.step
        instance.step = lambda tokens: rows_per_step.append(tokens.shape[0]) or step(tokens)
        return instance

    monkeypatch.setattr(TransformersSampler, "_decoder", spy)
    sampler = TransformersSampler(model, tok, max_new_tokens=12, temperature=2.0, seed=0, decoder=decoder)
    batch = sampler.generate(PROMPTS, 16)
    # Rows leave as they finish (64 at first, fewer at the end, never more).
    assert rows_per_step[0] == 64 and rows_per_step[-1] < 64
    assert rows_per_step == sorted(rows_per_step, reverse=True)
    # The rows that stayed were not disturbed by the moves: their log-probs equal a full forward's.
    recomputed, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                        batch.completion_mask, temperature=batch.temperatures)
    torch.testing.assert_close(batch.sampler_logprobs, recomputed, rtol=0, atol=1e-5)


def test_continue_from_ids_prefills_each_shared_prefix_once(model, tok):
    """Equal runs of identical prefixes (G episodes of a start state) are prefilled once per distinct prefix,
    and sample what a prefill of every row samples."""
    sampler = TransformersSampler(model, tok, max_new_tokens=6, seed=0)
    a, b = tok("ab", add_special_tokens=False)["input_ids"], tok("bca", add_special_tokens=False)["input_ids"]
    prefixes = [a, a, a, b, b, list(b)]
    calls = []
    decode = sampler._decode

    def spy(ids, mask, G, tau, limit=None):
        calls.append((ids.shape[0], G))
        return decode(ids, mask, G, tau, limit)

    sampler._decode = spy
    shared = sampler.continue_from_ids(prefixes, [1.0] * 6)
    assert calls == [(2, 3)]
    sampler.set_seed(0)
    ids, mask = sampler._pad_left(prefixes)
    tokens, logprobs = decode(ids, mask, 1, torch.ones(6), 6)  # every row prefilled on its own
    for row, turn in enumerate(shared):
        n = len(turn.token_ids)
        assert turn.token_ids == tokens[row, :n].tolist()
        torch.testing.assert_close(torch.tensor(turn.logprobs), logprobs[row, :n], rtol=0, atol=1e-5)
    sampler.continue_from_ids([a, a, b], [1.0] * 3)  # uneven runs: every row prefilled
    assert calls[-1] == (3, 1)


@pytest.mark.parametrize(
    ("prefixes", "temperatures", "message"),
    [
        ([[1, 2], [3]], [1.0], "2 prefixes but 1 temperatures"),
        ([[1, 2], []], [1.0, 1.0], "prefix 1 is empty"),
        ([[1, -2]], [1.0], "prefix 0 holds a negative token id -2"),
        ([[1, 2.5]], [1.0], "prefix 0 holds a non-integer token"),
        ([[1, 2]], [float("nan")], "temperature 0 is nan"),
    ],
)
def test_continue_from_ids_names_the_bad_prefix_or_temperature(model, tok, prefixes, temperatures, message):
    sampler = TransformersSampler(model, tok, max_new_tokens=4)
    with pytest.raises(ValueError, match=message):
        sampler.continue_from_ids(prefixes, temperatures)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        sampler.continue_from_ids([[1]], [1.0], max_new_tokens=0)
