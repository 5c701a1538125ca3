"""Representation misdirection for unlearning (RMU; Li et al. 2024, WMDP, arXiv:2403.03218).

h = output of decoder layer ``rmu_layer``; u = c·v/‖v‖, v ~ U[0,1)^D drawn once from the run's seed;
L = γ·L_f + α·L_r,  L_f = mean over steered positions of (1/D)‖h_θ(x_f) − u‖²,
L_r = the same mean of (1/D)‖h_θ(x_r) − h_frozen(x_r)‖²; α = 100 by default.
Steered positions: those that predict a loss-mask token (the last prompt token and the answer tokens
before EOS for QA; every token but the last for text) — where the forgotten answer is produced.
Only the trainable parameters (default: the MLP down-projections of the 3 layers up to ``rmu_layer``)
get gradients. The forward stops at ``rmu_layer`` (nothing above can change the loss) and starts at
``rmu_first_layer`` from cached outputs of the frozen layers below; h_frozen(x_r) is cached too
(``frozen["retain_target"]``) or, when too large to cache, recomputed from ``frozen["frozen_params"]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.models import llama
from unlearn_jax.objectives.hyper import Hyper


def control_vector(dim: int, coeff: float, seed: int) -> np.ndarray:
    """u = c·v/‖v‖ with v ~ U[0,1)^D from ``seed`` (float32 [D])."""
    v = np.random.default_rng(seed).random(dim, dtype=np.float32)
    return (coeff * v / np.linalg.norm(v)).astype(np.float32)


def steered_positions(batch: dict) -> jax.Array:
    """[B, S] float32: 1 at positions t whose next token t+1 is in the loss mask."""
    return jnp.pad(batch["loss_mask"][:, 1:], ((0, 0), (0, 1))).astype(jnp.float32)


def steered_layer_output(params, config, batch: dict, hp: Hyper, prefix: jax.Array | None) -> jax.Array:
    """Output of layer ``hp.rmu_layer`` [B, S, D] float32, running only the layers that can matter."""
    out = llama.apply(params, config, batch["input_ids"], batch["attention_mask"], batch.get("position_ids"),
                      hidden_layers=(hp.rmu_layer,), last_layer=hp.rmu_layer,
                      start_layer=hp.rmu_first_layer, hidden_in=prefix)
    return out.hidden[hp.rmu_layer].astype(jnp.float32)


def masked_mse(h: jax.Array, target: jax.Array, positions: jax.Array) -> jax.Array:
    """mean over masked positions of (1/D)‖h − target‖²."""
    per_position = jnp.mean(jnp.square(h - target), axis=-1)
    return (per_position * positions).sum() / jnp.maximum(positions.sum(), 1.0)


def _prefix(frozen: dict, name: str, batch: dict):
    cache = frozen.get(f"{name}_prefix")
    return None if cache is None else cache[batch["index"]]


def rmu_loss(params, config, frozen: dict, forget: dict, retain: dict, hp: Hyper):
    f = forget["answer"]
    h_f = steered_layer_output(params, config, f, hp, _prefix(frozen, "forget", forget))
    forget_term = masked_mse(h_f, frozen["control"], steered_positions(f))
    h_r = steered_layer_output(params, config, retain, hp, _prefix(frozen, "retain", retain))
    if "retain_target" in frozen:
        target = frozen["retain_target"][retain["index"]]
    else:
        whole = dataclasses.replace(hp, rmu_first_layer=0)
        target = steered_layer_output(frozen["frozen_params"], config, retain, whole, None)
    retain_term = masked_mse(h_r, jax.lax.stop_gradient(target), steered_positions(retain))
    return hp.gamma * forget_term + hp.alpha * retain_term, {"forget_loss": forget_term, "retain_loss": retain_term}
