"""Quantities computed once, before training, from frozen parameters: reference NLLs (NPO, DPO) and
frozen layer outputs (RMU). Batched and jitted; the last batch is padded to keep one compiled shape."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.models import llama
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.logprobs import sequence_nll, token_logprobs


def map_records(fn: Callable[[dict], dict], data: TokenSet, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Apply ``fn`` (batch dict -> dict of [B, ...] arrays) over ``data`` in batches; concatenate on the
    host. The last batch is padded with repeats of its first row and the padding dropped."""
    batch_size = min(batch_size, len(data))
    out: dict[str, list] = {}
    for begin in range(0, len(data), batch_size):
        index = np.arange(begin, min(begin + batch_size, len(data)))
        padded = np.concatenate([index, np.full(batch_size - len(index), index[0])])
        result = fn({k: jnp.asarray(v) for k, v in data.rows(padded).items()})
        for key, value in jax.device_get(result).items():
            out.setdefault(key, []).append(np.asarray(value)[: len(index)])
    return {key: np.concatenate(values) for key, values in out.items()}


@partial(jax.jit, static_argnums=1)
def _sequence_nll(params, config: ModelConfig, batch: dict) -> dict:
    return {"nll": sequence_nll(*token_logprobs(params, config, batch))}


def reference_nll(params, config: ModelConfig, data: TokenSet, batch_size: int = 64) -> np.ndarray:
    """S_ref per record: summed answer NLL (EOS included) under ``params``, float32 [N]."""
    return map_records(partial(_sequence_nll, params, config), data, batch_size)["nll"]


@partial(jax.jit, static_argnums=(1, 3))
def _layer_output(params, config: ModelConfig, batch: dict, layer: int) -> dict:
    out = llama.apply(params, config, batch["input_ids"], batch["attention_mask"], batch.get("position_ids"),
                      hidden_layers=(layer,), last_layer=layer)
    return {"hidden": out.hidden[layer].astype(jnp.float32)}


def layer_outputs(params, config: ModelConfig, data: TokenSet, layer: int, batch_size: int = 64) -> np.ndarray:
    """Output of decoder layer ``layer`` for every record, float32 [N, S, D]."""
    return map_records(lambda b: _layer_output(params, config, b, layer), data, batch_size)["hidden"]
