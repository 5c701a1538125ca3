"""Simulated weight-only quantization (round-to-nearest, symmetric absmax, through qwix) and the share
of weights whose integer code differs between two models.

Which weights: the decoder's linear kernels (q/k/v/o and gate/up/down projections); embeddings, the LM
head and the norms stay in float, as weight-only int8/int4 deployments (GPTQ, AWQ, bitsandbytes) keep
them. Kernels are stored (in, out): one scale per output column (``channelwise_axes=(1,)``), and with a
group size g one scale per output column and run of g inputs (``tiled_axes={0: g}``). An input size g
does not divide is zero-padded to a multiple of g first (zeros never change an absmax), so the last
group is shorter. qwix's symmetric int-b grid: scale = absmax / (2^(b−1) − 1 + 0.5), code =
round(w / scale) saturated to the int-b range, dequantized = code · scale, so |w − dequantized| ≤ scale/2.

Changed codes: each model is quantized with its own scales (what deploying it does) and the codes are
compared element-wise; an update smaller than half a bucket leaves the code, and so the quantized
model, unchanged — the data-free predictor of recovery under quantization (Zhang et al. 2024).
"""

from __future__ import annotations

import dataclasses
import re
from functools import partial

import jax
import jax.numpy as jnp
import qwix

from unlearn_jax.errors import UserError

QUANTIZED_KERNEL = re.compile(r"^layers_(\d+)/(self_attn|mlp)/\w+_proj/kernel$")
DEFAULT_SCHEMES = "int8,int4,int4-g128,int4-g64,int4-g32"
QTYPES = {8: jnp.int8, 4: jnp.int4}


@dataclasses.dataclass(frozen=True)
class QuantScheme:
    """``bits`` ∈ {8, 4}; ``group`` = inputs per scale (None: one scale per output channel)."""

    bits: int
    group: int | None = None

    @property
    def name(self) -> str:
        return f"int{self.bits}" + (f"-g{self.group}" if self.group else "")


def parse_schemes(text: str) -> tuple[QuantScheme, ...]:
    """``"int8,int4,int4-g64"`` → schemes; anything else raises UserError."""
    schemes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        match = re.fullmatch(r"int(8|4)(?:-g(\d+))?", item)
        if not match or (match.group(2) is not None and int(match.group(2)) < 1):
            raise UserError(f"--quant-schemes: {item!r} is not a scheme (int8, int4, int4-g64, ...)")
        schemes.append(QuantScheme(int(match.group(1)), int(match.group(2)) if match.group(2) else None))
    if not schemes:
        raise UserError("--quant-schemes: give at least one scheme (e.g. int8,int4-g64)")
    return tuple(schemes)


def kernel_paths(params) -> list[str]:
    """Paths ('layers_0/mlp/down_proj/kernel', …) of the kernels the audit quantizes and prunes."""
    paths = ["/".join(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return [p for p in paths if QUANTIZED_KERNEL.match(p)]


def map_kernels(fn, params):
    """Apply ``fn(path, kernel)`` to the audited kernels of ``params``; other leaves pass through."""
    def visit(path, leaf):
        name = "/".join(k.key for k in path)
        return fn(name, leaf) if QUANTIZED_KERNEL.match(name) else leaf

    return jax.tree_util.tree_map_with_path(visit, params)


def quantize_kernel(kernel: jax.Array, scheme: QuantScheme) -> tuple[jax.Array, jax.Array]:
    """(codes, dequantized) of an (in, out) kernel under ``scheme``; both shaped like ``kernel``."""
    n_in = kernel.shape[0]
    tiled = {}
    if scheme.group:
        pad = -n_in % scheme.group
        kernel = jnp.pad(kernel, ((0, pad), (0, 0)))
        tiled = {0: scheme.group}
    q = qwix.quantize(kernel.astype(jnp.float32), QTYPES[scheme.bits], channelwise_axes=(1,), tiled_axes=tiled)
    return q.qvalue[:n_in].astype(jnp.int8), qwix.dequantize(q)[:n_in]


@partial(jax.jit, static_argnums=1)
def fake_quantize(params, scheme: QuantScheme):
    """``params`` with every audited kernel replaced by its quantize → dequantize round trip."""
    return map_kernels(lambda _, w: quantize_kernel(w, scheme)[1].astype(w.dtype), params)


@partial(jax.jit, static_argnums=2)
def _changed(params_a, params_b, scheme: QuantScheme):
    def count(path, leaf_a, leaf_b):
        name = "/".join(k.key for k in path)
        if not QUANTIZED_KERNEL.match(name):
            return None
        codes_a, _ = quantize_kernel(leaf_a, scheme)
        codes_b, _ = quantize_kernel(leaf_b, scheme)
        return jnp.stack([jnp.sum(codes_a != codes_b), codes_a.size])

    return jax.tree_util.tree_map_with_path(count, params_a, params_b)


def changed_code_fraction(params_a, params_b, scheme: QuantScheme) -> dict[str, float]:
    """Per decoder layer (``"0"``, ``"1"``, …) and ``"all"``: the share of audited weights whose code
    differs between the two models, each quantized with its own scales."""
    counts = jax.device_get(_changed(params_a, params_b, scheme))
    per_layer: dict[str, list[int]] = {}
    for path, pair in jax.tree_util.tree_flatten_with_path(counts)[0]:
        layer = QUANTIZED_KERNEL.match("/".join(k.key for k in path)).group(1)
        total = per_layer.setdefault(layer, [0, 0])
        total[0] += int(pair[0])
        total[1] += int(pair[1])
    out = {layer: c / n for layer, (c, n) in sorted(per_layer.items(), key=lambda kv: int(kv[0]))}
    out["all"] = sum(c for c, _ in per_layer.values()) / sum(n for _, n in per_layer.values())
    return out
