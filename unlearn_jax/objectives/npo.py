"""Negative preference optimization (NPO; Zhang et al. 2024, arXiv:2404.05868).

L = γ·L_f + α·L_r,  L_f = (2/β)·mean_i softplus(β·(S_ref,i − S_θ,i)),
S = summed answer NLL over the loss mask (EOS included), i.e. −log π(y_i|x_i); β = 0.1 by default.
S_ref is computed once before training and cached (``frozen["ref_nll"]["answer"]``, indexed by the
batch's record index): the reference is frozen, so re-running it every step would be wasted work.
L_r = token-mean NLL on retain (or KL with --retain-loss kl).
"""

from __future__ import annotations

import jax

from unlearn_jax.objectives.hyper import Hyper
from unlearn_jax.objectives.logprobs import sequence_nll, token_logprobs
from unlearn_jax.objectives.retain import retain_loss


def npo_forget_loss(s_theta: jax.Array, s_ref: jax.Array, beta: float) -> jax.Array:
    """(2/β)·mean softplus(β·(S_ref − S_θ)) over sequences ([B] inputs)."""
    return (2.0 / beta) * jax.nn.softplus(beta * (s_ref - s_theta)).mean()


def npo_loss(params, config, frozen: dict, forget: dict, retain: dict | None, hp: Hyper):
    s_theta = sequence_nll(*token_logprobs(params, config, forget["answer"]))
    s_ref = frozen["ref_nll"]["answer"][forget["index"]]
    forget_term = npo_forget_loss(s_theta, s_ref, hp.beta)
    metrics = {"forget_loss": forget_term, "forget_nll_seq": s_theta.mean()}
    if hp.alpha == 0:
        return hp.gamma * forget_term, metrics
    retain_term = retain_loss(params, config, frozen, retain, hp)
    return hp.gamma * forget_term + hp.alpha * retain_term, {**metrics, "retain_loss": retain_term}
