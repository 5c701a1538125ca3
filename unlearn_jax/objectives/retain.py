"""The retain term shared by GradDiff, NPO, SimNPO, IdK and DPO."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unlearn_jax.objectives.hyper import Hyper
from unlearn_jax.objectives.logprobs import forward_logits, target_logprobs, token_mean_nll


def kl_ref_to_model(logits: jax.Array, ref_logits: jax.Array, batch: dict) -> jax.Array:
    """KL(ref‖θ) = Σ_v p_ref(v) (log p_ref(v) − log p_θ(v)) at every position that predicts a loss-mask
    token, averaged over those positions (token-mean over the whole batch)."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    ref_logp = jax.nn.log_softmax(ref_logits[:, :-1].astype(jnp.float32), axis=-1)
    kl = (jnp.exp(ref_logp) * (ref_logp - logp)).sum(-1)
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
    return (kl * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def retain_loss(params, config, frozen: dict, retain: dict, hp: Hyper) -> jax.Array:
    """Token-mean NLL on the retain batch, or KL(ref‖θ) with ``hp.retain_loss == "kl"`` (the frozen
    reference parameters are ``frozen["ref_params"]``)."""
    logits = forward_logits(params, config, retain)
    if hp.retain_loss == "kl":
        ref_logits = jax.lax.stop_gradient(forward_logits(frozen["ref_params"], config, retain))
        return kl_ref_to_model(logits, ref_logits, retain)
    return token_mean_nll(*target_logprobs(logits, retain))
