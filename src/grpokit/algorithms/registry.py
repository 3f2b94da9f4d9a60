"""Name -> function registries for the swappable pieces of the algorithm.

Five kinds, each with ONE call signature so that a trainer looks a name up and calls it without
special cases (verl's ``core_algos.py`` registries, minus its GAE/GRPO if-chain in the caller):

=============  ================================================================  ==========================
kind           signature                                                         built-in names
=============  ================================================================  ==========================
"advantage"    ``fn(rewards (N,), groups: GroupIndex, eps: float) -> (N,)``      grpo, grpo_batch_norm,
                                                                                 dr_grpo, rank, rloo
"kl"           ``fn(logprobs (N, T), ref_logprobs (N, T)) -> (N, T)``            k1, k2, k3, k3+
"aggregation"  ``fn(loss_tokens (N, T), mask (N, T), max_length) -> ()``         token_mean, sequence_mean,
                                                                                 constant
"ratio"        ``fn(log_ratio (N, T), mask (N, T)) -> (N, T)``                   token, sequence
"loss"         ``fn(inputs: LossInputs, settings: LossSettings)``                grpo, gspo, cispo, sapo,
               ``-> (loss (), metrics dict[str, float])``                        ppo
=============  ================================================================  ==========================

An aggregation also declares its normaliser, the count it divides by, with
``register("aggregation", name, count=fn)``, ``fn(mask (N, T) float) -> float`` (see
``aggregation_count``): micro-batching and data-parallel normalisation derive from it.

Register your own with the decorator; the name then works everywhere a built-in name does::

    @register("advantage", "median")
    def median_baseline(rewards, groups, eps): ...

    @register("aggregation", "sum", count=lambda mask: 1.0)
    def total(loss_tokens, mask, max_length): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

KINDS = ("advantage", "kl", "aggregation", "ratio", "loss")
_REGISTRIES: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}
# The normaliser of each aggregation that declared one: fn(mask (N, T) float) -> float.
_AGGREGATION_COUNTS: dict[str, Callable] = {}


def _registry(kind: str) -> dict[str, Callable]:
    if kind not in _REGISTRIES:
        raise ValueError(f"kind={kind!r} is not a registry kind; valid kinds: {list(KINDS)}")
    return _REGISTRIES[kind]


def register(kind: str, name: str, *, count: Callable | None = None) -> Callable[[F], F]:
    """Decorator that registers ``fn`` under ``name`` in the ``kind`` registry.

    Args:
        kind: one of ``KINDS``.
        name: the name configs use.
        count: for ``kind="aggregation"`` only: ``count(mask (N, T) float) -> float``, the number the
            aggregation divides by, such that ``aggregate(l, m_k) * count(m_k) / count(m)`` summed
            over micro-batches m_k of m equals ``aggregate(l, m)``. Without it the aggregation works
            for single-batch losses but ``aggregation_count`` refuses it.

    Raises ``ValueError`` when the name is already taken: silently replacing a built-in would
    change the meaning of every config that names it.
    """
    registry = _registry(kind)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if count is not None:
        if kind != "aggregation":
            raise ValueError(f"count is declared by aggregations only, not by kind={kind!r}")
        if not callable(count):
            raise ValueError(f"count must be callable, fn(mask) -> float; got {count!r}")

    def decorator(fn: F) -> F:
        if name in registry:
            raise ValueError(
                f"{kind} name {name!r} is already registered (by {registry[name].__qualname__}); "
                "pick another name"
            )
        registry[name] = fn
        if count is not None:
            _AGGREGATION_COUNTS[name] = count
        return fn

    return decorator


def available(kind: str) -> list[str]:
    """Sorted names registered for ``kind`` ("advantage", "kl", "aggregation", "ratio" or "loss")."""
    return sorted(_registry(kind))


def lookup(kind: str, name: str, argument: str) -> Callable:
    """The function registered as ``name``; ``argument`` is the caller's parameter name for errors."""
    registry = _registry(kind)
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"{argument}={name!r} is not a known {kind} name; valid names: {available(kind)}"
        ) from None
