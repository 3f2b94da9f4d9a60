"""What happens when a reward function fails: an exception, a result of the wrong length or type, a NaN, or
a call that does not return within ``reward_timeout_s``.

Two policies (``RewardConfig.reward_failure``), never silent:

* ``raise`` (default): :class:`RewardFunctionError` names the function and what went wrong: the batch (its
  size and first prompts) for a failed call, the completion (index, prompt, text) for a bad value.
* ``fallback``: the affected completions get ``reward_fallback_value`` (``None``: they are left unscored, so
  they leave their group's baseline and the loss); the count goes to ``rewards/<name>/failures`` every step
  and the first failure of each function is logged once with its traceback (logger ``grpokit.rewards``).

The timeout runs the call in a daemon worker thread and stops waiting at the deadline. A thread cannot be
killed: a pure-Python function that hangs keeps running (and holding a core) in the background, each hang
adds one such thread, and its late result is discarded. Code that may hang on purpose, such as generated
programs, belongs in the process sandbox (:mod:`grpokit.rewards.sandbox`, the ``code_tests`` reward), which
kills the whole process tree at its wall-clock limit.

Out-of-memory errors are not reward failures: they propagate under either policy, so the trainer's
out-of-memory handling sees them.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = [
    "RewardFailurePolicy",
    "RewardFunctionError",
    "RewardTimeoutError",
    "guarded_call",
    "validate_rewards",
]

log = logging.getLogger("grpokit.rewards")


class RewardFunctionError(ValueError):
    """A reward function failed under ``reward_failure: raise``; the message names it and the input."""


class RewardTimeoutError(TimeoutError):
    """A reward call exceeded ``reward_timeout_s`` (raised inside :func:`guarded_call`)."""


@dataclass(frozen=True)
class RewardFailurePolicy:
    """How reward failures are handled (mirrors the ``RewardConfig`` fields of the same names).

    Attributes:
        mode: ``"raise"`` or ``"fallback"``.
        fallback_value: the score of a failed completion under ``fallback``; ``None`` leaves it unscored.
        timeout_s: seconds one call (all N completions) may take; ``None`` waits for ever.
    """

    mode: Literal["raise", "fallback"] = "raise"
    fallback_value: float | None = 0.0
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("raise", "fallback"):
            raise ValueError(f"reward_failure must be 'raise' or 'fallback', got {self.mode!r}")
        if self.fallback_value is not None and not math.isfinite(self.fallback_value):
            raise ValueError(f"reward_fallback_value must be finite or None, got {self.fallback_value}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"reward_timeout_s must be > 0 or None, got {self.timeout_s}")


def _is_out_of_memory(error: BaseException) -> bool:
    # The test of grpokit.engine.faults.is_out_of_memory, repeated: rewards must not import trainers.
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _call_with_deadline(fn: Callable[[], Any], timeout_s: float | None, name: str) -> Any:
    """``fn()``, or :class:`RewardTimeoutError` when it has not returned after ``timeout_s`` seconds."""
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # re-raised in the calling thread
            box["error"] = err

    worker = threading.Thread(target=target, name=f"grpokit-reward-{name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise RewardTimeoutError(f"did not return within reward_timeout_s={timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _preview(text: Any, width: int = 60) -> str:
    text = str(text)
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _batch_description(prompts: list[Any], n: int) -> str:
    shown = ", ".join(_preview(p, 40) for p in list(dict.fromkeys(map(str, prompts)))[:3])
    return f"a batch of {n} completions (prompts {shown}{', ...' if len(set(map(str, prompts))) > 3 else ''})"


def _where(error: BaseException) -> str:
    """``file:line in function`` of the innermost frame, so a one-line message points at the bug."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" at {last.filename}:{last.lineno} in {last.name}"


