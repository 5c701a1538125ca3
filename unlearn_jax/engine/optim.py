"""Optimizers: AdamW or SGD, warmup then constant or cosine, optional global-norm clipping."""

from __future__ import annotations

import dataclasses

import optax

from unlearn_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine
    total_steps: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping

    def __post_init__(self):
        if self.name not in ("adamw", "sgd"):
            raise UserError(f"--optimizer {self.name!r}: choose adamw or sgd")
        if self.schedule not in ("constant", "cosine"):
            raise UserError(f"schedule {self.schedule!r}: choose constant or cosine")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        if self.max_grad_norm < 0:
            raise UserError(f"--max-grad-norm must be >= 0 (got {self.max_grad_norm}; 0 turns clipping off)")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise UserError("warmup steps and weight decay must be >= 0")


def learning_rate_schedule(c: OptimizerConfig) -> optax.Schedule:
    if c.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, c.lr, c.warmup_steps, max(c.total_steps, c.warmup_steps + 1))
    if c.warmup_steps:
        return optax.join_schedules([optax.linear_schedule(0.0, c.lr, c.warmup_steps), optax.constant_schedule(c.lr)],
                                    [c.warmup_steps])
    return optax.constant_schedule(c.lr)


def make_optimizer(c: OptimizerConfig) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(c)
    core = optax.adamw(schedule, weight_decay=c.weight_decay) if c.name == "adamw" else optax.sgd(schedule)
    return optax.chain(optax.clip_by_global_norm(c.max_grad_norm), core) if c.max_grad_norm > 0 else core
