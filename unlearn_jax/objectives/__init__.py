"""Unlearning objectives: pure loss functions over a parameter pytree and token batches.

Every method has the same signature, ``loss(params, config, frozen, forget, retain, hp) -> (loss,
metrics)``: ``frozen`` holds what never trains (cached reference NLLs, the RMU control vector and
cached activations, reference parameters for KL); ``forget`` maps a target field ("answer",
"idk_answer") to a token batch and carries the records' ``index`` (to look up cached values);
``retain`` is a token batch with its ``index``; ``hp`` is a ``Hyper``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from unlearn_jax.objectives.dpo import dpo_loss
from unlearn_jax.objectives.ga import ga_loss
from unlearn_jax.objectives.graddiff import graddiff_loss
from unlearn_jax.objectives.hyper import Hyper
from unlearn_jax.objectives.idk import idk_loss
from unlearn_jax.objectives.npo import npo_loss
from unlearn_jax.objectives.rmu import rmu_loss
from unlearn_jax.objectives.simnpo import simnpo_loss


@dataclasses.dataclass(frozen=True)
class Method:
    """A method: its loss, the forget targets its batches need, whether it has a retain term, which
    targets' reference NLLs it caches, and its default hyper-parameters and training budget."""

    name: str
    loss: Callable
    forget_targets: tuple[str, ...] = ("answer",)
    uses_retain: bool = True
    reference: tuple[str, ...] = ()
    defaults: dict = dataclasses.field(default_factory=dict)


# Defaults tuned on the embedded world's tiny model (BUILD_NOTES.md: forget accuracy <= 0.15 with retain
# accuracy >= 0.90 where the method has a retain term). Forget and retain facts there share templates and
# values, so a retain weight of 1 lets retain accuracy fall to 0.4-0.7; 5 keeps it.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ga", ga_loss, uses_retain=False, defaults=dict(lr=1e-3, steps=20, alpha=0.0)),
        Method("graddiff", graddiff_loss, defaults=dict(lr=5e-4, steps=80, alpha=5.0)),
        Method("npo", npo_loss, reference=("answer",), defaults=dict(lr=1e-3, steps=80, alpha=5.0, beta=0.1)),
        Method("simnpo", simnpo_loss, defaults=dict(lr=1e-3, steps=80, alpha=5.0, beta=4.5)),
        Method("rmu", rmu_loss, defaults=dict(lr=1e-2, steps=160, alpha=10.0)),
        Method("idk", idk_loss, forget_targets=("idk_answer",), defaults=dict(lr=1e-3, steps=80, alpha=5.0)),
        Method("dpo", dpo_loss, forget_targets=("answer", "idk_answer"), reference=("answer", "idk_answer"),
               defaults=dict(lr=1e-3, steps=80, alpha=5.0, beta=0.1)),
    )
}

__all__ = ["METHODS", "Hyper", "Method", "dpo_loss", "ga_loss", "graddiff_loss", "idk_loss", "npo_loss",
           "rmu_loss", "simnpo_loss"]
