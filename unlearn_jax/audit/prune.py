"""Pruning attacks on the audited kernels (the decoder's linear layers, as in ``quantize``).

- magnitude: zero the fraction ``s`` of each kernel's weights with the smallest |w| (per matrix);
- Wanda (Sun et al. 2023): score |W_io| · ‖X_i‖₂, ‖X_i‖₂ the norm of input feature i over the real
  tokens of calibration (retain) data; zero the fraction ``s`` lowest-scoring weights of each output
  column o (Wanda's per-output comparison group).
Ties at the threshold are broken by position (a stable sort), so exactly ⌊s·n⌋ weights are zeroed.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.audit.quantize import QUANTIZED_KERNEL, map_kernels
from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.models import llama
from unlearn_jax.models.llama import ModelConfig

DEFAULT_SPARSITIES = (0.1, 0.3, 0.5)


def _zero_lowest(kernel: jax.Array, score: jax.Array, sparsity: float, axis: int | None) -> jax.Array:
    """Zero the ⌊sparsity·n⌋ lowest-``score`` entries of ``kernel`` (over all of it, or along ``axis``)."""
    if axis is None:
        flat = score.reshape(-1)
        k = int(sparsity * flat.size)
        drop = jnp.zeros(flat.size, bool).at[jnp.argsort(flat, stable=True)[:k]].set(True)
        return jnp.where(drop.reshape(kernel.shape), 0, kernel)
    k = int(sparsity * kernel.shape[axis])
    ranks = jnp.argsort(jnp.argsort(score, axis=axis, stable=True), axis=axis)
    return jnp.where(ranks < k, 0, kernel)


@partial(jax.jit, static_argnums=1)
def magnitude_prune(params, sparsity: float):
    """``params`` with the ⌊s·n⌋ smallest-magnitude weights of every audited kernel zeroed."""
    return map_kernels(lambda _, w: _zero_lowest(w, jnp.abs(w), sparsity, None), params)


@partial(jax.jit, static_argnums=2)
def wanda_prune(params, input_norms: dict[str, jax.Array], sparsity: float):
    """``params`` with, in every output column of every audited kernel, the ⌊s·n_in⌋ weights of lowest
    |W_io|·‖X_i‖ zeroed; ``input_norms[path]`` [n_in] from ``input_feature_norms``."""
    return map_kernels(
        lambda path, w: _zero_lowest(w, jnp.abs(w) * input_norms[path][:, None], sparsity, 0), params)


@partial(jax.jit, static_argnums=1)
def _input_sums(params, config: ModelConfig, batch: dict, row_weight: jax.Array) -> dict:
    sums = {}
    real = (batch["attention_mask"] > 0).astype(jnp.float32) * row_weight[:, None]

    def record_inputs(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            path = "/".join(context.module.path) + "/kernel"
            if QUANTIZED_KERNEL.match(path):
                x = args[0].astype(jnp.float32)
                sums[path] = jnp.einsum("bs,bsi->i", real, x * x)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record_inputs):
        llama.apply(params, config, batch["input_ids"], batch["attention_mask"], batch.get("position_ids"),
                    return_logits=False)
    return sums


def input_feature_norms(params, config: ModelConfig, data: TokenSet, batch_size: int = 64) -> dict[str, jax.Array]:
    """‖X_i‖₂ over every real token of ``data`` for the input features of each audited kernel."""
    batch_size = min(batch_size, len(data))
    totals = None
    for begin in range(0, len(data), batch_size):
        index = np.arange(begin, min(begin + batch_size, len(data)))
        weight = np.concatenate([np.ones(len(index)), np.zeros(batch_size - len(index))]).astype(np.float32)
        padded = np.concatenate([index, np.full(batch_size - len(index), index[0])])
        sums = _input_sums(params, config, {k: jnp.asarray(v) for k, v in data.rows(padded).items()}, weight)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return {path: jnp.sqrt(v) for path, v in totals.items()}
