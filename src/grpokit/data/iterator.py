"""An endless, seeded, resumable stream of prompt batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class PromptIterator:
    """Batches of rows, epoch after epoch, reshuffled with a seed per epoch.

    The order of epoch ``e`` is a permutation drawn from ``numpy.random.default_rng([seed, e])``: it
    depends only on (seed, epoch), so the state is two integers and a resumed run gets exactly the
    batches it would have got.

    Args:
        dataset: any sequence of rows (a :class:`~grpokit.data.PromptDataset`, a list of dicts).
        batch_size: rows per batch (B prompts).
        seed: shuffling seed.
        shuffle: False keeps the dataset order in every epoch.
        drop_last: drop the last, smaller batch of each epoch (so every batch has ``batch_size`` rows);
            otherwise it is returned as is.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError("dataset is empty")
        if drop_last and len(dataset) < batch_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than the dataset ({len(dataset)} rows) and drop_last=True: "
                "no batch would ever be produced"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0  # index into this epoch's order of the next row to return
        self._order = self._epoch_order(0)

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def __iter__(self) -> PromptIterator:
        return self

    def __next__(self) -> list[Any]:
        n = len(self.dataset)
        remaining = n - self.position
        if remaining == 0 or (self.drop_last and remaining < self.batch_size):
            self.epoch += 1
            self.position = 0
            self._order = self._epoch_order(self.epoch)
        indices = self._order[self.position : self.position + self.batch_size]
        self.position += len(indices)
        return [self.dataset[int(i)] for i in indices]

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_rows": len(self.dataset),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` (from :meth:`state_dict` of an iterator over the same dataset)."""
        for key in ("batch_size", "num_rows", "seed"):
            current = {"batch_size": self.batch_size, "num_rows": len(self.dataset), "seed": self.seed}[key]
            if key in state and state[key] != current:
                raise ValueError(f"state {key}={state[key]} does not match this iterator's {key}={current}")
        position = int(state["position"])
        if not 0 <= position <= len(self.dataset):
            raise ValueError(f"state position={position} is outside the dataset ({len(self.dataset)} rows)")
        self.epoch = int(state["epoch"])
        self.position = position
        self._order = self._epoch_order(self.epoch)
