import pytest
import torch

from grpokit.models import (
    build_char_tokenizer,
    build_tiny_model,
    completion_logprobs,
    compute_logits_for_completion,
)


@pytest.fixture(scope="module")
def model():
    tok = build_char_tokenizer("0123456789+=")
    return build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=64, seed=0, initializer_range=0.2).eval()


def make_rows(seed):
    """Three (prompt, completion) pairs of different lengths, as unpadded id lists."""
    g = torch.Generator().manual_seed(seed)
    lengths = [(3, 5), (6, 2), (1, 7)]
    return [(torch.randint(4, 16, (p,), generator=g), torch.randint(2, 16, (t,), generator=g)) for p, t in lengths]


def pad(rows, extra_prompt=0, extra_completion=0):
    """Left-pad prompts, right-pad completions (pad id 0), optionally with extra padding everywhere."""
    N = len(rows)
    P = max(len(p) for p, _ in rows) + extra_prompt
    T = max(len(c) for _, c in rows) + extra_completion
    prompt_ids, prompt_mask = torch.zeros(N, P, dtype=torch.long), torch.zeros(N, P, dtype=torch.long)
    completion_ids, completion_mask = torch.zeros(N, T, dtype=torch.long), torch.zeros(N, T)
    for i, (p, c) in enumerate(rows):
        prompt_ids[i, P - len(p):], prompt_mask[i, P - len(p):] = p, 1
        completion_ids[i, : len(c)], completion_mask[i, : len(c)] = c, 1
    return prompt_ids, prompt_mask, completion_ids, completion_mask


def reference(model, rows, temperature=1.0):
    """Per-row, unpadded forward with a full log-softmax: the definition, written the slow way."""
    logprobs, entropies = [], []
    for p, c in rows:
        logits = model(torch.cat([p, c])[None]).logits[0, len(p) - 1 : -1] / temperature  # (T, V)
        log_softmax = torch.log_softmax(logits, dim=-1)
        logprobs.append(log_softmax.gather(-1, c[:, None]).squeeze(-1))
        entropies.append(-(log_softmax.exp() * log_softmax).sum(-1))
    return logprobs, entropies


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_matches_unpadded_reference(model, chunk_size):
    rows = make_rows(0)
    logprobs, entropy = completion_logprobs(model, *pad(rows), return_entropy=True, chunk_size=chunk_size)
    ref_logprobs, ref_entropy = reference(model, rows)
    for i, (_, c) in enumerate(rows):
        torch.testing.assert_close(logprobs[i, : len(c)], ref_logprobs[i], rtol=0, atol=1e-5)
        torch.testing.assert_close(entropy[i, : len(c)], ref_entropy[i], rtol=0, atol=1e-5)
        assert (logprobs[i, len(c):] == 0).all() and (entropy[i, len(c):] == 0).all()
    assert (logprobs[:, 0] < 0).all()


def test_batch_invariance(model):
    # A row's log-probs must not depend on the padding other rows force on it.
    rows = make_rows(1)
    alone = [completion_logprobs(model, *pad([row]))[0][0] for row in rows]
    together = completion_logprobs(model, *pad(rows, extra_prompt=4, extra_completion=3))[0]
    for i, (_, c) in enumerate(rows):
        torch.testing.assert_close(together[i, : len(c)], alone[i], rtol=0, atol=1e-5)


def test_per_row_temperature(model):
    rows = make_rows(2)
    tau = torch.tensor([0.5, 1.0, 2.0])
    logprobs, entropy = completion_logprobs(model, *pad(rows), temperature=tau, return_entropy=True)
    for i, (_, c) in enumerate(rows):
        ref_logprobs, ref_entropy = reference(model, [rows[i]], temperature=float(tau[i]))
        torch.testing.assert_close(logprobs[i, : len(c)], ref_logprobs[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(entropy[i, : len(c)], ref_entropy[0], rtol=0, atol=1e-5)
    # Scalar temperature equals the same value for every row.
    scalar = completion_logprobs(model, *pad(rows), temperature=0.5)[0]
    torch.testing.assert_close(scalar[0], logprobs[0], rtol=0, atol=1e-6)


def test_gradients_match_reference(model):
    rows = make_rows(3)
    logprobs, _ = completion_logprobs(model, *pad(rows), temperature=0.7, chunk_size=2)
    logprobs.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    sum(lp.sum() for lp in reference(model, rows, temperature=0.7)[0]).backward()
    for grad, param in zip(grads, model.parameters()):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(grad, param.grad, rtol=1e-4, atol=1e-5)
    model.zero_grad()


def test_logits_for_completion_shape_and_temperature(model):
    rows = make_rows(4)
    batch = pad(rows)
    logits = compute_logits_for_completion(model, *batch)
    assert logits.shape == (3, batch[2].shape[1], model.config.vocab_size)
    hot = compute_logits_for_completion(model, *batch, temperature=torch.tensor([2.0, 2.0, 4.0]))
    torch.testing.assert_close(hot[2], logits[2] / 4, rtol=0, atol=1e-6)


def test_bad_inputs(model):
    prompt_ids, prompt_mask, completion_ids, completion_mask = pad(make_rows(5))
    with pytest.raises(ValueError, match="completion_mask shape"):
        completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask[:, :-1])
    with pytest.raises(ValueError, match="rows"):
        completion_logprobs(model, prompt_ids[:2], prompt_mask[:2], completion_ids, completion_mask)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=0.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                            temperature=torch.ones(2))


def test_entropy_is_detached_and_logprobs_are_not(model):
    logprobs, entropy = completion_logprobs(model, *pad(make_rows(4)), return_entropy=True)
    assert logprobs.requires_grad and not entropy.requires_grad
