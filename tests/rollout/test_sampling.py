import torch

from grpokit.rollout.sampling import sample_next_token, top_k_filter, top_p_filter

NEG = float("-inf")


def test_top_k_keeps_the_k_largest_per_row():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [0.0, -1.0, 5.0, 5.0]])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [[NEG, 4.0, 3.0, NEG], [NEG, NEG, 5.0, 5.0]]
    assert top_k_filter(logits, 0) is logits and top_k_filter(logits, 4) is logits


def test_top_p_keeps_the_smallest_nucleus():
    # probs [0.5, 0.3, 0.15, 0.05]: mass before each = [0, 0.5, 0.8, 0.95]
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # top_p 0.8: tokens with mass-before >= 0.8 dropped -> keep the first two (0.5 + 0.3 reaches 0.8)
    assert torch.isinf(top_p_filter(logits, 0.8)).tolist() == [[False, False, True, True]]
    # top_p 0.81: the third token is needed
    assert torch.isinf(top_p_filter(logits, 0.81)).tolist() == [[False, False, False, True]]
    # a tiny top_p still keeps the most likely token, in vocabulary order after shuffling
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isinf(top_p_filter(shuffled, 0.1)).tolist() == [[True, False, True, True]]
    assert top_p_filter(logits, 1.0) is logits


def test_sampling_follows_the_filtered_distribution():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    tokens = sample_next_token(logits, greedy=False, top_p=0.8, generator=g)
    counts = torch.bincount(tokens, minlength=4).float() / len(tokens)
    # renormalised nucleus: [0.625, 0.375, 0, 0]; 4 sigma of a binomial at n=20000 is 0.014
    assert counts[2:].sum() == 0
    assert abs(counts[0] - 0.625) < 0.014
    assert sample_next_token(logits[:2], greedy=True).tolist() == [0, 0]


def test_inverse_cdf_sampling_matches_the_distribution_and_skips_zero_mass():
    # probs [0.1, 0, 0.6, 0, 0.3]: zero-mass tokens sit between others and at the end of the CDF's flat steps
    probs = torch.tensor([0.1, 0.0, 0.6, 0.0, 0.3])
    logits = probs.log().expand(50000, 5)
    g = torch.Generator().manual_seed(1)
    tokens = sample_next_token(logits, greedy=False, generator=g)
    freq = torch.bincount(tokens, minlength=5).float() / len(tokens)
    assert freq[1] == 0 and freq[3] == 0
    # 4 sigma of a binomial at n=50000: 4 * sqrt(p(1-p)/n) <= 0.0088
    torch.testing.assert_close(freq, probs, rtol=0, atol=0.0088)
    # seeded: the same generator state gives the same draws
    again = sample_next_token(logits, greedy=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(tokens, again)
