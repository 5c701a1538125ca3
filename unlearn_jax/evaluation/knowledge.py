"""Per-record knowledge measurements from one teacher-forced forward pass per batch.

``correct``: greedy decoding after [BOS] + prompt reproduces the answer tokens and EOS — computed as
"every target token is the argmax given the reference prefix", which is the same thing in one pass.
``nll``: S_θ, the summed answer NLL (EOS included); ``tokens``: |y|; mean answer NLL = nll / tokens.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.logprobs import forward_logits, greedy_correct, sequence_nll, target_logprobs
from unlearn_jax.objectives.reference import map_records


@partial(jax.jit, static_argnums=1)
def _batch_stats(params, config: ModelConfig, batch: dict) -> dict:
    logits = forward_logits(params, config, batch)
    lp, mask = target_logprobs(logits, batch)
    return {"nll": sequence_nll(lp, mask), "tokens": mask.sum(-1), "correct": greedy_correct(logits, batch)}


def record_stats(params, config: ModelConfig, data: TokenSet, batch_size: int = 64) -> dict[str, np.ndarray]:
    """{"nll", "tokens", "correct"}: one entry per record of ``data`` (one compilation per set)."""
    return map_records(partial(_batch_stats, params, config), data, batch_size)


def summarize(stats: dict[str, np.ndarray]) -> dict[str, float]:
    """accuracy (share of records answered correctly) and mean answer NLL (token-mean over the set)."""
    return {"acc": float(stats["correct"].mean()), "nll": float(stats["nll"].sum() / max(stats["tokens"].sum(), 1))}
