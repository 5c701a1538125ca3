"""Memorization scores per record, all from one jitted forward pass per batch.

Over the record's target tokens (the loss mask: answer + EOS for QA, every token after BOS for text),
with log p_t = log p(x_t | x_<t):
  loss        mean target NLL, −(1/n)·Σ_t log p_t (lower = more memorized);
  zlib        loss / zlib_bytes, zlib_bytes = len(zlib.compress(target text, UTF-8)) (Carlini et al. 2021);
  mink        Min-K% (Shi et al. 2024): mean of the m lowest log p_t, m = max(1, ⌊k·n⌋) (floor, at least
              one token); higher = more memorized;
  minkpp      Min-K%++ (Zhang et al. 2024): the same lowest-m mean of z_t = (log p_t − μ_t)/σ_t, where
              μ_t = Σ_v p_v log p_v and σ_t² = Σ_v p_v (log p_v)² − μ_t² (clamped ≥ 1e-6) are the mean
              and variance of log p over the model's full next-token distribution at t; higher = more
              memorized. μ_t and σ_t come from the same logits as log p_t: no second forward pass;
  exact_match share of target tokens that are the argmax;
  correct     every target token is the argmax (greedy decoding reproduces the answer and EOS).
``mink``/``minkpp`` use the requested k; ``mink_k04``/``minkpp_k04`` use k = 0.4 (the MUSE /
open-unlearning default).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.errors import UserError
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.logprobs import forward_logits
from unlearn_jax.objectives.reference import map_records

SCORE_NAMES = ("loss", "zlib", "mink", "minkpp", "mink_k04", "minkpp_k04", "exact_match", "correct")


def lowest_k_mean(values: jax.Array, mask: jax.Array, k: float) -> jax.Array:
    """Per row, the mean of the m = max(1, ⌊k·n⌋) smallest masked values (n = masked count). [B, T] -> [B]."""
    n = mask.sum(-1)
    m = jnp.maximum(1, jnp.floor(k * n)).astype(jnp.int32)
    ordered = jnp.sort(jnp.where(mask > 0, values, jnp.inf), axis=-1)
    take = jnp.arange(values.shape[-1])[None, :] < m[:, None]
    return jnp.where(take, ordered, 0.0).sum(-1) / m


def token_scores(logits: jax.Array, batch: dict, ks: Sequence[float]) -> dict[str, jax.Array]:
    """Every per-record score but zlib from one set of logits [B, S, V]."""
    # log p_v = l_v − lse, so μ = E_p[l] − lse and σ² = Var_p(log p) = Var_p(l): three fused reductions
    # over the logits, no [B, S, V] log-softmax written out.
    logits32 = logits[:, :-1].astype(jnp.float32)
    targets = batch["input_ids"][:, 1:]
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
    lse = jax.nn.logsumexp(logits32, axis=-1)
    probs = jnp.exp(logits32 - lse[..., None])
    mean_logit = (probs * logits32).sum(-1)
    var = jnp.maximum((probs * jnp.square(logits32 - mean_logit[..., None])).sum(-1), 1e-6)
    lp = jnp.take_along_axis(logits32, targets[..., None], axis=-1)[..., 0] - lse
    z = (lp - (mean_logit - lse)) / jnp.sqrt(var)
    n = jnp.maximum(mask.sum(-1), 1.0)
    hit = (jnp.argmax(logits[:, :-1], axis=-1) == targets).astype(jnp.float32)
    out = {"loss": -(lp * mask).sum(-1) / n, "exact_match": (hit * mask).sum(-1) / n,
           "correct": ((hit * mask).sum(-1) == mask.sum(-1))}
    for k in ks:
        out[f"mink@{k}"] = lowest_k_mean(lp, mask, k)
        out[f"minkpp@{k}"] = lowest_k_mean(z, mask, k)
    return out


@partial(jax.jit, static_argnums=(1, 3))
def _score_batch(params, config: ModelConfig, batch: dict, ks: tuple[float, ...]) -> dict:
    return token_scores(forward_logits(params, config, batch), batch, ks)


def zlib_bytes(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


def score_records(params, config: ModelConfig, data: TokenSet, target_texts: Sequence[str], k: float = 0.2,
                  batch_size: int = 64) -> list[dict]:
    """One dict per record: {"id", "loss", "zlib", "mink", "minkpp", "mink_k04", "minkpp_k04",
    "exact_match", "correct"} (see the module docstring); ``target_texts`` are the scored texts (answers
    or texts) for zlib."""
    if not 0 < k <= 1:
        raise UserError(f"--k must be in (0, 1] (got {k})")
    ks = tuple(dict.fromkeys((float(k), 0.4)))
    raw = map_records(lambda b: _score_batch(params, config, b, ks), data, batch_size)
    rows = []
    for i, record_id in enumerate(data.record_ids):
        loss = float(raw["loss"][i])
        rows.append({"id": record_id, "loss": loss, "zlib": loss / zlib_bytes(target_texts[i]),
                     "mink": float(raw[f"mink@{float(k)}"][i]), "minkpp": float(raw[f"minkpp@{float(k)}"][i]),
                     "mink_k04": float(raw["mink@0.4"][i]), "minkpp_k04": float(raw["minkpp@0.4"][i]),
                     "exact_match": float(raw["exact_match"][i]), "correct": bool(raw["correct"][i])})
    return rows


MEMORIZED_HIGH = {"mink": True, "minkpp": True, "mink_k04": True, "minkpp_k04": True, "exact_match": True,
                  "correct": True, "loss": False, "zlib": False}


def memorization(rows: list[dict], score: str) -> list[float]:
    """Each row's ``score`` signed so that higher = more memorized (loss and zlib are negated)."""
    if score not in MEMORIZED_HIGH:
        raise UserError(f"--select {score!r}: choose one of {', '.join(MEMORIZED_HIGH)}")
    sign = 1.0 if MEMORIZED_HIGH[score] else -1.0
    return [sign * float(r[score]) for r in rows]


def least_memorized(rows: list[dict], score: str, fraction: float) -> list[int]:
    """Indices of the ⌊fraction·N⌋ least memorized rows by ``score`` (lowest Min-K%/Min-K%++/exact match,
    highest loss/zlib; for "correct", wrong answers first, ties broken by higher loss), ties by index."""
    values = memorization(rows, score)
    if not 0 <= fraction < 1:
        raise UserError(f"--drop must be in [0, 1) (got {fraction})")

    def key(i):
        tie = rows[i]["loss"] if score == "correct" else 0.0
        return (values[i], -tie, i)

    count = int(np.floor(fraction * len(rows)))
    return sorted(range(len(rows)), key=key)[:count]
