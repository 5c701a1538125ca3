"""Gradient difference (GradDiff; Liu et al. 2022, TOFU's baseline): ascend on forget, descend on retain.

L = γ·L_f + α·L_r,  L_f = −(token-mean NLL on forget),  L_r = token-mean NLL on retain
(or KL(ref‖θ) token-mean over masked retain tokens with --retain-loss kl).
"""

from __future__ import annotations

from unlearn_jax.objectives.hyper import Hyper
from unlearn_jax.objectives.logprobs import token_logprobs, token_mean_nll
from unlearn_jax.objectives.retain import retain_loss


def graddiff_loss(params, config, frozen: dict, forget: dict, retain: dict, hp: Hyper):
    forget_nll = token_mean_nll(*token_logprobs(params, config, forget["answer"]))
    retain_term = retain_loss(params, config, frozen, retain, hp)
    return -hp.gamma * forget_nll + hp.alpha * retain_term, {"forget_nll": forget_nll, "retain_loss": retain_term}
