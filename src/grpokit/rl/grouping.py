"""Grouping strategies: which episodes share a baseline in the group-relative advantage.

In GRPO for language models a group is the G answers to one prompt. For a general policy the group
is a choice (seed 003: "partitions episodes or trajectories into groups based on similarity,
context, or task"), and it decides what the advantage measures: an episode is judged only against
the episodes of its own group, so a group should hold episodes whose returns differ because of the
actions taken, not because of where they started.

A grouping is any callable ``(EpisodeBatch) -> group_ids (N,) long``. Built-ins, by name
(:func:`make_grouping`; add your own with :func:`register_grouping` or :func:`key_grouping`):

- ``same_start``: episodes with the same reset seed (and task) form a group; with the default
  sampling plan (B start states x G episodes) these are the G episodes of one start state, the
  direct analogue of G answers to one prompt.
- ``task``: episodes with the same task id, read from ``reset_info[key]`` (the env reports it) or,
  when the env does not, from the episode's ``StartState.task`` (the collector's per-task kwargs).
- ``similarity``: k-means clustering (scipy's ``kmeans2`` with k-means++ seeding) of a feature
  vector of each episode's start observation s_0.
- ``batch``: one group holding every episode (a batch-mean baseline, REINFORCE-style).

Group sizes may differ (tasks are drawn at random; clusters are uneven); the advantage estimators
of :mod:`grpokit.algorithms` accept any sizes, and a group of one gets advantage 0.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from grpokit.rl.rollout import EpisodeBatch, StartState

Grouping = Callable[[EpisodeBatch], torch.Tensor]  # batch -> group_ids (N,) long

_GROUPINGS: dict[str, Callable[..., Grouping]] = {}


def register_grouping(name: str) -> Callable[[Callable[..., Grouping]], Callable[..., Grouping]]:
    """Decorator registering a grouping factory ``(**options) -> Grouping`` under ``name``.

    Raises ``ValueError`` if the name is taken: replacing a built-in silently would change the
    meaning of every config that names it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(factory: Callable[..., Grouping]) -> Callable[..., Grouping]:
        if name in _GROUPINGS:
            raise ValueError(f"grouping {name!r} is already registered; pick another name")
        _GROUPINGS[name] = factory
        return factory

    return decorator


def available_groupings() -> list[str]:
    """Sorted names of the registered grouping strategies."""
    return sorted(_GROUPINGS)


def make_grouping(name: str, **options: Any) -> Grouping:
    """The grouping registered as ``name``, configured with ``options``.

    Raises:
        ValueError: an unknown name (the valid ones are listed) or an option the strategy does not take.
    """
    if name not in _GROUPINGS:
        raise ValueError(f"grouping={name!r} is not a known grouping; valid names: {available_groupings()}")
    try:
        return _GROUPINGS[name](**options)
    except TypeError as err:
        raise ValueError(f"grouping {name!r} does not accept the options {sorted(options)}: {err}") from None


def group_ids_from_keys(keys: Sequence[Hashable]) -> torch.Tensor:
    """(N,) long group ids: equal keys get equal ids, numbered 0.. in order of first appearance."""
    numbering: dict[Hashable, int] = {}
    return torch.tensor([numbering.setdefault(k, len(numbering)) for k in keys], dtype=torch.long)


def check_group_ids(group_ids: object, num_episodes: int) -> torch.Tensor:
    """Validate a grouping's output: a (N,) integer tensor with one id per episode."""
    if not isinstance(group_ids, torch.Tensor):
        raise ValueError(
            f"a grouping must return a torch.Tensor of group ids, got {type(group_ids).__name__}"
        )
    if group_ids.shape != (num_episodes,):
        raise ValueError(
            f"a grouping must return group ids of shape ({num_episodes},), got {tuple(group_ids.shape)}"
        )
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group ids must be integers, got dtype {group_ids.dtype}")
    return group_ids.long()


@dataclass(frozen=True)
class EpisodeStart:
    """What a key function sees of episode ``index``: how it started, nothing about its outcome."""

    index: int
    start: StartState
    reset_info: dict[str, Any]
    start_observation: np.ndarray  # (*obs_shape,)


