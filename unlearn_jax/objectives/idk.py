"""IdK fine-tuning (TOFU's "I don't know" baseline; the seed's y_f target): learn a refusal instead.

L = γ·L_f + α·L_r,  L_f = token-mean NLL of ``idk_answer`` given the forget prompt,
L_r = token-mean NLL on retain (or KL with --retain-loss kl).
"""

from __future__ import annotations

from unlearn_jax.objectives.hyper import Hyper
from unlearn_jax.objectives.logprobs import token_logprobs, token_mean_nll
from unlearn_jax.objectives.retain import retain_loss


def idk_loss(params, config, frozen: dict, forget: dict, retain: dict | None, hp: Hyper):
    forget_term = token_mean_nll(*token_logprobs(params, config, forget["idk_answer"]))
    if hp.alpha == 0:
        return hp.gamma * forget_term, {"forget_loss": forget_term}
    retain_term = retain_loss(params, config, frozen, retain, hp)
    return hp.gamma * forget_term + hp.alpha * retain_term, {"forget_loss": forget_term, "retain_loss": retain_term}
