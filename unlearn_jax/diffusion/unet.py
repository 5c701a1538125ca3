"""A tiny conditional U-Net (Flax linen) for 16×16 images, with a learnable prompt encoder.

``apply(params, config, x_t, t, context)`` → predicted noise ε_θ(x_t | c), same shape as ``x_t``.
``context`` [B, L, D] comes from ``encode(params, config, tokens)`` (token + position embeddings, the
stand-in text encoder) or from an attack's soft prompt. Layout: conv in → [ResBlock → CrossAttention]
at 16×16 and 8×8 going down, a 4×4 middle (ResBlock, CrossAttention, ResBlock), the mirror going up
with skip connections → conv out. Cross-attention modules are named ``cross_attn_*`` so parameter
groups can select them by path (``/cross_attn_``), as ESD-x selects Stable Diffusion's attn2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from unlearn_jax.diffusion.images import VOCAB


@dataclass(frozen=True)
class UNetConfig:
    channels: tuple[int, ...] = (32, 64)
    text_dim: int = 32
    prompt_length: int = 2
    time_dim: int = 64
    groups: int = 8
    heads: int = 2
    vocab_size: int = len(VOCAB)


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding of integer timesteps [B] → [B, dim] (cos then sin, periods up to 10⁴)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class ResBlock(nn.Module):
    channels: int
    groups: int

    @nn.compact
    def __call__(self, x, temb):
        h = nn.Conv(self.channels, (3, 3), name="conv1")(nn.silu(nn.GroupNorm(self.groups, name="norm1")(x)))
        h = h + nn.Dense(self.channels, name="time")(nn.silu(temb))[:, None, None, :]
        h = nn.Conv(self.channels, (3, 3), name="conv2")(nn.silu(nn.GroupNorm(self.groups, name="norm2")(h)))
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1), name="skip")(x)
        return x + h


class CrossAttention(nn.Module):
    """softmax(q kᵀ / √d) v from image positions (queries) to prompt tokens (keys, values), residual."""

    heads: int
    groups: int

    @nn.compact
    def __call__(self, x, context):
        b, hgt, wid, c = x.shape
        d = c // self.heads
        q = nn.Dense(c, use_bias=False, name="to_q")(nn.GroupNorm(self.groups, name="norm")(x))
        k = nn.Dense(c, use_bias=False, name="to_k")(context)
        v = nn.Dense(c, use_bias=False, name="to_v")(context)
        q = q.reshape(b, hgt * wid, self.heads, d)
        k = k.reshape(b, -1, self.heads, d)
        v = v.reshape(b, -1, self.heads, d)
        weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d), axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, hgt, wid, c)
        return x + nn.Dense(c, name="to_out")(out)


class UNet(nn.Module):
    config: UNetConfig

    @nn.compact
    def __call__(self, x, t, context):
        c = self.config
        temb = timestep_embedding(t, c.time_dim)
        temb = nn.Dense(c.time_dim, name="time_mlp_2")(nn.silu(nn.Dense(c.time_dim, name="time_mlp_1")(temb)))
        h = nn.Conv(c.channels[0], (3, 3), name="conv_in")(x)
        skips, n_attn = [], 0
        for level, width in enumerate(c.channels):
            h = ResBlock(width, c.groups, name=f"down_res_{level}")(h, temb)
            h = CrossAttention(c.heads, c.groups, name=f"cross_attn_{n_attn}")(h, context)
            n_attn += 1
            skips.append(h)
            h = nn.Conv(width, (3, 3), strides=(2, 2), name=f"down_{level}")(h)
        h = ResBlock(c.channels[-1], c.groups, name="mid_res_0")(h, temb)
        h = CrossAttention(c.heads, c.groups, name=f"cross_attn_{n_attn}")(h, context)
        n_attn += 1
        h = ResBlock(c.channels[-1], c.groups, name="mid_res_1")(h, temb)
        for level in reversed(range(len(c.channels))):
            width = c.channels[level]
            b, hgt, wid, ch = h.shape
            h = jax.image.resize(h, (b, hgt * 2, wid * 2, ch), "nearest")
            h = jnp.concatenate([h, skips[level]], axis=-1)
            h = ResBlock(width, c.groups, name=f"up_res_{level}")(h, temb)
            h = CrossAttention(c.heads, c.groups, name=f"cross_attn_{n_attn}")(h, context)
            n_attn += 1
        h = nn.silu(nn.GroupNorm(c.groups, name="norm_out")(h))
        return nn.Conv(x.shape[-1], (3, 3), name="conv_out", kernel_init=nn.initializers.zeros)(h)


class PromptEncoder(nn.Module):
    config: UNetConfig

    @nn.compact
    def __call__(self, tokens):
        c = self.config
        embed = nn.Embed(c.vocab_size, c.text_dim, name="token_embed")(tokens)
        position = self.param("position_embed", nn.initializers.normal(0.02), (c.prompt_length, c.text_dim))
        return embed + position[None, : tokens.shape[1]]


def init_params(config: UNetConfig, key: jax.Array, image_shape=(16, 16, 3)) -> dict:
    """{"unet": …, "text": …} as a plain nested dict."""
    k_unet, k_text = jax.random.split(key)
    tokens = jnp.zeros((1, config.prompt_length), jnp.int32)
    text = PromptEncoder(config).init(k_text, tokens)["params"]
    context = PromptEncoder(config).apply({"params": text}, tokens)
    unet = UNet(config).init(k_unet, jnp.zeros((1, *image_shape)), jnp.zeros((1,), jnp.int32), context)["params"]
    return jax.tree_util.tree_map(lambda a: a, {"unet": dict(unet), "text": dict(text)})


def encode(params: dict, config: UNetConfig, tokens: jax.Array) -> jax.Array:
    """Prompt tokens [B, L] → context [B, L, text_dim]."""
    return PromptEncoder(config).apply({"params": params["text"]}, tokens)


def token_embedding(params: dict, word_id: int) -> jax.Array:
    """The learned embedding of one vocabulary id, [text_dim] (an attack's starting point)."""
    return params["text"]["token_embed"]["embedding"][word_id]


def apply(params: dict, config: UNetConfig, x_t: jax.Array, t: jax.Array, context: jax.Array) -> jax.Array:
    """ε_θ(x_t | context): x_t [B, H, W, 3], t int [B], context [B, L, D] → [B, H, W, 3]."""
    return UNet(config).apply({"params": params["unet"]}, x_t, t, context)


def num_params(params: dict) -> int:
    return sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
