"""`unlearn-jax unlearn`: apply one objective to a model through the jitted, sharded, resumable engine.

Before training, everything frozen is computed once (reference NLLs, RMU's control vector and cached
activations); each step then gathers what its batch needs by record index. Forgetting is measured on
the whole forget set, retention on the retain set, before and after (and during, with --eval-every).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.config import UnlearnConfig, parse_stop_when
from unlearn_jax.data.records import load_records, parse_field_map
from unlearn_jax.data.sampler import CurriculumSampler, EpochSampler
from unlearn_jax.data.tokenize import TokenSet, encode_records
from unlearn_jax.engine.loop import LoopConfig, run_loop
from unlearn_jax.engine.optim import OptimizerConfig, make_optimizer
from unlearn_jax.engine.state import init_state, merge_params, param_paths, split_params
from unlearn_jax.engine.step import make_step
from unlearn_jax.errors import UserError
from unlearn_jax.evaluation.knowledge import record_stats, summarize
from unlearn_jax.models import sharding
from unlearn_jax.models.hf import LM, load_model
from unlearn_jax.objectives import METHODS, Hyper, Method
from unlearn_jax.objectives.reference import layer_outputs, reference_nll
from unlearn_jax.objectives.rmu import control_vector
from unlearn_jax.runs.rundir import finish_run, prepare_run_dir, versions
from unlearn_jax.runs.score import target_texts
from unlearn_jax.scores.memorization import least_memorized, memorization, score_records

FLOAT32_MAX = float(np.finfo(np.float32).max)  # a larger --lr overflows to inf in the update
RETAIN_CACHE_BYTES = 2 << 30  # frozen activations cached up to this size; above it, recomputed per step


@dataclasses.dataclass
class UnlearnData:
    forget: dict[str, TokenSet]  # target field -> encoded forget set (what the method trains on)
    forget_eval: TokenSet  # the forget records with their true answers (what forgetting is measured on)
    retain: TokenSet | None  # trained on when the method has a retain term; always evaluated when given
    is_text: bool  # text forget records: no prompt, so no answer accuracy (only NLL)
    forget_texts: list[str]  # the scored text of each forget record (answer or text), for zlib


def check_run(cfg: UnlearnConfig):
    """The checks that need neither the model nor the data: (method, the --stop-when test or None, mesh)."""
    if cfg.method not in METHODS:
        raise UserError(f"--method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    stop = parse_stop_when(cfg.stop_when)
    mesh = sharding.make_mesh(cfg.mesh)
    if cfg.batch_size % sharding.data_parallel_size(mesh):
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the mesh's "
                        f"{sharding.data_parallel_size(mesh)} data-parallel devices")
    return METHODS[cfg.method], stop, mesh


def resolve(cfg: UnlearnConfig, method: Method, num_layers: int) -> tuple[UnlearnConfig, Hyper]:
    """Fill the method's defaults and check every hyper-parameter's range (and the options that go together)."""
    d = method.defaults
    rmu_layer = cfg.rmu_layer if cfg.rmu_layer is not None else num_layers // 2
    cfg = dataclasses.replace(
        cfg,
        steps=cfg.steps if cfg.steps is not None else d.get("steps", 40),
        lr=cfg.lr if cfg.lr is not None else d.get("lr", 1e-3),
        beta=cfg.beta if cfg.beta is not None else d.get("beta", 0.1),
        alpha=cfg.alpha if cfg.alpha is not None else d.get("alpha", 1.0),
        rmu_layer=rmu_layer if method.name == "rmu" else cfg.rmu_layer,
    )
    checks = [("steps", cfg.steps >= 1, ">= 1"),
              ("lr", 0 < cfg.lr <= FLOAT32_MAX, f"positive and at most {FLOAT32_MAX:.3g} (float32)"),
              ("batch_size", cfg.batch_size >= 1, ">= 1"), ("beta", cfg.beta > 0, "positive"),
              ("alpha", cfg.alpha >= 0, ">= 0"), ("gamma", cfg.gamma >= 0, ">= 0"),
              ("retain_loss", cfg.retain_loss in ("nll", "kl"), "nll or kl"),
              ("eval_every", cfg.eval_every >= 0, ">= 0"), ("checkpoint_every", cfg.checkpoint_every >= 0, ">= 0"),
              ("log_every", cfg.log_every >= 0, ">= 0"),
              ("rmu_coeff", cfg.rmu_coeff is None or cfg.rmu_coeff > 0, "positive"),
              ("drop", 0 <= cfg.drop < 1, "in [0, 1)"), ("stages", cfg.stages >= 1, ">= 1"),
              ("curriculum", cfg.curriculum in ("none", "confidence", "reverse"), "none, confidence or reverse")]
    for name, ok, expected in checks:
        if not ok:
            raise UserError(f"--{name.replace('_', '-')} must be {expected} (got {getattr(cfg, name)!r})")
    if method.name == "rmu" and not 0 <= rmu_layer < num_layers:
        raise UserError(f"--rmu-layer {rmu_layer} is out of range: the model has layers 0..{num_layers - 1}")
    if cfg.select is None and cfg.drop:
        raise UserError("--drop needs --select SCORE (which records count as least memorized)")
    if cfg.rescore and cfg.curriculum == "none":
        raise UserError("--rescore needs --curriculum confidence or reverse")
    if method.uses_retain and cfg.alpha > 0 and not cfg.retain:
        raise UserError(f"--method {cfg.method} needs --retain DATA for its retain term (or pass --alpha 0)")
    hp = Hyper(alpha=cfg.alpha, gamma=cfg.gamma, beta=cfg.beta, margin=cfg.margin, retain_loss=cfg.retain_loss,
               rmu_layer=rmu_layer if method.name == "rmu" else 0)
    return cfg, hp


def default_trainable(method: Method, rmu_layer: int) -> str | None:
    """RMU: the MLP down-projections of the 3 layers up to the steered one; others: every parameter."""
    if method.name != "rmu":
        return None
    layers = "|".join(str(i) for i in range(max(0, rmu_layer - 2), rmu_layer + 1))
    return rf"^layers_({layers})/mlp/down_proj/"


def lowest_trainable_layer(trainable: dict) -> int | None:
    """Index of the lowest decoder layer holding a trainable parameter (None if the embedding is)."""
    layers = []
    for path in param_paths(trainable):
        head = path.split("/")[0]
        if not head.startswith("layers_"):
            return None
        layers.append(int(head.removeprefix("layers_")))
    return min(layers)


def load_data(cfg: UnlearnConfig, method: Method, lm: LM) -> UnlearnData:
    field_map = parse_field_map(cfg.field_map) if cfg.field_map else None
    forget_records = load_records(cfg.forget, field_map)
    is_text = "text" in forget_records[0]
    if is_text and method.forget_targets != ("answer",):
        raise UserError(f"--method {method.name} needs QA records (prompt/answer) in --forget, not text records")
    max_len = lm.config.max_position_embeddings
    targets = dict.fromkeys(("answer", *method.forget_targets))
    encoded = {t: encode_records(forget_records, lm.tokenizer, answer_field=t, max_length=max_len,
                                 source=f"--forget {cfg.forget}") for t in targets}
    retain = None
    if cfg.retain:
        retain = encode_records(load_records(cfg.retain, field_map), lm.tokenizer, max_length=max_len,
                                source=f"--retain {cfg.retain}")
    return UnlearnData({t: encoded[t] for t in method.forget_targets}, encoded["answer"], retain, is_text,
                       target_texts(forget_records))


def frozen_inputs(method: Method, cfg: UnlearnConfig, hp: Hyper, lm: LM, data: UnlearnData,
                  trainable: dict) -> tuple[dict, Hyper]:
    """What the objective needs but never trains, computed once from the original model."""
    params, config = lm.params, lm.config
    frozen: dict = {}
    if method.reference:
        frozen["ref_nll"] = {t: jnp.asarray(reference_nll(params, config, data.forget[t])) for t in method.reference}
    if hp.retain_loss == "kl" and method.uses_retain and hp.alpha > 0:
        frozen["ref_params"] = jax.tree_util.tree_map(jnp.copy, params)
    if method.name == "rmu":
        forget = data.forget["answer"]
        coeff = cfg.rmu_coeff
        if coeff is None:  # 2 × the mean norm of the steered layer's output on the forget set
            h = layer_outputs(params, config, forget, hp.rmu_layer)
            coeff = float(2 * np.linalg.norm(h, axis=-1)[forget.attention_mask > 0].mean())
        frozen["control"] = jnp.asarray(control_vector(config.hidden_size, coeff, cfg.seed))
        first = lowest_trainable_layer(trainable)
        if first is None or first > hp.rmu_layer:
            raise UserError(f"--trainable {cfg.trainable!r} must select parameters of layers at or below "
                            f"--rmu-layer {hp.rmu_layer} (RMU's loss cannot reach the others)")
        retain_bytes = data.retain.input_ids.size * config.hidden_size * 4
        if retain_bytes <= RETAIN_CACHE_BYTES:
            frozen["retain_target"] = jnp.asarray(layer_outputs(params, config, data.retain, hp.rmu_layer))
            if first > 0:
                frozen["forget_prefix"] = jnp.asarray(layer_outputs(params, config, forget, first - 1))
                frozen["retain_prefix"] = jnp.asarray(layer_outputs(params, config, data.retain, first - 1))
        else:
            frozen["frozen_params"] = jax.tree_util.tree_map(jnp.copy, params)
            first = 0
        hp = dataclasses.replace(hp, rmu_coeff=coeff, rmu_first_layer=first)
    return frozen, hp


def select_forget(cfg: UnlearnConfig, lm: LM, data: UnlearnData) -> tuple[UnlearnData, dict | None, list | None,
                                                                        np.ndarray]:
    """Selective unlearning: score the forget set with the model being unlearned and drop the fraction
    ``cfg.drop`` least memorized by ``cfg.select``; forgetting is still measured on the whole set.
    Returns (data, selection record for run.json, the kept records' memorization for a curriculum, the kept
    records' indices into the whole forget set)."""
    if cfg.select is None and cfg.curriculum == "none":
        return data, None, None, np.arange(len(data.forget_eval))
    score = cfg.select or "minkpp"
    rows = score_records(lm.params, lm.config, data.forget_eval, data.forget_texts)
    dropped = least_memorized(rows, score, cfg.drop)
    keep = np.setdiff1d(np.arange(len(rows)), dropped)
    data = dataclasses.replace(data, forget={t: s.subset(keep) for t, s in data.forget.items()})
    signed = memorization(rows, score)
    kept_memorization = [signed[i] for i in keep]
    selection = {"score": score, "drop": cfg.drop, "kept": len(keep),
                 "dropped": [{"id": rows[i]["id"], score: rows[i][score]} for i in dropped]}
    return data, selection, kept_memorization, keep


def evaluate_sets(params, lm: LM, data: UnlearnData) -> dict[str, float]:
    """forget_acc (QA only: greedy answer accuracy) and forget_nll on the whole forget set; retain_*
    likewise on the retain set when one was given."""
    s = summarize(record_stats(params, lm.config, data.forget_eval))
    out = {"forget_nll": s["nll"]} if data.is_text else {"forget_acc": s["acc"], "forget_nll": s["nll"]}
    if data.retain is not None:
        s = summarize(record_stats(params, lm.config, data.retain))
        out.update(retain_acc=s["acc"], retain_nll=s["nll"])
    return out


def unlearn(cfg: UnlearnConfig, *, resume: bool = False, force: bool = False, quiet: bool = False,
            say=print) -> dict:
    """Run one unlearning job; write the run directory; return run.json's content."""
    method, stop, mesh = check_run(cfg)
    out_path, work = prepare_run_dir(cfg.out, resume=resume, force=force)
    lm = load_model(cfg.model, mesh=mesh)
    if lm.tokenizer is None:
        raise UserError(f"--model {cfg.model}: has no tokenizer files; unlearning needs one to encode the data")
    cfg, hp = resolve(cfg, method, lm.config.num_layers)
    optimizer_cfg = OptimizerConfig(name=cfg.optimizer, lr=cfg.lr, max_grad_norm=cfg.max_grad_norm,
                                    warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
    needs_retain = method.uses_retain and hp.alpha > 0
    if not method.uses_retain and cfg.retain and not quiet:
        say(f"note: --method {cfg.method} has no retain term; --retain is only evaluated, never trained on")
    data, selection, initial_memorization, kept = select_forget(cfg, lm, load_data(cfg, method, lm))
    trainable_regex = cfg.trainable if cfg.trainable is not None else default_trainable(method, hp.rmu_layer)
    trainable, frozen_params = split_params(lm.params, trainable_regex)
    frozen, hp = frozen_inputs(method, cfg, hp, lm, data, trainable)
    before = evaluate_sets(lm.params, lm, data)

    optimizer = make_optimizer(optimizer_cfg)
    state = init_state(trainable, optimizer, cfg.seed)
    if cfg.curriculum == "none":
        forget_sampler = EpochSampler(len(next(iter(data.forget.values()))), cfg.batch_size, cfg.seed, cfg.shuffle)
    else:
        forget_sampler = CurriculumSampler(tuple(initial_memorization), cfg.batch_size, cfg.seed, cfg.stages, cfg.steps,
                                           cfg.curriculum, cfg.rescore)
    retain_sampler = EpochSampler(len(data.retain), cfg.batch_size, cfg.seed + 1, cfg.shuffle) if needs_retain \
        else None

    def memorization_now(state):
        params = merge_params(state.params, frozen_params)
        subset = data.forget_eval.subset(kept)
        rows = score_records(params, lm.config, subset, [data.forget_texts[i] for i in kept])
        return memorization(rows, selection["score"])

    def next_batch(position, state):
        if cfg.curriculum == "none":
            index, forget_pos = forget_sampler.next_batch(position["forget"])
        else:
            index, forget_pos = forget_sampler.next_batch(position["forget"], lambda: memorization_now(state))
        batch = {"forget": {t: data.forget[t].rows(index) for t in data.forget}}
        batch["forget"]["index"] = index.astype(np.int32)
        new_position = {"forget": forget_pos, "retain": position["retain"]}
        if retain_sampler is not None:
            r_index, new_position["retain"] = retain_sampler.next_batch(position["retain"])
            batch["retain"] = {**data.retain.rows(r_index), "index": r_index.astype(np.int32)}
        return sharding.shard_batch(batch, mesh), new_position

    def objective(params, constants, batch, rng):
        return method.loss(params, lm.config, constants, batch["forget"], batch.get("retain"), hp)

    def evaluate(state):
        return evaluate_sets(merge_params(state.params, frozen_params), lm, data)

    loop = LoopConfig(steps=cfg.steps, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                      eval_every=cfg.eval_every if stop or cfg.eval_every else 0)
    result = run_loop(make_step(objective, optimizer), state, frozen_params, frozen, next_batch,
                      {"forget": forget_sampler.start(), "retain": EpochSampler.start()}, loop, work, resume=resume,
                      evaluate=evaluate if loop.eval_every else None, should_stop=stop[1] if stop else None,
                      quiet=quiet, description=f"unlearn {cfg.method}")
    final_params = merge_params(result.state.params, frozen_params)
    after = evaluate_sets(final_params, lm, data)
    run = {
        "command": "unlearn",
        "config": dataclasses.asdict(cfg),
        "resolved": {"hyper": dataclasses.asdict(hp), "trainable": trainable_regex,
                     "trainable_params": int(sum(x.size for x in jax.tree_util.tree_leaves(trainable))),
                     "optimizer": dataclasses.asdict(optimizer_cfg),
                     "forget_records": len(next(iter(data.forget.values()))), "selection": selection,
                     "retain_records": len(data.retain) if data.retain is not None else 0},
        "metrics": {"before": before, "after": after, "steps": int(result.state.step),
                    "stopped_early": result.stopped_early, "skipped_steps": int(sum(
                        h.get("skipped", 0) for h in result.history if "loss" in h))},
        "timings": {"wall_s": round(result.seconds, 2), "steps_run_in_last_process": result.steps_run,
                    "ms_per_step": round(1000 * result.seconds / max(result.steps_run, 1), 1)},
        "versions": versions(),
    }
    finish_run(work, out_path, LM(lm.config, final_params, lm.tokenizer, lm.hf_config), run)
    if not quiet:
        say(f"unlearn {cfg.method}: {out_path}  forget acc {before.get('forget_acc', float('nan')):.3f} -> "
            f"{after.get('forget_acc', float('nan')):.3f}  retain acc {before.get('retain_acc', float('nan')):.3f}"
            f" -> {after.get('retain_acc', float('nan')):.3f}  ({result.seconds:.1f} s)")
    return json.loads((Path(out_path) / "run.json").read_text())