def validate_rewards(values: Any, n: int, entries: str = "floats") -> tuple[list[Any] | None, str | None]:
    """Check a reward function's result: ``(values, None)`` or ``(None, what is wrong with the batch)``.

    Per-value problems are left for :func:`guarded_call`: it needs the index to name the completion.
    """
    if getattr(values, "ndim", None) == 1 and hasattr(values, "tolist"):  # a 1-D tensor or NumPy array
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        return None, f"returned {type(values).__name__}; expected a list of {n} {entries}"
    if len(values) != n:
        return (
            None,
            f"returned {len(values)} {'values' if entries == 'floats' else 'entries'} for {n} completions",
        )
    return list(values), None


def _value_problem(value: Any) -> tuple[float | None, str | None]:
    """A single score as a float (``None`` stays ``None``) or what is wrong with it."""
    if value is None:
        return None, None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, numbers.Real):
        return None, f"returned a non-numeric value {value!r:.80}"
    value = float(value)
    if not math.isfinite(value):
        return None, f"returned a non-finite value {value}"
    return value, None


def guarded_call(
    fn: Callable[..., Any],
    name: str,
    prompts: list[Any],
    completions: list[str],
    columns: dict[str, list[Any]],
    policy: RewardFailurePolicy,
    reported: set[str] | None = None,
    *,
    check_values: bool = True,
    kind: str = "reward function",
) -> tuple[list[Any], int]:
    """Call one reward function on N completions under ``policy``.

    Args:
        fn: ``fn(prompts, completions, **columns)``.
        name: the metric name of the function (used in every message).
        reported: names whose first failure was already logged; ``name`` is added on its first failure.
        check_values: also require each value to be a finite number or ``None`` (off for process rewards,
            whose entries are step lists checked by the pipeline).
        kind: ``"reward function"`` or ``"process reward"``, for messages.
    Returns:
        ``(values, failures)``: N values (floats or ``None``; for ``check_values=False`` the raw entries,
        ``None`` for a failed call) and how many completions got the fallback.
    Raises:
        RewardFunctionError: under ``raise``, naming the function and the batch or the completion.
    """
    n = len(completions)
    reported = reported if reported is not None else set()
    batch_problem: str | None = None
    error: BaseException | None = None
    values: list[Any] = []  # the checked result; stays empty when the call failed as a whole
    try:
        raw = _call_with_deadline(lambda: fn(prompts, completions, **columns), policy.timeout_s, name)
    except Exception as err:
        if _is_out_of_memory(err):
            raise
        error = err
        batch_problem = (
            str(err)
            if isinstance(err, RewardTimeoutError)
            else f"raised {type(err).__name__}: {err}{_where(err)}"
        )
    else:
        checked, batch_problem = validate_rewards(raw, n, "floats" if check_values else "step lists")
        values = checked if checked is not None else []
    fallback = policy.fallback_value if check_values else None
    if batch_problem is not None:
        message = f"{kind} {name!r} {batch_problem} on {_batch_description(prompts, n)}"
        if policy.mode == "raise":
            raise RewardFunctionError(
                message
                + "; set rewards.reward_failure: fallback to score such calls with reward_fallback_value"
            ) from error
        if name not in reported:
            reported.add(name)
            log.warning(
                "%s; the %d completions get reward_fallback_value=%s. Later failures of %r are only counted "
                "in rewards/%s/failures.",
                message, n, fallback, name, name, exc_info=error,
            )  # fmt: skip
        return [fallback] * n, n
    if not check_values:
        return values, 0
    out: list[float | None] = []
    failures = 0
    for i, value in enumerate(values):
        score, problem = _value_problem(value)
        if problem is None:
            out.append(score)
            continue
        message = (
            f"{kind} {name!r} {problem} for completion {i} "
            f"(prompt {_preview(prompts[i])}, completion {_preview(completions[i])})"
        )
        if policy.mode == "raise":
            raise RewardFunctionError(message)
        if name not in reported:
            reported.add(name)
            log.warning(
                "%s; it gets reward_fallback_value=%s. Later failures of %r are only counted in rewards/%s/failures.",
                message, fallback, name, name,
            )  # fmt: skip
        out.append(fallback)
        failures += 1
    return out, failures
