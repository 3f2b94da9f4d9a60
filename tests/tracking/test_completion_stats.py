import pytest

from grpokit.tracking.completion_stats import mean_length, mean_repeated_ngram_rate, repeated_ngram_rate


def test_repeated_ngram_rate_counts_ngrams_seen_earlier():
    assert repeated_ngram_rate("0579", 3) == 0.0  # "057", "579": both new
    # "99999999": 6 trigrams, all "999": 5 of them repeat the first
    assert repeated_ngram_rate("99999999", 3) == pytest.approx(5 / 6)
    # "05790579": trigrams 057 579 790 905 057 579 -> the last two repeat
    assert repeated_ngram_rate("05790579", 3) == pytest.approx(2 / 6)
    assert repeated_ngram_rate("abab", 2) == pytest.approx(1 / 3)  # ab ba ab
    assert repeated_ngram_rate(["the", "cat", "the", "cat"], 2) == pytest.approx(1 / 3)  # word tokens too


def test_repeated_ngram_rate_short_sequences_and_bad_n():
    assert repeated_ngram_rate("ab", 3) == 0.0  # no trigram at all
    assert repeated_ngram_rate("", 1) == 0.0
    assert repeated_ngram_rate("aaa", 1) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        repeated_ngram_rate("abc", 0)


def test_means_over_sequences():
    assert mean_length(["0579", "057912"]) == 5.0
    assert mean_repeated_ngram_rate(["0579", "99999999"], 3) == pytest.approx((0 + 5 / 6) / 2)
    with pytest.raises(ValueError, match="no sequences"):
        mean_length([])
    with pytest.raises(ValueError, match="no sequences"):
        mean_repeated_ngram_rate([])
