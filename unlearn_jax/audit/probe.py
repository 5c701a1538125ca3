"""Is a forgotten answer still decodable from the hidden states?

At the position that predicts an answer's first token (the last prompt token), for every decoder layer:
- **logit lens**: the final norm and LM head applied to that layer's output; a hit when its argmax is
  the answer's first token;
- **linear probe**: multinomial logistic regression from that layer's output to the answer's first token,
  trained on *retain* records and tested on *forget* records of the same attribute (``group``), one probe
  per group (features standardised on the training set, L2 weight ``l2``, full-batch Adam). Only forget
  records whose answer occurs among the group's training answers are tested; chance = the share of the
  most frequent training answer among them. A retain hold-out (every fifth fact) checks the probe works.
The gold model never knew the forget answers, so its probe sits near chance; a model that hides them
keeps them linearly readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax.audit.relearn import fact_key
from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.errors import UserError
from unlearn_jax.models import llama
from unlearn_jax.models.llama import ModelConfig
from unlearn_jax.objectives.reference import map_records


def answer_positions(data: TokenSet) -> tuple[np.ndarray, np.ndarray]:
    """(position predicting the first answer token, that token's id) per record."""
    first = np.argmax(data.loss_mask > 0, axis=1)
    if np.any(first == 0):
        raise UserError("probing needs QA records with a prompt (a first answer token after it)")
    return first - 1, data.input_ids[np.arange(len(data)), first]


@partial(jax.jit, static_argnums=1)
def _features(params, config: ModelConfig, batch: dict) -> dict:
    out = llama.apply(params, config, batch["input_ids"], batch["attention_mask"], batch.get("position_ids"),
                      hidden_layers=tuple(range(config.num_layers)), return_logits=False)
    rows = jnp.arange(batch["input_ids"].shape[0])
    position = jnp.argmax(batch["loss_mask"] > 0, axis=1) - 1  # the last prompt token (see answer_positions)
    hidden = jnp.stack([out.hidden[layer][rows, position] for layer in range(config.num_layers)], axis=1)
    lens = jnp.argmax(llama.logit_lens(params, config, hidden), axis=-1)
    return {"hidden": hidden.astype(jnp.float32), "lens": lens}


def layer_features(params, config: ModelConfig, data: TokenSet, batch_size: int = 64) -> dict[str, np.ndarray]:
    """{"hidden": [N, L, D] layer outputs at the answer position, "lens": [N, L] logit-lens argmax,
    "target": [N] first answer token}."""
    _, target = answer_positions(data)
    return {**map_records(partial(_features, params, config), data, batch_size), "target": target}


@partial(jax.jit, static_argnames=("classes", "steps"))
def _fit(x, y, classes: int, l2: float, steps: int, lr: float):
    def loss(w):
        logits = x @ w["w"] + w["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + l2 * jnp.sum(w["w"] ** 2)

    weights = {"w": jnp.zeros((x.shape[1], classes)), "b": jnp.zeros(classes)}
    opt = optax.adam(lr)

    def body(carry, _):
        w, state = carry
        updates, state = opt.update(jax.grad(loss)(w), state)
        return (optax.apply_updates(w, updates), state), None

    (weights, _), _ = jax.lax.scan(body, (weights, opt.init(weights)), None, length=steps)
    return weights


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                          l2: float = 1e-3, steps: int = 300, lr: float = 0.05) -> tuple[float, np.ndarray]:
    """Fit on (train_x [N, D], train_y labels) and return (test accuracy, per-record hits)."""
    labels, y = np.unique(train_y, return_inverse=True)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    w = _fit(jnp.asarray((train_x - mean) / std), jnp.asarray(y), len(labels), l2, steps, lr)
    predicted = labels[np.asarray(jnp.argmax(jnp.asarray((test_x - mean) / std) @ w["w"] + w["b"], -1))]
    hits = predicted == test_y
    return float(hits.mean()), hits


def probe_groups(retain: Sequence[Mapping], forget: Sequence[Mapping], retain_target: np.ndarray,
                 forget_target: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per group: (retain train indices, retain hold-out indices, testable forget indices)."""
    groups = {}
    for group in sorted({r.get("group") for r in forget} - {None}):
        r_idx = np.array([i for i, r in enumerate(retain) if r.get("group") == group])
        if len(r_idx) < 4:
            continue
        facts = list(dict.fromkeys(fact_key(retain[i]) for i in r_idx))
        held_facts = set(facts[::5])
        held = np.array([i for i in r_idx if fact_key(retain[i]) in held_facts])
        train = np.array([i for i in r_idx if fact_key(retain[i]) not in held_facts])
        known = set(retain_target[train].tolist())
        if len(known) < 2:
            continue
        test = np.array([i for i, r in enumerate(forget) if r.get("group") == group and forget_target[i] in known])
        if len(test):
            groups[group] = (train, held, test)
    if not groups:
        raise UserError("probe: no attribute (record 'group') has retain records to train a probe on and "
                        "forget records whose answers occur among them")
    return groups


def probe_layers(retain_features: dict, forget_features: dict,
                 groups: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """Per layer: logit-lens accuracy on forget, linear-probe accuracy on forget (pooled over groups) and
    on the retain hold-out, and chance; plus the per-record forget hits of the best layer."""
    layers = forget_features["hidden"].shape[1]
    test = np.concatenate([g[2] for g in groups.values()])
    ft = forget_features["target"]
    rows = []
    for layer in range(layers):
        forget_hits, retain_hits = [], []
        for train, held, test_idx in groups.values():
            tx, ty = retain_features["hidden"][train, layer], retain_features["target"][train]
            _, hits = linear_probe_accuracy(tx, ty, forget_features["hidden"][test_idx, layer], ft[test_idx])
            forget_hits.append(hits)
            if len(held):
                _, hits = linear_probe_accuracy(tx, ty, retain_features["hidden"][held, layer],
                                                retain_features["target"][held])
                retain_hits.append(hits)
        lens_hits = forget_features["lens"][:, layer] == ft
        rows.append({"layer": layer, "logit_lens_forget": float(lens_hits.mean()),
                     "probe_forget": float(np.concatenate(forget_hits).mean()),
                     "probe_retain_heldout": float(np.concatenate(retain_hits).mean()) if retain_hits else None,
                     "probe_forget_hits": np.concatenate(forget_hits).tolist(),
                     "logit_lens_hits": lens_hits.tolist()})
    chance = 0.0
    for train, _, test_idx in groups.values():
        values, counts = np.unique(retain_features["target"][train], return_counts=True)
        chance += np.sum(ft[test_idx] == values[np.argmax(counts)])
    return {"layers": rows, "chance": float(chance / len(test)), "groups": sorted(groups),
            "tested_forget_records": len(test)}
