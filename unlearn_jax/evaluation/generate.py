"""Greedy decoding: [BOS] + prompt, then argmax tokens until EOS or ``max_new_tokens``.

One jitted loop per batch shape (``lax.fori_loop`` over new tokens, a full forward each step: no KV
cache, which costs O(S) per token and is fine for the short answers of QA evaluation). Rows are right-
padded, so each row writes its next token at its own current length.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.tokenize import encode_prompts, special_ids
from unlearn_jax.models import llama
from unlearn_jax.models.llama import ModelConfig


@partial(jax.jit, static_argnums=(1, 4, 5))
def _greedy(params, config: ModelConfig, ids: jax.Array, lengths: jax.Array, max_new_tokens: int, eos: int):
    rows = jnp.arange(ids.shape[0])

    def step(t, carry):
        ids, lengths, done = carry
        mask = (jnp.arange(ids.shape[1])[None] < lengths[:, None]).astype(jnp.int32)
        logits = llama.apply(params, config, ids, mask).logits
        token = jnp.argmax(logits[rows, lengths - 1], axis=-1).astype(ids.dtype)
        ids = ids.at[rows, lengths].set(jnp.where(done, ids[rows, lengths], token))
        done = done | (token == eos)
        return ids, jnp.where(done, lengths, lengths + 1), done

    done = jnp.zeros(ids.shape[0], bool)
    ids, lengths, _ = jax.lax.fori_loop(0, max_new_tokens, step, (ids, lengths, done))
    return ids


def greedy_tokens(params, config: ModelConfig, ids: np.ndarray, lengths: np.ndarray, eos: int, *,
                  max_new_tokens: int, batch_size: int = 64) -> list[list[int]]:
    """Greedy new tokens (EOS dropped) after each right-padded prompt row ``ids[i, :lengths[i]]``."""
    width = ids.shape[1] + max_new_tokens
    ids = np.pad(ids, ((0, 0), (0, max_new_tokens)), constant_values=ids[0, -1] if ids.size else 0)
    batch_size = min(batch_size, len(ids))
    out = []
    for begin in range(0, len(ids), batch_size):
        index = np.arange(begin, min(begin + batch_size, len(ids)))
        padded = np.concatenate([index, np.full(batch_size - len(index), index[0])])
        result = np.asarray(_greedy(params, config, jnp.asarray(ids[padded]), jnp.asarray(lengths[padded]),
                                    max_new_tokens, eos))
        for row, i in enumerate(index):
            new = result[row, lengths[i]:width].tolist()
            out.append(new[: new.index(eos)] if eos in new else new)
    return out


def greedy_answers(params, config: ModelConfig, tokenizer, records, *, max_new_tokens: int = 16,
                   batch_size: int = 64) -> list[str]:
    """The greedy continuation of every record's prompt, decoded without special tokens, stripped."""
    _, eos, _ = special_ids(tokenizer)
    ids, lengths = encode_prompts(records, tokenizer)
    new = greedy_tokens(params, config, ids, lengths, eos, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in new]
