"""SimNPO (Fan et al. 2024, arXiv:2410.07163): NPO without a reference model, length-normalised.

L = γ·L_f + α·L_r,  L_f = −(2/β)·mean_i log σ(β·S_θ,i/|y_i| − γ_s),
S_θ,i the summed answer NLL, |y_i| the number of loss-mask tokens (answer + EOS); β = 4.5, γ_s = 0
(``hp.margin``) by default. L_r = token-mean NLL on retain (or KL with --retain-loss kl).
"""

from __future__ import annotations

import jax

from unlearn_jax.objectives.hyper import Hyper
from unlearn_jax.objectives.logprobs import sequence_nll, token_logprobs
from unlearn_jax.objectives.retain import retain_loss


def simnpo_loss(params, config, frozen: dict, forget: dict, retain: dict | None, hp: Hyper):
    lp, mask = token_logprobs(params, config, forget["answer"])
    per_token = sequence_nll(lp, mask) / mask.sum(-1)
    forget_term = -(2.0 / hp.beta) * jax.nn.log_sigmoid(hp.beta * per_token - hp.margin).mean()
    metrics = {"forget_loss": forget_term, "forget_nll": per_token.mean()}
    if hp.alpha == 0:
        return hp.gamma * forget_term, metrics
    retain_term = retain_loss(params, config, frozen, retain, hp)
    return hp.gamma * forget_term + hp.alpha * retain_term, {**metrics, "retain_loss": retain_term}
