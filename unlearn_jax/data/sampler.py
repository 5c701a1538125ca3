"""Host-side, seeded, resumable batch order.

The sampler is a pure function of (seed, position): ``next_batch(position) -> (indices, position)``.
A position is a small JSON-able dict saved with every checkpoint, so a resumed run draws exactly the
batches an uninterrupted one would. Batches always have ``batch_size`` rows (static shapes): an epoch
that runs out mid-batch is completed from the next epoch's order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unlearn_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class EpochSampler:
    """Uniform sampling without replacement within an epoch; each epoch's order is
    ``default_rng([seed, epoch]).permutation(n)`` (or 0..n−1 with ``shuffle=False``)."""

    num_items: int
    batch_size: int
    seed: int
    shuffle: bool = True

    def __post_init__(self):
        if self.num_items < 1:
            raise UserError("cannot sample batches from an empty set")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1 (got {self.batch_size})")

    @staticmethod
    def start() -> dict:
        return {"epoch": 0, "offset": 0}

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_items)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

    def next_batch(self, position: dict) -> tuple[np.ndarray, dict]:
        return self.take(position, self.batch_size)

    def take(self, position: dict, count: int) -> tuple[np.ndarray, dict]:
        """The next ``count`` items from ``position``, and the position after them."""
        epoch, offset = position["epoch"], position["offset"]
        picked: list[np.ndarray] = []
        need = count
        while need:
            order = self.order(epoch)[offset:]
            take = order[:need]
            picked.append(take)
            need -= len(take)
            offset += len(take)
            if offset == self.num_items:
                epoch, offset = epoch + 1, 0
        return np.concatenate(picked), {"epoch": epoch, "offset": offset}