def key_grouping(key_fn: Callable[[EpisodeStart], Hashable]) -> Grouping:
    """A grouping from a user key: episodes whose ``key_fn(EpisodeStart)`` are equal share a group.

    Example: group Pendulum episodes by the sign of the initial angular velocity::

        grouping = key_grouping(lambda e: bool(e.start_observation[2] > 0))
    """
    if not callable(key_fn):
        raise ValueError(f"key_fn must be callable, got {key_fn!r}")

    def grouping(batch: EpisodeBatch) -> torch.Tensor:
        s0 = batch.start_observations.numpy()  # (N, *obs_shape)
        keys = [
            key_fn(EpisodeStart(i, batch.starts[i], batch.reset_infos[i], s0[i]))
            for i in range(batch.num_episodes)
        ]
        return group_ids_from_keys(keys)

    return grouping


@register_grouping("same_start")
def same_start() -> Grouping:
    """Group episodes that started from the same ``StartState`` (reset seed and task)."""
    return lambda batch: group_ids_from_keys(batch.starts)


@register_grouping("batch")
def whole_batch() -> Grouping:
    """One group with every episode."""
    return lambda batch: torch.zeros(batch.num_episodes, dtype=torch.long)


@register_grouping("task")
def task(key: str = "task") -> Grouping:
    """Group by task: ``reset_info[key]`` when the env reports it, else ``StartState.task``.

    Args:
        key: the reset-info key holding the task id (any hashable value).

    Raises (when called):
        ValueError: an episode with neither (its index is named): without a task the strategy
            would silently fall back to one group.
    """

    def grouping(batch: EpisodeBatch) -> torch.Tensor:
        keys = []
        for i, (start, info) in enumerate(zip(batch.starts, batch.reset_infos)):
            if key in info:
                value = info[key]
                keys.append(value.item() if isinstance(value, np.ndarray | np.generic) else value)
            elif start.task is not None:
                keys.append(start.task)
            else:
                raise ValueError(
                    f"grouping 'task': episode {i} has no task id: its reset info has no {key!r} key "
                    f"(keys: {sorted(info)}) and it was not started with a task (set tasks= in the config)"
                )
        return group_ids_from_keys(keys)

    return grouping


@register_grouping("similarity")
def similarity(
    num_clusters: int = 8,
    features: Callable[[np.ndarray], np.ndarray] | None = None,
    feature_indices: Sequence[int] | None = None,
    standardize: bool = False,
    seed: int = 0,
    iterations: int = 20,
) -> Grouping:
    """Cluster episodes by their start observation with k-means (Lloyd's algorithm, k-means++ seeding).

    Args:
        num_clusters: k. Fewer clusters are formed when there are fewer distinct feature rows (then
            each distinct row is its own group) or when a cluster ends up empty.
        features: maps start observations (N, *obs_shape) to features (N, F); default: flatten.
        feature_indices: keep only these columns of the flattened observation (a config-friendly
            alternative to ``features``, e.g. the task part of the observation).
        standardize: scale each feature to unit variance before clustering (constant features are
            left as they are).
        seed: seeds the k-means++ initialisation, so a batch always gets the same groups.
        iterations: Lloyd iterations.
    """
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if features is not None and not callable(features):
        raise ValueError(f"features must be callable or None, got {features!r}")

    def grouping(batch: EpisodeBatch) -> torch.Tensor:
        s0 = batch.start_observations.numpy()  # (N, *obs_shape)
        x = np.asarray(features(s0) if features is not None else s0.reshape(len(s0), -1), dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != len(s0):
            raise ValueError(f"features must return an (N, F) = ({len(s0)}, F) array, got shape {x.shape}")
        if feature_indices is not None:
            x = x[:, list(feature_indices)]  # (N, F')
        if x.shape[1] == 0:  # one group in disguise: say why instead
            raise ValueError(
                "grouping 'similarity' got no features to cluster (a text environment reports them as "
                "reset_info['features'] in reset)"
            )
        if standardize:
            std = x.std(0)
            x = x / np.where(std > 0, std, 1.0)
        distinct, inverse = np.unique(x, axis=0, return_inverse=True)
        if len(distinct) <= num_clusters:
            # k-means cannot do better than one group per distinct point (and k-means++ needs
            # at least k distinct points to seed k centroids).
            return group_ids_from_keys(inverse.reshape(-1).tolist())
        try:
            from scipy.cluster.vq import kmeans2
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError("grouping 'similarity' needs scipy>=1.15: pip install scipy") from err
        import warnings

        with warnings.catch_warnings():
            # An empty cluster is harmless here: it just means fewer groups.
            warnings.filterwarnings("ignore", message="One of the clusters is empty")
            _, labels = kmeans2(x, num_clusters, iter=iterations, minit="++", rng=np.random.default_rng(seed))
        return group_ids_from_keys(labels.tolist())

    return grouping
