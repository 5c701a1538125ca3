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


@dataclasses.dataclass(frozen=True)
class CurriculumSampler:
    """Curriculum over ``stages`` stages of (about) equal step budgets, ``total_steps`` in all.

    ``memorization[i]``: higher = more memorized. ``mode="confidence"`` ranks items most memorized first,
    ``"reverse"`` least memorized first (the control); stage s samples uniformly (an ``EpochSampler``
    seeded by (seed, s)) from the first ⌈(s+1)·N/K⌉ ranked items, so each stage adds the next slice.
    With ``rescore``, ``next_batch`` re-ranks at every stage boundary from ``memorization_now()`` (the
    model being unlearned, scored again) and keeps that ranking in the position. The position
    {"stage", "step", "inner"[, "ranking"]} makes it resumable mid-stage.
    """

    memorization: tuple[float, ...]
    batch_size: int
    seed: int
    stages: int
    total_steps: int
    mode: str = "confidence"
    rescore: bool = False

    def __post_init__(self):
        if self.mode not in ("confidence", "reverse"):
            raise UserError(f"--curriculum {self.mode!r}: choose none, confidence or reverse")
        if not 1 <= self.stages <= len(self.memorization):
            raise UserError(f"--stages must be between 1 and the number of forget records "
                            f"({len(self.memorization)}), got {self.stages}")
        if self.total_steps < self.stages:
            raise UserError(f"--steps {self.total_steps} is fewer than --stages {self.stages}")

    def ranking(self, memorization=None) -> np.ndarray:
        scores = np.asarray(self.memorization if memorization is None else memorization, np.float64)
        return np.lexsort((np.arange(len(scores)), -scores if self.mode == "confidence" else scores))

    def stage_items(self, stage: int, ranking=None) -> np.ndarray:
        ranking = self.ranking() if ranking is None else np.asarray(ranking)
        return ranking[: -(-(stage + 1) * len(ranking) // self.stages)]

    def stage_end(self, stage: int) -> int:
        """The global step at which ``stage`` ends (the last stage takes the remainder)."""
        return self.total_steps if stage == self.stages - 1 else (stage + 1) * (self.total_steps // self.stages)

    @staticmethod
    def start() -> dict:
        return {"stage": 0, "step": 0, "inner": EpochSampler.start()}

    def next_batch(self, position: dict, memorization_now=None) -> tuple[np.ndarray, dict]:
        stage, step, inner = position["stage"], position["step"], position["inner"]
        ranking = position.get("ranking")
        if step >= self.stage_end(stage) and stage < self.stages - 1:
            stage, inner = stage + 1, EpochSampler.start()
            if self.rescore:
                if memorization_now is None:
                    raise ValueError("a rescoring curriculum needs memorization_now at stage boundaries")
                ranking = self.ranking(memorization_now()).tolist()
        items = self.stage_items(stage, ranking)
        index, inner = EpochSampler(len(items), self.batch_size, self.seed * 1000 + stage).next_batch(inner)
        new_position = {"stage": stage, "step": step + 1, "inner": inner}
        if ranking is not None:
            new_position["ranking"] = ranking
        return items[index], new_position
