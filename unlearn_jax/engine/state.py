"""Training state and the trainable/frozen split of a parameter pytree.

The state holds only the *trainable* parameters and their optimizer state; frozen parameters live
outside it and are merged back inside the step, so gradients and optimizer state exist only for what
is trained (split before ``jax.grad``, never mask after the fact).
"""

from __future__ import annotations

import re

import flax.struct
import jax
import jax.numpy as jnp
import optax

from unlearn_jax.errors import UserError


@flax.struct.dataclass
class TrainState:
    """step: int32 []; params: trainable subtree; opt_state: its optax state; rng: uint32 [2] key;
    bad_steps: int32 [] count of consecutive non-finite steps (their updates were skipped)."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    rng: jax.Array
    bad_steps: jax.Array


def param_paths(params) -> list[str]:
    return ["/".join(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def split_params(params, trainable: str | None) -> tuple[dict, dict]:
    """(trainable, frozen) subtrees: a leaf is trainable when its path ('layers_3/mlp/down_proj/kernel')
    matches the regex ``trainable`` (``re.search``); None = everything trainable."""
    if trainable is None:
        return params, {}
    try:
        pattern = re.compile(trainable)
    except re.error as e:
        raise UserError(f"--trainable {trainable!r} is not a valid regular expression ({e})") from None
    picked, frozen = {}, {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [k.key for k in path]
        node = picked if pattern.search("/".join(keys)) else frozen
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    if not picked:
        raise UserError(f"--trainable {trainable!r} matches no parameter (names look like "
                        f"{param_paths(params)[1]})")
    return picked, frozen


def merge_params(a: dict, b: dict) -> dict:
    """Union of two disjoint nested dicts."""
    out = dict(a)
    for key, value in b.items():
        out[key] = merge_params(out[key], value) if key in out else value
    return out


def init_state(trainable: dict, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state holding a *copy* of ``trainable``: the step donates its state, and donation must not
    delete arrays the caller still holds (the original model, for evaluation or as a reference)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=jax.tree_util.tree_map(jnp.copy, trainable),
        opt_state=jax.jit(optimizer.init)(trainable),
        rng=jax.random.PRNGKey(seed),
        bad_steps=jnp.zeros((), jnp.int32),
    )
