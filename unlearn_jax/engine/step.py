"""The update step: a pure ``(state, frozen_params, constants, batch) -> (state, metrics)``, jitted
with the state donated.

``objective(params, constants, batch, rng) -> (loss, metrics)`` is any pure loss (pretraining NLL,
an unlearning method); ``constants`` holds what it needs but never trains (cached reference
log-probs, frozen activations, a steering vector); ``batch`` is a pytree of token batches
(``{"train": …}`` or ``{"forget": …, "retain": …}``). A step whose loss or gradients are not finite,
or whose update would make a parameter non-finite, is skipped (state unchanged but for the step counter,
rng and ``bad_steps``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from unlearn_jax.engine.state import TrainState, merge_params


def make_step(objective: Callable, optimizer: optax.GradientTransformation) -> Callable:
    def step(state: TrainState, frozen_params: dict, constants, batch) -> tuple[TrainState, dict]:
        rng, step_rng = jax.random.split(state.rng)

        def loss_fn(trainable):
            return objective(merge_params(trainable, frozen_params), constants, batch, step_rng)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # finite loss and gradients can still overflow the update (a huge lr): such params are never kept
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.all(
            jnp.stack([jnp.isfinite(p).all() for p in jax.tree_util.tree_leaves(params)]))
        keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = TrainState(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            rng=rng,
            bad_steps=jnp.where(finite, 0, state.bad_steps + 1),
        )
        return new_state, {**metrics, "loss": loss, "grad_norm": grad_norm, "skipped": ~finite}

    return jax.jit(step, donate_argnums=0)
