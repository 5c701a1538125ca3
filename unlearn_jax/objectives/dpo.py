"""DPO toward refusal (TOFU's IdK-DPO; Rafailov et al. 2023): the IdK answer is preferred (winner w),
the true answer dispreferred (loser l).

L = γ·L_f + α·L_r,
L_f = −(2/β)·mean_i log σ(β·[(S_ref,w − S_θ,w) − (S_ref,l − S_θ,l)]),
S = summed answer NLL (−log π(y|x)); β = 0.1. S_ref for both answers is computed once and cached.
L_r = token-mean NLL on retain (or KL with --retain-loss kl).
"""

from __future__ import annotations

import jax

from unlearn_jax.objectives.hyper import Hyper
from unlearn_jax.objectives.logprobs import sequence_nll, token_logprobs
from unlearn_jax.objectives.retain import retain_loss


def dpo_loss(params, config, frozen: dict, forget: dict, retain: dict | None, hp: Hyper):
    s_win = sequence_nll(*token_logprobs(params, config, forget["idk_answer"]))
    s_lose = sequence_nll(*token_logprobs(params, config, forget["answer"]))
    ref_win = frozen["ref_nll"]["idk_answer"][forget["index"]]
    ref_lose = frozen["ref_nll"]["answer"][forget["index"]]
    margin = (ref_win - s_win) - (ref_lose - s_lose)
    forget_term = -(2.0 / hp.beta) * jax.nn.log_sigmoid(hp.beta * margin).mean()
    metrics = {"forget_loss": forget_term, "forget_nll_seq": s_lose.mean()}
    if hp.alpha == 0:
        return hp.gamma * forget_term, metrics
    retain_term = retain_loss(params, config, frozen, retain, hp)
    return hp.gamma * forget_term + hp.alpha * retain_term, {**metrics, "retain_loss": retain_term}
