"""Shared log-probability helpers, always float32 (the model may compute in bf16).

A batch is a dict of int32 [B, S] arrays ``input_ids``, ``attention_mask``, ``loss_mask``
(``loss_mask[b, t] = 1``: token t is a target, predicted from position t − 1), and for packed rows
``position_ids`` (``attention_mask`` then holds segment ids; see ``data.tokenize.pack``).
Conventions (DESIGN.md §4): S_θ(x, y) = Σ_t NLL over the loss mask (EOS included); |y| = Σ loss mask;
token-mean NLL = Σ masked NLL / Σ mask over the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unlearn_jax.models import llama
from unlearn_jax.models.llama import ModelConfig


def target_logprobs(logits: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """logits [B, S, V] → (log p(x_t | x_<t) [B, S−1] float32, target mask [B, S−1] float32)."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    targets = batch["input_ids"][:, 1:]
    lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return lp, batch["loss_mask"][:, 1:].astype(jnp.float32)


def forward_logits(params, config: ModelConfig, batch: dict) -> jax.Array:
    """Logits [B, S, V]; a packed batch carries segment ids in attention_mask and its position_ids."""
    return llama.apply(params, config, batch["input_ids"], batch["attention_mask"], batch.get("position_ids")).logits


def token_logprobs(params, config: ModelConfig, batch: dict) -> tuple[jax.Array, jax.Array]:
    """One forward: per-target-token log-probs [B, S−1] and their mask [B, S−1]."""
    return target_logprobs(forward_logits(params, config, batch), batch)


def sequence_nll(lp: jax.Array, mask: jax.Array) -> jax.Array:
    """S_θ per sequence: −Σ_t mask·log p, shape [B]."""
    return -(lp * mask).sum(-1)


def token_mean_nll(lp: jax.Array, mask: jax.Array) -> jax.Array:
    """Σ masked NLL / Σ mask over the whole batch (a scalar)."""
    return -(lp * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def greedy_correct(logits: jax.Array, batch: dict) -> jax.Array:
    """[B] bool: every target token is the argmax given the reference prefix. This is exactly "greedy
    decoding after the prompt reproduces the answer tokens and EOS", computed in one forward pass."""
    hit = jnp.argmax(logits[:, :-1], axis=-1) == batch["input_ids"][:, 1:]
    return jnp.all(hit | (batch["loss_mask"][:, 1:] == 0), axis=-1)
