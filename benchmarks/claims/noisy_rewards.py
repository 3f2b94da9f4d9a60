"""Corrupted versions of a built-in task's exact-match reward, for the noise-robustness claim.

Load one with ``--reward_funcs benchmarks/claims/noisy_rewards.py:flip`` and set its level with
``rewards.reward_kwargs``, e.g. ``{"benchmarks/claims/noisy_rewards.py:flip": {"level": 0.3}}``. Held-out
accuracy is still measured with the task's true checker, so a run shows how much of the true signal the
algorithm recovers from the corrupted one.

Each function scores ``1.0`` for a completion that equals the row's ``answer`` (stripped; the ``addition``
and ``chain`` tasks' checker), ``0.0`` otherwise, then corrupts it:

- ``flip``: each reward is replaced by ``1 - reward`` with probability ``level`` (label noise);
- ``gaussian``: ``reward + N(0, level^2)``, independently per completion;
- ``prompt_offset``: ``reward + o(prompt)`` with ``o(prompt) ~ N(0, level^2)`` drawn once per prompt and
  fixed for the whole run (a biased grader: some prompts look easier than they are). Subtracting a
  group's mean removes it exactly; a value baseline has to learn it per prompt.

Noise is seeded: ``noise_seed`` (default 0) seeds one stream per function and process for ``flip`` and
``gaussian``, and the offset of each prompt is a function of ``(noise_seed, prompt)`` only.
"""

from __future__ import annotations

import random
from typing import Any

_STREAMS: dict[tuple[str, int], random.Random] = {}


def _stream(kind: str, noise_seed: int) -> random.Random:
    key = (kind, int(noise_seed))
    if key not in _STREAMS:
        _STREAMS[key] = random.Random(f"{kind}-{noise_seed}")
    return _STREAMS[key]


def _correct(completions: list[str], answer: list[Any]) -> list[float]:
    if len(completions) != len(answer):
        raise ValueError(f"got {len(completions)} completions but {len(answer)} answers")
    return [float(c.strip() == str(a).strip()) for c, a in zip(completions, answer)]


def _check_level(level: float, name: str) -> float:
    level = float(level)
    if not level >= 0 or (name == "flip" and level > 1):
        bound = "[0, 1]" if name == "flip" else ">= 0"
        raise ValueError(f"{name}: level must be {bound}, got {level}")
    return level


def prompt_offset_of(prompt: Any, level: float, noise_seed: int = 0) -> float:
    """The fixed offset of ``prompt``: ``N(0, level^2)`` seeded by ``(noise_seed, prompt)``."""
    return random.Random(f"offset-{noise_seed}-{prompt}").gauss(0.0, float(level))


def flip(
    prompts: list[Any], completions: list[str], answer: list[Any], level: float = 0.1, noise_seed: int = 0,
    **columns: Any,
) -> list[float]:  # fmt: skip
    """Exact-match reward, each flipped (``1 - r``) with probability ``level``."""
    level = _check_level(level, "flip")
    rng = _stream("flip", noise_seed)
    return [1.0 - r if rng.random() < level else r for r in _correct(completions, answer)]


def gaussian(
    prompts: list[Any], completions: list[str], answer: list[Any], level: float = 0.5, noise_seed: int = 0,
    **columns: Any,
) -> list[float]:  # fmt: skip
    """Exact-match reward plus independent Gaussian noise of std ``level``."""
    level = _check_level(level, "gaussian")
    rng = _stream("gaussian", noise_seed)
    return [r + rng.gauss(0.0, level) for r in _correct(completions, answer)]


def prompt_offset(
    prompts: list[Any], completions: list[str], answer: list[Any], level: float = 0.5, noise_seed: int = 0,
    **columns: Any,
) -> list[float]:  # fmt: skip
    """Exact-match reward plus a fixed per-prompt offset of std ``level`` (see :func:`prompt_offset_of`)."""
    level = _check_level(level, "prompt_offset")
    return [
        r + prompt_offset_of(p, level, noise_seed) for p, r in zip(prompts, _correct(completions, answer))
    ]
