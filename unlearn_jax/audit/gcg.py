"""Greedy Coordinate Gradient (Zou et al. 2023, with nanoGCG's refinements): an adversarial suffix that
makes a model emit a target answer.

Layout per prompt: ``[BOS] + prompt + suffix + answer + [EOS]`` (the token-layout contract with a suffix
between prompt and answer); the same suffix for every prompt of the attack (one prompt: a per-fact
attack; several: a universal suffix). Each step:
1. the gradient of the loss w.r.t. the one-hot suffix tokens, [L, V] (one jitted call);
2. the ``top_k`` tokens with the most negative gradient per position (special and out-of-tokenizer ids
   excluded, and by default the answers' own tokens: a suffix that spells the answer proves nothing);
   ``candidates`` single-token swaps drawn uniformly over (position, top-k token);
3. candidates whose text does not survive decode → encode are replaced by the current suffix;
4. every candidate's loss in **one jitted, batched call** (static shapes: [candidates × prompts, S]);
5. a buffer of the ``buffer_size`` best suffixes so far is updated; the next step mutates its best, so
   the best-so-far loss never increases.
Losses: ``"target"`` — mean over prompts of the answer's token-mean NLL; ``"representation"`` (Łucki et
al. 2024) — mean over prompts of ‖h(prompt + suffix) − h_ref‖² / D at the position that predicts the
answer, ``h_ref`` another model's (the original's) hidden state there without a suffix.
Success = the greedy answer after ``prompt + suffix`` is exactly the target (teacher-forced argmax).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.tokenize import padded_length, special_ids
from unlearn_jax.errors import UserError
from unlearn_jax.models import llama
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.logprobs import greedy_correct, target_logprobs


@dataclasses.dataclass(frozen=True)
class GCGConfig:
    suffix_length: int = 20
    top_k: int = 256
    candidates: int = 512
    steps: int = 100
    buffer_size: int = 1
    loss: str = "target"  # target | representation
    layer: int | None = None  # representation loss: decoder layer (default: the last)
    seed: int = 0
    stop_on_success: bool = True
    forbid_answer_tokens: bool = True

    def __post_init__(self):
        for name in ("suffix_length", "top_k", "candidates", "steps", "buffer_size"):
            if getattr(self, name) < 1:
                raise UserError(f"GCG {name.replace('_', ' ')} must be >= 1 (got {getattr(self, name)})")
        if self.loss not in ("target", "representation"):
            raise UserError(f"GCG loss {self.loss!r}: choose target or representation")


@flax.struct.dataclass
class AttackBatch:
    """P prompts with a shared suffix slot: ``input_ids`` [P, S] (suffix slots hold placeholders),
    ``attention_mask``/``loss_mask`` [P, S], ``suffix_positions`` [P, L], ``answer_positions`` [P] (the
    position predicting each answer's first token = the last suffix position)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    loss_mask: np.ndarray
    suffix_positions: np.ndarray
    answer_positions: np.ndarray

    def with_suffixes(self, suffixes: jax.Array) -> dict:
        """Batch dict [C·P, S] for C suffixes [C, L]."""
        c, p = suffixes.shape[0], self.input_ids.shape[0]
        ids = jnp.broadcast_to(jnp.asarray(self.input_ids), (c, *self.input_ids.shape))
        rows = jnp.arange(p)[:, None]
        ids = jax.vmap(lambda i, s: i.at[rows, jnp.asarray(self.suffix_positions)].set(s[None, :]))(ids, suffixes)
        tile = lambda a: jnp.broadcast_to(jnp.asarray(a), (c, *a.shape)).reshape(c * p, -1)  # noqa: E731
        return {"input_ids": ids.reshape(c * p, -1), "attention_mask": tile(self.attention_mask),
                "loss_mask": tile(self.loss_mask)}


def build_attack_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str], suffix_length: int,
                       max_length: int | None = None) -> AttackBatch:
    """Encode prompts and answers around a ``suffix_length`` slot, right-padded to one length."""
    if suffix_length < 1:
        raise UserError(f"--suffix-length must be >= 1 (got {suffix_length})")
    if not prompts:
        raise UserError("the attack needs at least one prompt")
    bos, eos, pad = special_ids(tokenizer)
    prefix = [bos] if bos is not None else []
    rows = []
    for prompt, answer in zip(prompts, answers, strict=True):
        p = prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
        rows.append((p, a))
    longest = max(len(p) + suffix_length + len(a) for p, a in rows)
    length = padded_length(longest)  # few distinct shapes, so few compilations across attacks
    if max_length is not None and longest > max_length:
        raise UserError(f"prompt + {suffix_length}-token suffix + answer is {longest} tokens, longer than the "
                        f"model's context of {max_length}")
    length = min(length, max_length) if max_length is not None else length
    n = len(rows)
    ids, mask, loss = (np.full((n, length), pad, np.int32), np.zeros((n, length), np.int32),
                       np.zeros((n, length), np.int32))
    suffix_pos = np.zeros((n, suffix_length), np.int32)
    for i, (p, a) in enumerate(rows):
        start, end = len(p), len(p) + suffix_length
        ids[i, :start], ids[i, end : end + len(a)] = p, a
        mask[i, : end + len(a)] = 1
        loss[i, end : end + len(a)] = 1
        suffix_pos[i] = np.arange(start, end)
    return AttackBatch(ids, mask, loss, suffix_pos, suffix_pos[:, -1])


