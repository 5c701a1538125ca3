"""Gradient ascent (GA): push the forget answers' likelihood down.

L = γ·L_f,  L_f = −(token-mean NLL on the forget batch). No retain term: GA ignores --retain.
"""

from __future__ import annotations

from unlearn_jax.objectives.hyper import Hyper
from unlearn_jax.objectives.logprobs import token_logprobs, token_mean_nll


def ga_loss(params, config, frozen: dict, forget: dict, retain: dict | None, hp: Hyper):
    forget_nll = token_mean_nll(*token_logprobs(params, config, forget["answer"]))
    return -hp.gamma * forget_nll, {"forget_nll": forget_nll}
