"""benchmarks/claims/noisy_rewards.py: the corrupted rewards of the noise-robustness experiment are seeded,
have the configured strength, and leave the right answer's signal in expectation where they should."""

import importlib.util
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def noisy():
    spec = importlib.util.spec_from_file_location("noisy_rewards", ROOT / "benchmarks" / "claims" / "noisy_rewards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


N = 4000
PROMPTS = [f"{i}+1=" for i in range(N)]
ANSWERS = [str(i + 1) for i in range(N)]
RIGHT = [a if i % 2 == 0 else "x" for i, a in enumerate(ANSWERS)]  # every other completion right


def test_flip_flips_the_configured_fraction_and_is_seeded(noisy):
    noisy._STREAMS.clear()
    first = noisy.flip(PROMPTS, RIGHT, ANSWERS, level=0.3, noise_seed=1)
    clean = [float(i % 2 == 0) for i in range(N)]
    flipped = sum(f != c for f, c in zip(first, clean)) / N
    assert flipped == pytest.approx(0.3, abs=0.03) and set(first) <= {0.0, 1.0}
    noisy._STREAMS.clear()
    assert noisy.flip(PROMPTS, RIGHT, ANSWERS, level=0.3, noise_seed=1) == first
    noisy._STREAMS.clear()
    assert noisy.flip(PROMPTS, RIGHT, ANSWERS, level=0.3, noise_seed=2) != first
    assert noisy.flip(PROMPTS, RIGHT, ANSWERS, level=0.0) == clean


def test_gaussian_adds_zero_mean_noise_of_the_configured_std(noisy):
    values = noisy.gaussian(PROMPTS, RIGHT, ANSWERS, level=0.5)
    noise = [v - float(i % 2 == 0) for i, v in enumerate(values)]
    assert statistics.mean(noise) == pytest.approx(0.0, abs=0.04)
    assert statistics.stdev(noise) == pytest.approx(0.5, abs=0.04)


def test_prompt_offset_is_fixed_per_prompt_so_a_group_mean_removes_it(noisy):
    prompt = "12+3="
    group = ["15", "x", "15", "14"]
    values = noisy.prompt_offset([prompt] * 4, group, ["15"] * 4, level=1.0, noise_seed=3)
    offset = noisy.prompt_offset_of(prompt, 1.0, 3)
    assert offset != 0 and values == pytest.approx([1 + offset, offset, 1 + offset, offset])
    centred = [v - statistics.mean(values) for v in values]
    assert centred == pytest.approx([0.5, -0.5, 0.5, -0.5])  # the clean group's centred rewards
    offsets = [noisy.prompt_offset_of(p, 1.0, 3) for p in PROMPTS]
    assert statistics.stdev(offsets) == pytest.approx(1.0, abs=0.05)


def test_levels_are_checked(noisy):
    with pytest.raises(ValueError, match="flip: level must be"):
        noisy.flip(PROMPTS[:1], RIGHT[:1], ANSWERS[:1], level=1.5)
    with pytest.raises(ValueError, match="gaussian: level must be"):
        noisy.gaussian(PROMPTS[:1], RIGHT[:1], ANSWERS[:1], level=-1)
