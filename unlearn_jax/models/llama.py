"""A Flax (linen) decoder for the Llama family: Llama (incl. llama3 RoPE scaling), Mistral, Qwen2.

Dimension letters used in shapes and einsums:
  B batch, S query positions, T key positions, D model width, N query heads, K kv heads,
  G query heads per kv head (N = K·G), H head dim, F MLP width, V vocab, L layers.

Parameters are a plain nested-dict pytree whose names mirror Hugging Face's module names
(``layers_3/self_attn/q_proj/kernel``), kernels laid out (in, out) — the HF weight transposed — so
the safetensors mapping in ``hf.py`` is a rename plus a transpose. RoPE uses HF's rotate-half layout,
so q/k weights load without permutation.

``apply(params, config, input_ids, attention_mask)`` is the pure entry point. It can also stop after
any decoder layer (``last_layer``) and return the outputs of chosen layers (``hidden_layers``): RMU,
probes and the logit lens read them, and a forward that stops early costs only the layers it runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs; hashable so it can be a static jit argument.

    ``sliding_windows[l]`` is the attention window of layer l (None = full causal attention); a key at
    position t is visible to a query at s when 0 <= s - t < window (Hugging Face's convention).
    ``rope_scaling`` holds the llama3/linear parameters as sorted (name, value) pairs.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_scaling: tuple[tuple[str, float], ...] = ()
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_windows: tuple[int | None, ...] = ()
    model_type: str = "llama"
    dtype: str = "float32"
    param_dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope type {self.rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
        if self.sliding_windows and len(self.sliding_windows) != self.num_layers:
            raise ValueError("sliding_windows needs one entry per layer")

    def window(self, layer: int) -> int | None:
        return self.sliding_windows[layer] if self.sliding_windows else None

    def num_params(self) -> int:
        d, f, v, h = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        attn = d * h * (self.num_heads * 2 + self.num_kv_heads * 2)
        attn += h * (self.num_heads + 2 * self.num_kv_heads) * self.qkv_bias + d * self.o_bias
        mlp = 3 * d * f + (2 * f + d) * self.mlp_bias
        per_layer = attn + mlp + 2 * d
        head = 0 if self.tie_word_embeddings else d * v
        return v * d + self.num_layers * per_layer + d + head


class ModelOutput(NamedTuple):
    """``logits`` [B, S, V] float32 (None when not asked for); ``hidden`` maps a layer index l to the
    output of decoder layer l, [B, S, D]; ``final_hidden`` is the last computed layer's output after
    the final norm when the forward ran to the end (the input of the LM head), else None."""

    logits: jax.Array | None
    hidden: dict[int, jax.Array]
    final_hidden: jax.Array | None


def rope_inverse_frequencies(config: ModelConfig) -> jax.Array:
    """inv_freq[i] = θ^(−2i/H), rescaled for "linear" (÷ factor) and "llama3" (Llama 3.1's smooth
    per-frequency interpolation between ÷ factor at long wavelengths and × 1 at short ones)."""
    h = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
    p = dict(config.rope_scaling)
    if config.rope_type == "linear":
        return inv_freq / p["factor"]
    if config.rope_type == "llama3":
        factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
        old_len = p["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return jnp.where(is_medium, smoothed, scaled)
    return inv_freq


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, S, *, H]; cos/sin [B, S, H] (float32, cast to x's dtype as Hugging Face does)."""
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotate_half(x) * sin


def attention_bias(attention_mask: jax.Array, window: int | None) -> jax.Array:
    """Additive mask [B, 1, 1, S, T]: 0 where query s may see key t, float32 min elsewhere.

    ``attention_mask`` [B, S] holds segment ids: 0 = padding, k > 0 = the k-th sequence packed into the
    row (a plain 0/1 mask is one segment). Query s sees key t when t <= s, t is not padding, t is in the
    sliding window, and both are in the same segment (a padding query sees its row's earlier tokens, so
    no row is fully masked).
    """
    s = jnp.arange(attention_mask.shape[1])
    distance = s[:, None] - s[None, :]
    visible = distance >= 0
    if window is not None:
        visible &= distance < window
    query, key = attention_mask[:, :, None], attention_mask[:, None, :]
    visible = visible[None] & (key > 0) & ((query == key) | (query == 0))
    return jnp.where(visible, 0.0, jnp.finfo(jnp.float32).min)[:, None, None]


