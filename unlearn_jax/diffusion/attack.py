"""Soft-prompt attack on an erased concept (UnlearnDiffAtk-style, in embedding space).

The concept's token embedding is replaced by a free vector e (initialised at the concept's own
embedding, as UnlearnDiffAtk starts from the original prompt) and e is optimised with Adam so that the
*unlearned* model denoises real images of the concept well again:
    min_e E_{x∼D_c, t, ε} ‖ε_θu(x_t | [e, other tokens]) − ε‖²,
i.e. the model's own diffusion loss is used as a classifier of "this prompt explains these images".
Success = share of samples generated with e that the evaluator classifies as the concept; the original
model prompted with the concept is the ceiling, the unlearned model prompted with it the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from unlearn_jax.diffusion import ddpm, images, unet
from unlearn_jax.diffusion.images import Concept
from unlearn_jax.diffusion.unet import UNetConfig
from unlearn_jax.errors import UserError


@dataclass(frozen=True)
class AttackConfig:
    steps: int = 100
    lr: float = 0.05
    batch_size: int = 32

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise UserError("attack --steps and --batch-size must be >= 1 and --lr positive")


def context_with(params: dict, config: UNetConfig, tokens: jax.Array, slot: int, vector: jax.Array) -> jax.Array:
    """The prompt context of ``tokens`` [B, L] with the token embedding at ``slot`` replaced by ``vector``."""
    position = params["text"]["position_embed"][slot]
    return unet.encode(params, config, tokens).at[:, slot].set(vector + position)


def attack_loss(vector, params: dict, config: UNetConfig, schedule: ddpm.Schedule, key: jax.Array, c: Concept,
                n: int) -> jax.Array:
    k_data, k_noise = jax.random.split(key)
    x, tokens, _, _ = images.batch(k_data, n, fixed=c)
    x_t, t, noise = ddpm.noisy_inputs(schedule, k_noise, x)
    return jnp.mean((unet.apply(params, config, x_t, t, context_with(params, config, tokens, c.slot, vector))
                     - noise) ** 2)


def soft_prompt(params: dict, config: UNetConfig, schedule: ddpm.Schedule, c: Concept, attack: AttackConfig,
                seed: int) -> tuple[jax.Array, list[float]]:
    """(adversarial embedding [D], loss per step)."""
    optimizer = optax.adam(attack.lr)
    vector = unet.token_embedding(params, images.TOKEN[c.word])
    state = optimizer.init(vector)

    @jax.jit
    def step(vector, state, key):
        loss, grad = jax.value_and_grad(attack_loss)(vector, params, config, schedule, key, c, attack.batch_size)
        updates, state = optimizer.update(grad, state)
        return optax.apply_updates(vector, updates), state, loss

    losses = []
    key = jax.random.PRNGKey(seed)
    for i in range(attack.steps):
        vector, state, loss = step(vector, state, jax.random.fold_in(key, i))
        losses.append(float(loss))
    return vector, losses


def attacked_context(params: dict, config: UNetConfig, c: Concept, vector: jax.Array, per_prompt: int) -> jax.Array:
    """Contexts for every value of the other axis (``per_prompt`` each), c's slot holding ``vector``."""
    others = jnp.repeat(jnp.arange(len(images.AXES[c.other_axis])), per_prompt)
    fixed = jnp.full_like(others, c.index)
    colour, background = (fixed, others) if c.axis == "colour" else (others, fixed)
    return context_with(params, config, images.prompt_tokens(colour, background), c.slot, vector)