def suffix_embeds(params, attack: AttackBatch, suffix_vectors: jax.Array) -> jax.Array:
    """Input embeddings [P, S, D] of the attack's prompts with ``suffix_vectors`` [L, D] in the suffix slot."""
    embeds = params["embed_tokens"]["embedding"][attack.input_ids]
    rows = jnp.arange(embeds.shape[0])[:, None]
    return embeds.at[rows, attack.suffix_positions].set(suffix_vectors[None].astype(embeds.dtype))


def allowed_tokens(tokenizer, vocab_size: int) -> np.ndarray:
    """bool [V]: tokens a suffix may use (real tokenizer ids, no special tokens)."""
    allowed = np.zeros(vocab_size, bool)
    allowed[: min(len(tokenizer), vocab_size)] = True
    allowed[[i for i in tokenizer.all_special_ids if i < vocab_size]] = False
    return allowed


def _loss_from(params, config: ModelConfig, batch: dict, hidden_in, cfg: GCGConfig, ref_hidden, answer_pos):
    layer = config.num_layers - 1 if cfg.layer is None else cfg.layer
    out = llama.apply(params, config, batch["input_ids"], batch["attention_mask"], hidden_in=hidden_in,
                      hidden_layers=(layer,), return_logits=cfg.loss == "target")
    if cfg.loss == "target":
        lp, mask = target_logprobs(out.logits, batch)
        return -(lp * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1)
    rows = jnp.arange(batch["input_ids"].shape[0])
    h = out.hidden[layer][rows, answer_pos].astype(jnp.float32)
    return jnp.mean((h - ref_hidden) ** 2, axis=-1)


