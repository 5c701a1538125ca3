"""Embedding-space attack: a continuous suffix of ``suffix_length`` vectors, optimised with Adam to make
the model emit the target answer — no vocabulary constraint, so it bounds from above what any prompt
suffix could recover (Schwinn et al. 2024). Same layout and loss as GCG's ``"target"`` loss; the suffix
starts from the embeddings of GCG's initial filler token. Success = every answer token is the argmax
after prompt + soft suffix (greedy).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax.audit.gcg import AttackBatch, allowed_tokens, suffix_embeds
from unlearn_jax.errors import UserError
from unlearn_jax.models import llama
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.logprobs import greedy_correct, target_logprobs


@dataclasses.dataclass(frozen=True)
class EmbedAttackConfig:
    steps: int = 100
    lr: float = 1e-2
    check_every: int = 10

    def __post_init__(self):
        if self.steps < 1 or self.check_every < 1 or not self.lr > 0:
            raise UserError(f"embedding attack needs steps >= 1, check_every >= 1, lr > 0 (got {self})")


def _batch(attack: AttackBatch) -> dict:
    return {"input_ids": attack.input_ids, "attention_mask": attack.attention_mask, "loss_mask": attack.loss_mask}


def soft_suffix_loss(params, config: ModelConfig, attack: AttackBatch, soft: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean over prompts of the answer's token-mean NLL, greedy success [P]) with the soft suffix [L, D]."""
    batch = _batch(attack)
    logits = llama.apply(params, config, batch["input_ids"], batch["attention_mask"],
                         hidden_in=suffix_embeds(params, attack, soft)).logits
    lp, mask = target_logprobs(logits, batch)
    loss = (-(lp * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1)).mean()
    return loss, greedy_correct(logits, batch)


@partial(jax.jit, static_argnums=(1, 3, 4))
def _run(params, config: ModelConfig, attack: AttackBatch, steps: int, lr: float, soft: jax.Array):
    opt = optax.adam(lr)

    def body(carry, _):
        soft, state = carry
        (loss, success), grad = jax.value_and_grad(
            lambda s: soft_suffix_loss(params, config, attack, s), has_aux=True)(soft)
        updates, state = opt.update(grad, state)
        return (optax.apply_updates(soft, updates), state), (loss, success.all())

    (soft, _), (losses, successes) = jax.lax.scan(body, (soft, opt.init(soft)), None, length=steps)
    return soft, losses, successes


def embed_attack(params, config: ModelConfig, tokenizer, attack: AttackBatch, cfg: EmbedAttackConfig,
                 held_out: AttackBatch | None = None) -> dict:
    """{"loss", "initial_loss", "history" (loss every ``check_every`` steps), "success" [P], "steps_run"}:
    runs in chunks of ``check_every`` jitted steps and stops once every prompt succeeds. With
    ``held_out`` (prompts with the same suffix length), also "held_out_success": the fitted soft suffix
    applied to them (a universal soft prompt)."""
    filler = int(np.flatnonzero(allowed_tokens(tokenizer, config.vocab_size))[0])
    length = np.asarray(attack.suffix_positions).shape[1]
    soft = jnp.broadcast_to(params["embed_tokens"]["embedding"][filler], (length, config.hidden_size))
    soft = soft.astype(jnp.float32)
    initial, success = soft_suffix_loss(params, config, attack, soft)
    history, steps_run = [], 0
    while steps_run < cfg.steps and not bool(success.all()):
        chunk = min(cfg.check_every, cfg.steps - steps_run)
        soft, losses, _ = _run(params, config, attack, chunk, cfg.lr, soft)
        steps_run += chunk
        loss, success = soft_suffix_loss(params, config, attack, soft)
        history.append(float(loss))
    final, success = soft_suffix_loss(params, config, attack, soft)
    result = {"loss": float(final), "initial_loss": float(initial), "history": history,
              "success": np.asarray(success).tolist(), "steps_run": steps_run}
    if held_out is not None:
        result["held_out_success"] = np.asarray(soft_suffix_loss(params, config, held_out, soft)[1]).tolist()
    return result
