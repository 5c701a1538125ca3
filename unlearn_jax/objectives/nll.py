"""Plain next-token NLL: the pretraining objective (and the retain term of most methods)."""

from __future__ import annotations

from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.logprobs import token_logprobs, token_mean_nll


def nll_loss(params, config: ModelConfig, batch: dict) -> tuple:
    """L = token-mean NLL over the loss mask of ``batch``."""
    lp, mask = token_logprobs(params, config, batch)
    loss = token_mean_nll(lp, mask)
    return loss, {"nll": loss}