@partial(jax.jit, static_argnums=(1, 3))
def token_gradients(params, config: ModelConfig, attack: AttackBatch, cfg: GCGConfig, suffix: jax.Array,
                    ref_hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(loss, d loss / d one-hot suffix [L, V]) of the mean loss over the prompts."""
    embedding = params["embed_tokens"]["embedding"]
    batch = {"input_ids": attack.input_ids, "attention_mask": attack.attention_mask, "loss_mask": attack.loss_mask}

    def loss_fn(one_hot):
        embeds = suffix_embeds(params, attack, one_hot @ embedding)
        return _loss_from(params, config, batch, embeds, cfg, ref_hidden, attack.answer_positions).mean()

    one_hot = jax.nn.one_hot(suffix, config.vocab_size, dtype=embedding.dtype)
    return jax.value_and_grad(loss_fn)(one_hot)


@partial(jax.jit, static_argnums=1)
def sample_candidates(grad: jax.Array, cfg: GCGConfig, suffix: jax.Array, allowed: jax.Array,
                      key: jax.Array) -> jax.Array:
    """[candidates, L] single-token swaps of ``suffix`` from the top-k (most negative gradient) tokens."""
    scores = jnp.where(allowed[None, :], -grad, -jnp.inf)
    top = jax.lax.top_k(scores, cfg.top_k)[1]  # [L, k]
    k_pos, k_tok = jax.random.split(key)
    position = jax.random.randint(k_pos, (cfg.candidates,), 0, suffix.shape[0])
    token = top[position, jax.random.randint(k_tok, (cfg.candidates,), 0, cfg.top_k)]
    return jnp.broadcast_to(suffix, (cfg.candidates, suffix.shape[0])).at[jnp.arange(cfg.candidates), position].set(
        token)


@partial(jax.jit, static_argnums=(1, 3))
def candidate_losses(params, config: ModelConfig, attack: AttackBatch, cfg: GCGConfig, suffixes: jax.Array,
                     ref_hidden: jax.Array) -> jax.Array:
    """Loss [C] of every candidate suffix [C, L] (mean over the prompts), in one batched forward."""
    c, p = suffixes.shape[0], attack.input_ids.shape[0]
    batch = attack.with_suffixes(suffixes)
    answer_pos = jnp.tile(jnp.asarray(attack.answer_positions), c)
    ref = jnp.tile(ref_hidden, (c, 1))
    return _loss_from(params, config, batch, None, cfg, ref, answer_pos).reshape(c, p).mean(-1)


@partial(jax.jit, static_argnums=(1,))
def suffix_success(params, config: ModelConfig, attack: AttackBatch, suffix: jax.Array) -> jax.Array:
    """bool [P]: the greedy answer after prompt + ``suffix`` is exactly the target, per prompt."""
    batch = attack.with_suffixes(suffix[None])
    logits = llama.apply(params, config, batch["input_ids"], batch["attention_mask"]).logits
    return greedy_correct(logits, batch)


def reference_hidden(params, config: ModelConfig, attack: AttackBatch, layer: int | None) -> jax.Array:
    """h_ref [P, D]: ``params``' hidden state at the last prompt token of the prompt alone (no suffix,
    no answer): the state from which that model predicts the answer."""
    layer = config.num_layers - 1 if layer is None else layer
    prompt_end = np.asarray(attack.suffix_positions)[:, 0] - 1
    mask = (np.arange(attack.input_ids.shape[1])[None] <= prompt_end[:, None]).astype(np.int32)
    out = llama.apply(params, config, jnp.asarray(attack.input_ids), jnp.asarray(mask), hidden_layers=(layer,),
                      return_logits=False)
    return out.hidden[layer][jnp.arange(len(prompt_end)), prompt_end].astype(jnp.float32)


def retokenizes(tokenizer, suffixes: np.ndarray) -> np.ndarray:
    """bool [C]: decode → encode gives back the same tokens (nanoGCG's filter)."""
    texts = tokenizer.batch_decode(suffixes.tolist(), clean_up_tokenization_spaces=False)
    again = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return np.array([list(a) == list(s) for a, s in zip(again, suffixes.tolist(), strict=True)])


def gcg(params, config: ModelConfig, tokenizer, attack: AttackBatch, cfg: GCGConfig,
        ref_hidden: jax.Array | None = None, initial: np.ndarray | None = None) -> dict:
    """Run GCG; return {"suffix", "suffix_text", "loss", "history" (best-so-far loss per step),
    "success" [P] bools with the best suffix, "steps_run"}."""
    allowed = allowed_tokens(tokenizer, config.vocab_size)
    if cfg.forbid_answer_tokens:
        allowed[np.unique(np.asarray(attack.input_ids)[np.asarray(attack.loss_mask) > 0])] = False
    if initial is None:
        filler = int(np.flatnonzero(allowed)[0])
        initial = np.full(cfg.suffix_length, filler, np.int32)
    if ref_hidden is None:
        ref_hidden = jnp.zeros((attack.input_ids.shape[0], config.hidden_size), jnp.float32)
    current = jnp.asarray(initial, jnp.int32)
    first_loss = float(candidate_losses(params, config, attack, cfg, current[None], ref_hidden)[0])
    buffer = [(first_loss, np.asarray(current))]
    key = jax.random.PRNGKey(cfg.seed)
    history, steps_run = [], 0
    for _ in range(cfg.steps):
        steps_run += 1
        current = jnp.asarray(buffer[0][1])
        _, grad = token_gradients(params, config, attack, cfg, current, ref_hidden)
        key, sub = jax.random.split(key)
        candidates = np.array(sample_candidates(grad, cfg, current, jnp.asarray(allowed), sub))
        ok = retokenizes(tokenizer, candidates)
        candidates[~ok] = np.asarray(current)
        losses = np.array(candidate_losses(params, config, attack, cfg, jnp.asarray(candidates), ref_hidden))
        losses[~ok] = np.inf
        best = int(np.argmin(losses))
        if losses[best] < buffer[-1][0] or len(buffer) < cfg.buffer_size:
            buffer.append((float(losses[best]), candidates[best]))
            buffer = sorted(buffer, key=lambda t: t[0])[: cfg.buffer_size]
        history.append(buffer[0][0])
        if cfg.stop_on_success and bool(np.all(suffix_success(params, config, attack, jnp.asarray(buffer[0][1])))):
            break
    suffix = np.asarray(buffer[0][1])
    success = np.asarray(suffix_success(params, config, attack, jnp.asarray(suffix)))
    return {"suffix": suffix.tolist(), "suffix_text": tokenizer.decode(suffix.tolist()), "loss": buffer[0][0],
            "initial_loss": first_loss, "history": history, "success": success.tolist(), "steps_run": steps_run}
