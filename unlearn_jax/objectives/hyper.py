"""Hyper-parameters shared by the objectives (one frozen dataclass; each method reads what it needs)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Hyper:
    """L = gamma·L_forget + alpha·L_retain.

    beta: inverse temperature of NPO / SimNPO / DPO; margin: SimNPO's γ_s; retain_loss: "nll" or "kl"
    (KL(ref‖θ), token-mean over masked retain tokens); rmu_layer: the steered layer; rmu_coeff: c, the
    norm of RMU's control vector; rmu_first_layer: layers below it are frozen, so their output is cached
    once and each step runs only layers rmu_first_layer..rmu_layer.
    """

    alpha: float = 1.0
    gamma: float = 1.0
    beta: float = 0.1
    margin: float = 0.0
    retain_loss: str = "nll"
    rmu_layer: int = 0
    rmu_coeff: float = 20.0
    rmu_first_layer: int = 0  # lowest layer RMU runs: the output of the layer below it is cached
