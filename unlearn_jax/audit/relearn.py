"""Relearning attack: fine-tune a model on a small part of the forget set (or on unrelated retain data)
for a few steps and measure the forget knowledge it regains on the *other* part.

A model that truly lost the facts (the gold model never had them) regains only what the fine-tuning
teaches directly; a model that merely hid them snaps back — the held-out facts return though they were
never shown. Fine-tuning = token-mean answer NLL, AdamW at a constant rate, every parameter trained,
through the same jitted step as unlearning.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import numpy as np

from unlearn_jax.data.sampler import EpochSampler
from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.engine.optim import OptimizerConfig, make_optimizer
from unlearn_jax.engine.state import init_state
from unlearn_jax.engine.step import make_step
from unlearn_jax.errors import UserError
from unlearn_jax.evaluation.knowledge import record_stats
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.nll import nll_loss


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """``checkpoints``: the steps (0 = before any update) at which every evaluation set is measured."""

    checkpoints: tuple[int, ...] = (0, 5, 10, 20, 40)
    lr: float = 1e-3
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        if not self.checkpoints or sorted(set(self.checkpoints)) != list(self.checkpoints) or self.checkpoints[0] < 0:
            raise UserError(f"relearning steps must be increasing and >= 0 (got {list(self.checkpoints)})")
        if not self.lr > 0 or self.batch_size < 1:
            raise UserError(f"relearning needs lr > 0 and batch size >= 1 (got {self.lr}, {self.batch_size})")


def finetune_curve(params, config: ModelConfig, train: TokenSet, evaluate: Mapping[str, TokenSet],
                   ft: FinetuneConfig) -> list[dict]:
    """Fine-tune a copy of ``params`` on ``train``; at each checkpoint one row
    ``{"step", NAME: {"acc", "nll"}, NAME + "_correct": [bool per record]}`` per evaluation set."""
    optimizer, step_fn = _finetune_step(config, ft.lr)
    state = init_state(params, optimizer, ft.seed)
    sampler = EpochSampler(len(train), min(ft.batch_size, len(train)), ft.seed)
    position, done, rows = sampler.start(), 0, []
    for checkpoint in ft.checkpoints:
        for _ in range(checkpoint - done):
            index, position = sampler.next_batch(position)
            state, _ = step_fn(state, {}, None, {"train": train.rows(index)})
        done = checkpoint
        row: dict = {"step": checkpoint}
        for name, data in evaluate.items():
            stats = record_stats(state.params, config, data)
            row[name] = {"acc": float(stats["correct"].mean()),
                         "nll": float(stats["nll"].sum() / max(stats["tokens"].sum(), 1))}
            row[f"{name}_correct"] = stats["correct"].astype(bool).tolist()
        rows.append(row)
    return rows


@functools.lru_cache(maxsize=8)
def _finetune_step(config: ModelConfig, lr: float):
    """(optimizer, jitted step) for NLL fine-tuning, built once per (config, lr) so every model and every
    curve of an audit reuses one compilation."""
    optimizer = make_optimizer(OptimizerConfig(lr=lr))
    return optimizer, make_step(lambda p, _, batch, __: nll_loss(p, config, batch["train"]), optimizer)


def fact_key(record: Mapping) -> str:
    """Records of one fact share a key: (entity, group) when both are given (templates of one fact),
    else the record id."""
    if record.get("entity") is not None and record.get("group") is not None:
        return f"{record['entity']}\x00{record['group']}"
    return str(record["id"])


def split_by_fact(records: Sequence[Mapping], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(relearn indices, held-out indices): a seeded ⌈fraction·F⌉ of the F facts go to relearning, with
    all their records, so no held-out record shares a fact with a relearned one."""
    if not 0 < fraction < 1:
        raise UserError(f"--relearn-fraction must be in (0, 1) (got {fraction})")
    keys = [fact_key(r) for r in records]
    facts = list(dict.fromkeys(keys))
    if len(facts) < 2:
        raise UserError("relearning needs at least two distinct forget facts (one to relearn, one to test)")
    n_train = min(len(facts) - 1, max(1, int(np.ceil(fraction * len(facts)))))
    chosen = {facts[i] for i in np.random.default_rng(seed).permutation(len(facts))[:n_train]}
    train = np.array([i for i, k in enumerate(keys) if k in chosen])
    held = np.array([i for i, k in enumerate(keys) if k not in chosen])
    return train, held
