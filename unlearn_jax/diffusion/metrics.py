"""Generation and UnlearnCanvas-style metrics, judged by the evaluator CNN.

For erased concepts C (words of one or both axes), over DDIM samples of every (colour, background)
prompt:
- **UA** (unlearning accuracy) of c ∈ C: 1 − the share of samples of prompts naming c that the evaluator
  classifies as c (1 = the concept never appears);
- **IRA** (in-domain retain accuracy): on prompts naming no erased concept, the evaluator's accuracy on
  the erased concepts' axis (other colours must stay right);
- **CRA** (cross-domain retain accuracy): the same on the other axis (backgrounds must stay right);
- **FD**: the Fréchet distance between evaluator features of those retain samples and of real images
  with the same labels (an FID proxy; 0 = same feature statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.diffusion import ddpm, evaluator, images, unet
from unlearn_jax.diffusion.images import Concept
from unlearn_jax.diffusion.unet import UNetConfig

SAMPLE_STEPS = 20
GUIDANCE = 3.0


def generate(params: dict, config: UNetConfig, schedule: ddpm.Schedule, key: jax.Array, context: jax.Array,
             batch_size: int = 256) -> jax.Array:
    """DDIM + CFG samples [N, 16, 16, 3] for contexts [N, L, D], in batches; sample i uses fold_in(key, i // B)."""
    null = unet.encode(params, config, jnp.zeros((1, config.prompt_length), jnp.int32))
    out = []
    for begin in range(0, context.shape[0], batch_size):
        part = context[begin : begin + batch_size]
        part_null = jnp.broadcast_to(null, part.shape)
        out.append(ddpm.sample(params, config, schedule, jax.random.fold_in(key, begin), part, part_null,
                               SAMPLE_STEPS, GUIDANCE))
    return jnp.concatenate(out)


def prompt_grid(per_prompt: int) -> tuple[jax.Array, jax.Array]:
    """(colour, background) indices: every pair, ``per_prompt`` times each (pair-major)."""
    colour, background = images.all_prompts()
    return jnp.repeat(colour, per_prompt), jnp.repeat(background, per_prompt)


def sample_prompts(params: dict, config: UNetConfig, schedule: ddpm.Schedule, key: jax.Array, per_prompt: int
                   ) -> tuple[jax.Array, np.ndarray, np.ndarray]:
    """(samples, colour, background) for every prompt."""
    colour, background = prompt_grid(per_prompt)
    context = unet.encode(params, config, images.prompt_tokens(colour, background))
    return generate(params, config, schedule, key, context), np.asarray(colour), np.asarray(background)


def erasure_metrics(evaluator_params: dict, samples: jax.Array, colour: np.ndarray, background: np.ndarray,
                    erased: Sequence[Concept], real_key: jax.Array) -> dict:
    """UA per erased concept, IRA, CRA, FD and per-axis accuracy (see the module docstring)."""
    features, predicted = evaluator.predict(evaluator_params, samples)
    labels = {"colour": colour, "background": background}
    out: dict = {"ua": {}}
    names_any = np.zeros(len(colour), bool)
    for c in erased:
        mask = labels[c.axis] == c.index
        names_any |= mask
        out["ua"][c.word] = float(1.0 - np.mean(predicted[c.axis][mask] == c.index))
    retain = ~names_any
    accuracy = {axis: float(np.mean(predicted[axis][retain] == labels[axis][retain])) for axis in images.AXES}
    axes = {c.axis for c in erased}
    out["accuracy"] = accuracy
    out["ira"] = float(np.mean([accuracy[a] for a in axes])) if axes else None
    others = [a for a in images.AXES if a not in axes]
    out["cra"] = float(np.mean([accuracy[a] for a in others])) if others else None
    real = images.render(real_key, jnp.asarray(colour[retain]), jnp.asarray(background[retain]))
    real_features, _ = evaluator.predict(evaluator_params, real)
    out["fd"] = evaluator.frechet_distance(features[retain], real_features)
    return out


def concept_rate(evaluator_params: dict, samples: jax.Array, c: Concept) -> float:
    """Share of ``samples`` the evaluator classifies as concept ``c``."""
    _, predicted = evaluator.predict(evaluator_params, samples)
    return float(np.mean(predicted[c.axis] == c.index))
