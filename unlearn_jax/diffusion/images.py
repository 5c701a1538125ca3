"""Procedural 16×16 RGB images with two concept axes, rendered in JAX from a key (an endless, seeded
dataset: a batch is a pure function of its key).

Each image is one object (a square or a disc, 5-9 px, anywhere inside the frame) of an object **colour**
on a **background**; pixel values in [-1, 1] plus N(0, 0.03²) texture noise. The prompt is two tokens,
``[colour, background]``, over the vocabulary ``<null>`` + colours + backgrounds; ``<null>`` in a slot
means "unspecified" (classifier-free guidance trains on it). A concept is one word of one axis, e.g.
``red`` (axis ``colour``) or ``white`` (axis ``background``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from unlearn_jax.errors import UserError

SIZE = 16
COLOURS = {
    "red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0), "magenta": (1.0, -1.0, 1.0), "cyan": (-1.0, 1.0, 1.0),
}  # fmt: skip
BACKGROUNDS = {"black": (-1.0, -1.0, -1.0), "white": (1.0, 1.0, 1.0), "grey": (0.0, 0.0, 0.0)}
AXES = {"colour": tuple(COLOURS), "background": tuple(BACKGROUNDS)}
NULL = "<null>"
VOCAB = (NULL, *COLOURS, *BACKGROUNDS)
TOKEN = {word: i for i, word in enumerate(VOCAB)}
SLOT = {"colour": 0, "background": 1}
NOISE = 0.03


@dataclass(frozen=True)
class Concept:
    """One word of one axis: ``index`` is its position in ``AXES[axis]``."""

    word: str
    axis: str
    index: int

    @property
    def slot(self) -> int:
        return SLOT[self.axis]

    @property
    def other_axis(self) -> str:
        return "background" if self.axis == "colour" else "colour"


def concept(word: str) -> Concept:
    """The concept named ``word``; an unknown word raises UserError listing the known ones."""
    for axis, words in AXES.items():
        if word in words:
            return Concept(word, axis, words.index(word))
    known = ", ".join(w for words in AXES.values() for w in words)
    raise UserError(f"unknown concept {word!r}: choose one of {known}")


def prompt_tokens(colour: jax.Array, background: jax.Array) -> jax.Array:
    """Axis indices [B] → prompt token ids [B, 2]."""
    return jnp.stack([colour + 1, background + 1 + len(COLOURS)], axis=-1).astype(jnp.int32)


def render(key: jax.Array, colour: jax.Array, background: jax.Array) -> jax.Array:
    """Images [B, 16, 16, 3] for colour and background indices [B]; shapes, sizes, positions from ``key``."""
    n = colour.shape[0]
    k_shape, k_size, k_x, k_y, k_noise = jax.random.split(key, 5)
    size = jax.random.randint(k_size, (n,), 5, 10)
    x0 = jax.random.randint(k_x, (n,), 0, SIZE - size + 1)
    y0 = jax.random.randint(k_y, (n,), 0, SIZE - size + 1)
    disc = jax.random.bernoulli(k_shape, 0.5, (n,))
    grid = jnp.arange(SIZE, dtype=jnp.float32)
    gx, gy = grid[None, None, :], grid[None, :, None]
    half = size[:, None, None] / 2.0
    cx, cy = x0[:, None, None] + half - 0.5, y0[:, None, None] + half - 0.5
    in_square = (jnp.abs(gx - cx) <= half - 0.5) & (jnp.abs(gy - cy) <= half - 0.5)
    in_disc = (gx - cx) ** 2 + (gy - cy) ** 2 <= half**2
    mask = jnp.where(disc[:, None, None], in_disc, in_square)[..., None]
    fg = jnp.asarray(tuple(COLOURS.values()))[colour][:, None, None, :]
    bg = jnp.asarray(tuple(BACKGROUNDS.values()))[background][:, None, None, :]
    images = jnp.where(mask, fg, bg) + NOISE * jax.random.normal(k_noise, (n, SIZE, SIZE, 3))
    return jnp.clip(images, -1.0, 1.0)


def sample_labels(key: jax.Array, n: int, fixed: Concept | None = None, exclude: Sequence[Concept] = ()
                  ) -> tuple[jax.Array, jax.Array]:
    """(colour, background) indices [n]: uniform, with ``fixed``'s axis set to it, and each axis drawn
    uniformly among the values no concept in ``exclude`` names."""
    keys = dict(zip(AXES, jax.random.split(key), strict=True))
    labels = {}
    for axis, words in AXES.items():
        allowed = [i for i in range(len(words)) if all(c.axis != axis or c.index != i for c in exclude)]
        if not allowed:
            raise UserError(f"every {axis} is excluded: nothing is left to retain")
        labels[axis] = jnp.asarray(allowed, jnp.int32)[jax.random.randint(keys[axis], (n,), 0, len(allowed))]
    if fixed is not None:
        labels[fixed.axis] = jnp.full((n,), fixed.index, jnp.int32)
    return labels["colour"], labels["background"]


def batch(key: jax.Array, n: int, fixed: Concept | None = None, exclude: Sequence[Concept] = ()
          ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(images [n, 16, 16, 3], prompt tokens [n, 2], colour [n], background [n])."""
    k_labels, k_render = jax.random.split(key)
    colour, background = sample_labels(k_labels, n, fixed, exclude)
    return render(k_render, colour, background), prompt_tokens(colour, background), colour, background


def all_prompts() -> tuple[jax.Array, jax.Array]:
    """Every (colour, background) pair once: indices [18] each, colour-major."""
    colour = jnp.repeat(jnp.arange(len(COLOURS)), len(BACKGROUNDS))
    background = jnp.tile(jnp.arange(len(BACKGROUNDS)), len(COLOURS))
    return colour, background
