"""Concept-erasure objectives for the conditional DDPM, each one short pure function.

Both draw their data on the device from the step's key (``images.batch``): forget images x show the
concept c (the other axis random), retain images show anything but c.

- ``seed`` (the seed paper's statement; Concept Ablation / SalUn's published code):
  L = E_{x∼D_f, t, ε} ‖sg[ε_θ(x_t | c′)] − ε_θ(x_t | c)‖² + β · E_{x∼D_r, t, ε} ‖ε_θ(x_t | c_r) − ε‖²,
  c′ = the prompt with c replaced by the anchor (``<null>`` by default, or another word of c's axis);
  sg = stop-gradient through the c′ branch of the *current* model.
- ``esd`` (Gandikota et al. 2023, negative guidance): with θ* the frozen original model,
  L = E ‖ε_θ(x_t | c) − [ε_θ*(x_t | ∅) − η (ε_θ*(x_t | c) − ε_θ*(x_t | ∅))]‖² (+ the same β retain term).
  Convention: η > 0 pushes *away* from c (ESD's η = 1 default); ∅ = the all-``<null>`` prompt. Unlike
  ESD's code, x_t comes from noised real images of c rather than from the model's own partial samples.

Parameter groups select what trains (``engine.state.split_params`` regexes over paths such as
``unet/cross_attn_2/to_k/kernel``): full U-Net, cross-attention only (ESD-x) or everything else (ESD-u).
The prompt encoder never trains, as a text encoder stays frozen in ESD.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from unlearn_jax.diffusion import ddpm, images, unet
from unlearn_jax.diffusion.images import Concept
from unlearn_jax.diffusion.unet import UNetConfig
from unlearn_jax.errors import UserError

OBJECTIVES = ("seed", "esd")
PARAM_GROUPS = {"full": r"^unet/", "xattn": r"^unet/cross_attn_", "non-xattn": r"^unet/(?!cross_attn_)"}


@dataclass(frozen=True)
class EraseConfig:
    """One erasure run: objective, anchor word (``<null>`` or a word of the concept's axis), parameter
    group, retain weight β, ESD's η, and the optimisation."""

    objective: str = "seed"
    anchor: str = images.NULL
    params: str = "full"
    beta: float = 1.0
    eta: float = 1.0
    steps: int = 150
    lr: float = 1e-4
    batch_size: int = 32

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise UserError(f"--objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if self.params not in PARAM_GROUPS:
            raise UserError(f"--params {self.params!r}: choose one of {', '.join(PARAM_GROUPS)}")
        if self.beta < 0 or self.eta < 0:
            raise UserError("--beta and --eta must be >= 0")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        if self.steps < 1 or self.batch_size < 1:
            raise UserError("--steps and --batch-size must be >= 1")


def anchor_token(concept: Concept, anchor: str) -> int:
    """The token replacing ``concept`` in c′; the anchor must be ``<null>`` or another word of its axis."""
    if anchor == images.NULL:
        return images.TOKEN[images.NULL]
    if anchor not in images.AXES[concept.axis] or anchor == concept.word:
        others = [w for w in images.AXES[concept.axis] if w != concept.word]
        raise UserError(f"--anchor {anchor!r}: choose {images.NULL} or another {concept.axis} "
                        f"({', '.join(others)})")
    return images.TOKEN[anchor]


def denoiser(config: UNetConfig):
    """ε(params, x_t, t, tokens) of the U-Net with its prompt encoder: the ``eps`` the losses take."""
    return lambda params, x_t, t, tokens: unet.apply(params, config, x_t, t, unet.encode(params, config, tokens))


def seed_objective(eps, params: dict, forget: tuple, anchored: jax.Array, retain: tuple, beta: float
                   ) -> tuple[jax.Array, dict]:
    """mean ‖sg[ε(x_t, t, c′)] − ε(x_t, t, c)‖² + β · mean ‖ε(x_r,t, t_r, c_r) − ε_r‖².

    ``forget`` = (x_t, t, c tokens); ``anchored`` = the c′ tokens; ``retain`` = (x_t, t, tokens, ε)."""
    x_t, t, tokens = forget
    target = jax.lax.stop_gradient(eps(params, x_t, t, anchored))
    forget_term = jnp.mean((target - eps(params, x_t, t, tokens)) ** 2)
    retain_term = retain_objective(eps, params, retain)
    return forget_term + beta * retain_term, {"forget_loss": forget_term, "retain_loss": retain_term}


def esd_objective(eps, params: dict, original: dict, forget: tuple, eta: float, retain: tuple, beta: float
                  ) -> tuple[jax.Array, dict]:
    """mean ‖ε_θ(x_t, t, c) − sg[ε*(x_t, t, ∅) − η (ε*(x_t, t, c) − ε*(x_t, t, ∅))]‖² + β · retain term,
    ε* = ``eps`` with the frozen ``original`` parameters, ∅ = all-``<null>`` tokens."""
    x_t, t, tokens = forget
    eps_null = eps(original, x_t, t, jnp.zeros_like(tokens))
    eps_concept = eps(original, x_t, t, tokens)
    target = jax.lax.stop_gradient(eps_null - eta * (eps_concept - eps_null))
    forget_term = jnp.mean((eps(params, x_t, t, tokens) - target) ** 2)
    retain_term = retain_objective(eps, params, retain) if beta > 0 else jnp.zeros(())
    return forget_term + beta * retain_term, {"forget_loss": forget_term, "retain_loss": retain_term}


def retain_objective(eps, params: dict, retain: tuple) -> jax.Array:
    """The DDPM loss mean ‖ε(x_t, t, tokens) − ε_true‖² on retain inputs (x_t, t, tokens, ε_true)."""
    x_t, t, tokens, noise = retain
    return jnp.mean((eps(params, x_t, t, tokens) - noise) ** 2)


def draw_inputs(schedule: ddpm.Schedule, key: jax.Array, concept: Concept, n: int,
                erased_before: tuple[Concept, ...] = ()) -> tuple[tuple, tuple]:
    """(forget = (x_t, t, c tokens) for n noised images of ``concept``, retain = (x_t, t, tokens, ε) for n
    noised images naming neither ``concept`` nor any concept erased before it: a retain set holding an
    earlier request's concept would teach it back)."""
    k_forget, k_retain, k_noise_f, k_noise_r = jax.random.split(key, 4)
    x_f, tokens_f, _, _ = images.batch(k_forget, n, fixed=concept)
    x_r, tokens_r, _, _ = images.batch(k_retain, n, exclude=(concept, *erased_before))
    x_t, t, _ = ddpm.noisy_inputs(schedule, k_noise_f, x_f)
    xr_t, t_r, noise_r = ddpm.noisy_inputs(schedule, k_noise_r, x_r)
    return (x_t, t, tokens_f), (xr_t, t_r, tokens_r, noise_r)


def make_objective(erase: EraseConfig, config: UNetConfig, schedule: ddpm.Schedule, concept: Concept,
                   erased_before: tuple[Concept, ...] = ()):
    """The engine's ``objective(params, constants, batch, rng)``: draws forget and retain inputs from
    ``rng``; ``constants`` holds the frozen original parameters (used by ESD)."""
    anchor = anchor_token(concept, erase.anchor)
    eps = denoiser(config)

    def objective(params, constants, batch, rng):
        forget, retain = draw_inputs(schedule, rng, concept, erase.batch_size, erased_before)
        if erase.objective == "esd":
            return esd_objective(eps, params, constants["original"], forget, erase.eta, retain, erase.beta)
        anchored = forget[2].at[:, concept.slot].set(anchor)
        return seed_objective(eps, params, forget, anchored, retain, erase.beta)

    return objective


def training_loss(params: dict, config: UNetConfig, schedule: ddpm.Schedule, key: jax.Array, n: int,
                  slot_drop: float = 0.15, prompt_drop: float = 0.1) -> tuple[jax.Array, dict]:
    """Base-model training: the DDPM loss on n random images, each prompt token replaced by ``<null>`` with
    probability ``slot_drop`` and the whole prompt with ``prompt_drop`` (classifier-free guidance)."""
    k_data, k_slot, k_prompt, k_noise = jax.random.split(key, 4)
    x, tokens, _, _ = images.batch(k_data, n)
    drop = jax.random.bernoulli(k_slot, slot_drop, tokens.shape) | jax.random.bernoulli(k_prompt, prompt_drop, (n, 1))
    tokens = jnp.where(drop, images.TOKEN[images.NULL], tokens)
    x_t, t, noise = ddpm.noisy_inputs(schedule, k_noise, x)
    return retain_objective(denoiser(config), params, (x_t, t, tokens, noise)), {}