class RMSNorm(nn.Module):
    """y = w · x / sqrt(mean(x²) + eps), the normalisation in float32 (as Hugging Face does)."""

    eps: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * normed.astype(self.dtype)


def _dense(features: int, bias: bool, config: ModelConfig, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=bias,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        kernel_init=nn.initializers.normal(0.02),
        name=name,
    )


class Attention(nn.Module):
    config: ModelConfig
    layer: int

    @nn.compact
    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, attention_mask: jax.Array) -> jax.Array:
        c = self.config
        b, s, _ = x.shape
        n, k, h = c.num_heads, c.num_kv_heads, c.head_dim
        q = _dense(n * h, c.qkv_bias, c, "q_proj")(x).reshape(b, s, k, n // k, h)
        key = _dense(k * h, c.qkv_bias, c, "k_proj")(x).reshape(b, s, k, h)
        value = _dense(k * h, c.qkv_bias, c, "v_proj")(x).reshape(b, s, k, h)
        q = apply_rope(q.reshape(b, s, n, h), cos, sin).reshape(b, s, k, n // k, h)
        key = apply_rope(key, cos, sin)
        scores = jnp.einsum("BSKGH,BTKH->BKGST", q, key, preferred_element_type=jnp.float32) / math.sqrt(h)
        scores = scores + attention_bias(attention_mask, c.window(self.layer))
        probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
        out = jnp.einsum("BKGST,BTKH->BSKGH", probs, value).reshape(b, s, n * h)
        return _dense(c.hidden_size, c.o_bias, c, "o_proj")(out)


class MLP(nn.Module):
    """down(silu(gate(x)) · up(x))."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        gate = _dense(c.intermediate_size, c.mlp_bias, c, "gate_proj")(x)
        up = _dense(c.intermediate_size, c.mlp_bias, c, "up_proj")(x)
        return _dense(c.hidden_size, c.mlp_bias, c, "down_proj")(nn.silu(gate) * up)


class DecoderLayer(nn.Module):
    config: ModelConfig
    layer: int

    @nn.compact
    def __call__(self, x, cos, sin, attention_mask):
        c = self.config
        norm = lambda name: RMSNorm(c.rms_norm_eps, jnp.dtype(c.dtype), jnp.dtype(c.param_dtype), name=name)  # noqa: E731
        x = x + Attention(c, self.layer, name="self_attn")(norm("input_layernorm")(x), cos, sin, attention_mask)
        return x + MLP(c, name="mlp")(norm("post_attention_layernorm")(x))


class LlamaForCausalLM(nn.Module):
    config: ModelConfig

    def setup(self):
        c = self.config
        self.embed_tokens = nn.Embed(
            c.vocab_size,
            c.hidden_size,
            dtype=jnp.dtype(c.dtype),
            param_dtype=jnp.dtype(c.param_dtype),
            embedding_init=nn.initializers.normal(0.02),
        )
        self.layers = [DecoderLayer(c, i) for i in range(c.num_layers)]
        self.norm = RMSNorm(c.rms_norm_eps, jnp.dtype(c.dtype), jnp.dtype(c.param_dtype))
        if not c.tie_word_embeddings:
            self.lm_head = _dense(c.vocab_size, False, c, "lm_head")

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        position_ids: jax.Array,
        hidden_layers: tuple[int, ...] = (),
        last_layer: int | None = None,
        return_logits: bool = True,
        start_layer: int = 0,
        hidden_in: jax.Array | None = None,
    ) -> ModelOutput:
        c = self.config
        stop = c.num_layers - 1 if last_layer is None else last_layer
        angles = position_ids[..., None].astype(jnp.float32) * rope_inverse_frequencies(c)
        angles = jnp.concatenate([angles, angles], axis=-1)
        cos, sin = jnp.cos(angles), jnp.sin(angles)
        x = self.embed_tokens(input_ids) if hidden_in is None else hidden_in.astype(jnp.dtype(c.dtype))
        hidden = {}
        for i in range(start_layer, stop + 1):
            x = self.layers[i](x, cos, sin, attention_mask)
            if i in hidden_layers:
                hidden[i] = x
        if stop < c.num_layers - 1:
            return ModelOutput(None, hidden, None)
        final = self.norm(x)
        logits = self.unembed_normed(final) if return_logits else None
        return ModelOutput(logits, hidden, final)

    def unembed_normed(self, final_hidden: jax.Array) -> jax.Array:
        """LM head on an already-normed hidden state → float32 logits [..., V]."""
        if self.config.tie_word_embeddings:
            logits = self.embed_tokens.attend(final_hidden)
        else:
            logits = self.lm_head(final_hidden)
        return logits.astype(jnp.float32)

    def unembed(self, hidden: jax.Array) -> jax.Array:
        """Final norm + LM head on any layer's output: the logit lens."""
        return self.unembed_normed(self.norm(hidden))


def apply(
    params,
    config: ModelConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array | None = None,
    position_ids: jax.Array | None = None,
    *,
    hidden_layers: tuple[int, ...] = (),
    last_layer: int | None = None,
    return_logits: bool = True,
    start_layer: int = 0,
    hidden_in: jax.Array | None = None,
) -> ModelOutput:
    """Pure forward. input_ids [B, S] int; attention_mask [B, S] (1 = real token, 0 = padding, or segment
    ids 1, 2, … for packed rows; default all ones); position_ids [B, S] (default 0..S-1, as Hugging Face
    uses for a plain forward; packed rows restart at 0 in each segment).

    ``hidden_layers``: return these layers' outputs; ``last_layer``: stop after this layer (no logits);
    ``hidden_in`` [B, S, D] with ``start_layer`` 0: input embeddings used instead of looking up
    ``input_ids`` (soft prompts, one-hot gradients); ``input_ids`` then only sets the shape.
    ``start_layer`` > 0 with ``hidden_in`` [B, S, D] (the output of layer start_layer − 1, e.g. cached
    from a frozen prefix): run only layers start_layer.. — the embedding and earlier layers are skipped.
    """
    if start_layer and hidden_in is None:
        raise ValueError("start_layer > 0 needs hidden_in, the output of layer start_layer - 1")
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
        position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
    if last_layer is not None and not 0 <= last_layer < config.num_layers:
        raise ValueError(f"last_layer={last_layer} outside 0..{config.num_layers - 1}")
    return LlamaForCausalLM(config).apply(
        {"params": params},
        input_ids,
        attention_mask,
        position_ids,
        hidden_layers=tuple(hidden_layers),
        last_layer=last_layer,
        return_logits=return_logits,
        start_layer=start_layer,
        hidden_in=hidden_in,
    )


def logit_lens(params, config: ModelConfig, hidden: jax.Array) -> jax.Array:
    """Final norm + LM head applied to a layer's output [B, S, D] → float32 logits [B, S, V]."""
    return LlamaForCausalLM(config).apply({"params": params}, hidden, method=LlamaForCausalLM.unembed)


def unembed_normed(params, config: ModelConfig, final_hidden: jax.Array) -> jax.Array:
    """LM head only (input already passed the final norm) → float32 logits [..., V]."""
    return LlamaForCausalLM(config).apply({"params": params}, final_hidden, method=LlamaForCausalLM.unembed_normed)


def init_params(config: ModelConfig, rng: jax.Array):
    """Random parameters (normal(0.02) kernels, unit norms), as a nested dict."""
    ids = jnp.zeros((1, 2), jnp.int32)
    return LlamaForCausalLM(config).init(rng, ids, jnp.ones_like(ids), jnp.zeros_like(ids))["params"]


# Logical axes of every parameter, keyed by its last two path names; sharding.py maps them to mesh axes.
PARAM_LOGICAL_AXES: dict[tuple[str, str], tuple[str, ...]] = {
    ("embed_tokens", "embedding"): ("vocab", "embed"),
    ("q_proj", "kernel"): ("embed", "heads"),
    ("k_proj", "kernel"): ("embed", "kv_heads"),
    ("v_proj", "kernel"): ("embed", "kv_heads"),
    ("o_proj", "kernel"): ("heads", "embed"),
    ("q_proj", "bias"): ("heads",),
    ("k_proj", "bias"): ("kv_heads",),
    ("v_proj", "bias"): ("kv_heads",),
    ("o_proj", "bias"): ("embed",),
    ("gate_proj", "kernel"): ("embed", "mlp"),
    ("up_proj", "kernel"): ("embed", "mlp"),
    ("down_proj", "kernel"): ("mlp", "embed"),
    ("gate_proj", "bias"): ("mlp",),
    ("up_proj", "bias"): ("mlp",),
    ("down_proj", "bias"): ("embed",),
    ("input_layernorm", "scale"): ("norm",),
    ("post_attention_layernorm", "scale"): ("norm",),
    ("norm", "scale"): ("norm",),
    ("lm_head", "kernel"): ("embed", "vocab"),
}
