"""`unlearn-jax audit`: attack an unlearned model every known way and judge whether the forget knowledge
was removed, hidden or not forgotten, against the gold model retrained without the forget data.

Models: M (``--model``, the unlearned one), M0 (``--original``, before unlearning) and optionally MR
(``--retrained``, the gold model). Every probe applies the *same* attack to each and measures forget and
retain knowledge (greedy answer accuracy, mean answer NLL); ``audit.verdict`` turns the per-record forget
hits into a verdict. Output directory: ``audit.json`` (summaries; per-record hits are dropped),
``report.md``, ``*.png`` and ``run.json`` (written last; the directory appears only when complete).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from unlearn_jax.audit import PROBES
from unlearn_jax.audit import verdict as verdicts
from unlearn_jax.audit.capacity import DEFAULT_CHECKPOINTS as CAPACITY_CHECKPOINTS
from unlearn_jax.audit.capacity import DEFAULT_TARGET, capacity
from unlearn_jax.audit.embed_attack import EmbedAttackConfig, embed_attack
from unlearn_jax.audit.gcg import GCGConfig, build_attack_batch, gcg, reference_hidden, suffix_success
from unlearn_jax.audit.probe import layer_features, probe_groups, probe_layers
from unlearn_jax.audit.prune import DEFAULT_SPARSITIES, input_feature_norms, magnitude_prune, wanda_prune
from unlearn_jax.audit.quantize import DEFAULT_SCHEMES, changed_code_fraction, fake_quantize, parse_schemes
from unlearn_jax.audit.relearn import FinetuneConfig, fact_key, finetune_curve, split_by_fact
from unlearn_jax.audit.report import write_report
from unlearn_jax.data.records import load_records, parse_field_map
from unlearn_jax.data.tokenize import TokenSet, encode_records
from unlearn_jax.errors import UserError
from unlearn_jax.evaluation.knowledge import record_stats, summarize
from unlearn_jax.fileio import replace_directory, write_json_atomic
from unlearn_jax.models.hf import LM, load_model
from unlearn_jax.runs.rundir import prepare_run_dir, versions


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    model: str
    original: str
    forget: str
    retain: str
    out: str
    retrained: str | None = None
    probes: tuple[str, ...] = PROBES
    quant_schemes: str = DEFAULT_SCHEMES
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES
    relearn_fraction: float = 0.2
    relearn_steps: tuple[int, ...] = (0, 5, 10, 20, 40)
    relearn_lr: float = 3e-4
    capacity_data: str | None = None
    capacity_steps: tuple[int, ...] = CAPACITY_CHECKPOINTS
    capacity_target: float = DEFAULT_TARGET
    max_retain: int = 400
    attack_facts: int = 8
    suffix_length: int = 20
    gcg_steps: int = 40
    gcg_candidates: int = 128
    gcg_top_k: int = 256
    gcg_loss: str = "target"
    embed_steps: int = 100
    seed: int = 0
    field_map: str | None = None

    def __post_init__(self):
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown or not self.probes:
            raise UserError(f"--probes: unknown probe {unknown[0]!r}: choose from {', '.join(PROBES)}"
                            if unknown else "--probes: name at least one probe")
        if any(not 0 < s < 1 for s in self.sparsities):
            raise UserError(f"--sparsities must be in (0, 1) (got {list(self.sparsities)})")
        if not 0 < self.relearn_fraction < 1:
            raise UserError(f"--relearn-fraction must be in (0, 1) (got {self.relearn_fraction})")
        if not 0 < self.capacity_target <= 1:
            raise UserError(f"--capacity-target must be in (0, 1] (got {self.capacity_target})")
        if self.max_retain < 4:
            raise UserError(f"--max-retain must be >= 4 (got {self.max_retain})")
        if self.attack_facts < 2:
            raise UserError(f"--attack-facts must be >= 2 (per-fact attacks and a universal suffix; got "
                            f"{self.attack_facts})")
        parse_schemes(self.quant_schemes)
        GCGConfig(suffix_length=self.suffix_length, top_k=self.gcg_top_k, candidates=self.gcg_candidates,
                  steps=self.gcg_steps, loss=self.gcg_loss)
        EmbedAttackConfig(steps=self.embed_steps)
        FinetuneConfig(self.relearn_steps, self.relearn_lr)
        FinetuneConfig(self.capacity_steps, self.relearn_lr)


@dataclasses.dataclass(frozen=True)
class AuditData:
    forget_records: list[dict]
    retain_records: list[dict]
    forget: TokenSet
    retain: TokenSet


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers, got {text!r}") from None


def load_models(cfg: AuditConfig) -> dict[str, LM]:
    """M, M0 (and MR): they must share the tokenizer (records are encoded once, with M's)."""
    paths = {"model": cfg.model, "original": cfg.original, "retrained": cfg.retrained}
    models = {role: load_model(path) for role, path in paths.items() if path is not None}
    if models["model"].tokenizer is None:
        raise UserError(f"--model {cfg.model}: has no tokenizer files")
    vocab = models["model"].tokenizer.get_vocab()
    for role, lm in models.items():
        if lm.tokenizer is not None and lm.tokenizer.get_vocab() != vocab:
            raise UserError(f"--{role} {paths[role]}: its tokenizer differs from --model's; the audit compares "
                            "models on the same tokens")
        if lm.config.vocab_size < len(vocab):
            raise UserError(f"--{role} {paths[role]}: vocabulary of {lm.config.vocab_size} is smaller than the "
                            f"tokenizer's {len(vocab)}")
    return models


def load_audit_data(cfg: AuditConfig, lm: LM) -> AuditData:
    field_map = parse_field_map(cfg.field_map) if cfg.field_map else None
    forget = load_records(cfg.forget, field_map)
    retain = load_records(cfg.retain, field_map)
    for flag, records in (("--forget", forget), ("--retain", retain)):
        if "prompt" not in records[0]:
            raise UserError(f"{flag} {getattr(cfg, flag[2:])}: the audit needs QA records (prompt, answer)")
    if len(retain) > cfg.max_retain:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(retain))[: cfg.max_retain])
        retain = [retain[i] for i in keep]
    max_len = lm.config.max_position_embeddings
    return AuditData(forget, retain,
                     encode_records(forget, lm.tokenizer, max_length=max_len, source=f"--forget {cfg.forget}"),
                     encode_records(retain, lm.tokenizer, max_length=max_len, source=f"--retain {cfg.retain}"))


def knowledge(params, lm: LM, data: AuditData) -> dict:
    """Forget and retain accuracy/NLL, and the per-record forget hits (``forget_correct``)."""
    forget = record_stats(params, lm.config, data.forget)
    return {"forget": summarize(forget), "retain": summarize(record_stats(params, lm.config, data.retain)),
            "forget_correct": forget["correct"].astype(bool).tolist()}


class Judge:
    """Applies ``verdict`` with MR as the baseline when given, else M itself before the attack."""

    def __init__(self, has_retrained: bool, seed: int):
        self.baseline = "retrained" if has_retrained else "self"
        self.seed = seed

    def not_forgotten(self, clean: dict[str, list]) -> tuple[bool, dict]:
        if self.baseline == "retrained":
            test = verdicts.excess(clean["model"], clean["retrained"], seed=self.seed)
            return test["significant"], test
        test = verdicts.excess(clean["original"], clean["model"], seed=self.seed)
        return not test["significant"], test

    def attacked(self, attacked: dict[str, list], clean: dict[str, list]) -> dict:
        baseline = attacked["retrained"] if self.baseline == "retrained" else clean["model"]
        return verdicts.excess(attacked["model"], baseline, seed=self.seed)

    def probe_verdict(self, clean: dict[str, list], settings: dict[str, dict[str, list]]) -> dict:
        not_forgotten, before = self.not_forgotten(clean)
        tests = {name: self.attacked(hits, clean) for name, hits in settings.items()}
        worst = max(tests, key=lambda k: tests[k]["excess"]) if tests else None
        return {"verdict": verdicts.judge(not_forgotten, list(tests.values())), "before": before,
                "tests": tests, "worst_setting": worst}


def run_quant(cfg, models, data, judge, clean, each) -> dict:
    schemes = parse_schemes(cfg.quant_schemes)
    results = {role: {"clean": clean[role]} for role in models}
    for scheme in schemes:
        for role, value in each(f"quant/{scheme.name}",
                                lambda lm, s=scheme: knowledge(fake_quantize(lm.params, s), lm, data)).items():
            results[role][scheme.name] = value
    changed = {s.name: changed_code_fraction(models["model"].params, models["original"].params, s) for s in schemes}
    settings = {s.name: {role: results[role][s.name]["forget_correct"] for role in models} for s in schemes}
    return {**judge.probe_verdict(_clean_hits(clean), settings), **results, "changed_codes_vs_original": changed}


def run_prune(cfg, models, data, judge, clean, each) -> dict:
    def prune_all(lm) -> dict:
        norms = input_feature_norms(lm.params, lm.config, data.retain)
        out = {}
        for sparsity in cfg.sparsities:
            out[f"magnitude-{sparsity:g}"] = knowledge(magnitude_prune(lm.params, sparsity), lm, data)
            out[f"wanda-{sparsity:g}"] = knowledge(wanda_prune(lm.params, norms, sparsity), lm, data)
        return out

    results = {role: {"clean": clean[role], **pruned} for role, pruned in each("prune", prune_all).items()}
    names = [k for k in results["model"] if k != "clean"]
    settings = {n: {role: results[role][n]["forget_correct"] for role in models} for n in names}
    return {**judge.probe_verdict(_clean_hits(clean), settings), **results}


def run_relearn(cfg, models, data, judge, clean, each) -> dict:
    train, held = split_by_fact(data.forget_records, cfg.relearn_fraction, cfg.seed)
    ft = FinetuneConfig(cfg.relearn_steps, cfg.relearn_lr, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    sources = {"forget": data.forget.subset(train),
               "retain": data.retain.subset(rng.permutation(len(data.retain))[: max(len(train), 1)])}
    evaluate = {"heldout": data.forget.subset(held), "retain": data.retain}
    results = {role: {} for role in models}
    settings = {}
    for source, train_set in sources.items():
        for role, curve in each(f"relearn/{source}", lambda lm, t=train_set: finetune_curve(
                lm.params, lm.config, t, evaluate, ft)).items():
            results[role][source] = curve
        for k, step in enumerate(cfg.relearn_steps):
            if step:
                settings[f"{source}@{step}"] = {role: results[role][source][k]["heldout_correct"] for role in models}
    held_clean = {role: results[role]["forget"][0]["heldout_correct"] for role in models} \
        if cfg.relearn_steps[0] == 0 else {role: [clean[role]["forget_correct"][i] for i in held] for role in models}
    return {**judge.probe_verdict(held_clean, settings), **results,
            "split": {"relearn_records": len(train), "heldout_records": len(held), "fraction": cfg.relearn_fraction}}


def run_probe(cfg, models, data, judge, clean, each) -> dict:
    first = next(iter(models.values()))
    features = each("probe/features", lambda lm: (layer_features(lm.params, lm.config, data.retain),
                                                  layer_features(lm.params, lm.config, data.forget)))
    retain_target, forget_target = features["model"][0]["target"], features["model"][1]["target"]
    groups = probe_groups(data.retain_records, data.forget_records, retain_target, forget_target)
    tested = np.concatenate([g[2] for g in groups.values()])
    results = {role: probe_layers(r, f, groups) for role, (r, f) in features.items()}
    settings = {}
    for layer in range(first.config.num_layers):
        settings[f"linear@{layer}"] = {role: results[role]["layers"][layer]["probe_forget_hits"] for role in models}
    clean_tested = {role: [clean[role]["forget_correct"][i] for i in tested] for role in models}
    lens = {f"lens@{layer}": {role: results[role]["layers"][layer]["logit_lens_hits"] for role in models}
            for layer in range(first.config.num_layers)}
    probe_part = judge.probe_verdict(clean_tested, settings)
    lens_part = judge.probe_verdict(_clean_hits(clean), lens)
    verdict = verdicts.overall([probe_part["verdict"], lens_part["verdict"]])
    return {"verdict": verdict, "linear": probe_part, "logit_lens": lens_part, **results}


def run_capacity(cfg, models, data, judge, clean, each) -> dict:
    path = cfg.capacity_data or _world_holdout(cfg.forget)
    if path is None:
        raise UserError("--probes capacity needs --capacity-data DATA: new QA facts none of the models saw "
                        "(for a world's forget file, the world's holdout.jsonl is used)")
    records = load_records(path, parse_field_map(cfg.field_map) if cfg.field_map else None)
    lm = models["model"]
    new_task = encode_records(records, lm.tokenizer, max_length=lm.config.max_position_embeddings,
                              source=f"--capacity-data {path}")
    ft = FinetuneConfig(cfg.capacity_steps, cfg.relearn_lr, seed=cfg.seed)
    results = each("capacity", lambda m: capacity(m.params, m.config, new_task, ft, cfg.capacity_target))
    final = {role: results[role]["curve"][-1]["new_correct"] for role in models}
    baseline = "retrained" if judge.baseline == "retrained" else "original"
    not_forgotten, before = judge.not_forgotten(_clean_hits(clean))
    lost = verdicts.excess(final[baseline], final["model"], seed=cfg.seed)
    return {"verdict": verdicts.judge(not_forgotten, [lost]), "before": before,
            "tests": {f"capacity lost vs {baseline}": lost}, "data": str(path), **results}


def attack_sample(records: list[dict], count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` forget records, one per fact, seeded."""
    first = {}
    for i, r in enumerate(records):
        first.setdefault(fact_key(r), i)
    picks = np.array(list(first.values()))
    return np.sort(np.random.default_rng(seed).permutation(picks)[: min(count, len(picks))])


def run_adversarial(cfg, models, data, judge, clean, each, name, attack_one) -> dict:
    """Per-fact attacks on a sample of forget facts, and one universal suffix fitted on the first half of
    them and tested on the second; ``attack_one(lm, batch) -> success [P]``."""
    picked = attack_sample(data.forget_records, cfg.attack_facts, cfg.seed)
    records = [data.forget_records[i] for i in picked]
    fit, test = records[: len(records) // 2], records[len(records) // 2:]
    results, settings = {}, {"per-fact": {}, "universal (held-out facts)": {}}
    def batch(lm, rs):
        return build_attack_batch(lm.tokenizer, [r["prompt"] for r in rs], [r["answer"] for r in rs],
                                  cfg.suffix_length, lm.config.max_position_embeddings)

    def attack_all(lm) -> tuple[list, list]:
        per_fact = [bool(attack_one(lm, batch(lm, [r]))[0]) for r in records]
        return per_fact, list(attack_one(lm, batch(lm, fit), held_out=batch(lm, test)))

    for role, (per_fact, universal) in each(name, attack_all).items():
        settings["per-fact"][role] = per_fact
        settings["universal (held-out facts)"][role] = [False] * len(fit) + list(universal)
        results[role] = {"per_fact_success": float(np.mean(per_fact)),
                         "universal_heldout_success": float(np.mean(universal)),
                         "clean": float(np.mean([clean[role]["forget_correct"][i] for i in picked]))}
    clean_picked = {role: [clean[role]["forget_correct"][i] for i in picked] for role in models}
    return {**judge.probe_verdict(clean_picked, settings), **results, "facts": len(records)}


def run_gcg(cfg, models, data, judge, clean, each) -> dict:
    gcfg = GCGConfig(suffix_length=cfg.suffix_length, top_k=cfg.gcg_top_k, candidates=cfg.gcg_candidates,
                     steps=cfg.gcg_steps, seed=cfg.seed, loss=cfg.gcg_loss)
    original = models["original"]

    def attack_one(lm, attack, held_out=None):
        # representation loss: pull the attacked model's state towards the original's on the same prompts
        ref = reference_hidden(original.params, original.config, attack, gcfg.layer) \
            if gcfg.loss == "representation" else None
        result = gcg(lm.params, lm.config, lm.tokenizer, attack, gcfg, ref_hidden=ref)
        if held_out is None:
            return result["success"]
        return np.asarray(suffix_success(lm.params, lm.config, held_out, jnp.asarray(result["suffix"]))).tolist()

    return run_adversarial(cfg, models, data, judge, clean, each, "gcg", attack_one)


def run_embed(cfg, models, data, judge, clean, each) -> dict:
    ecfg = EmbedAttackConfig(steps=cfg.embed_steps)

    def attack_one(lm, attack, held_out=None):
        result = embed_attack(lm.params, lm.config, lm.tokenizer, attack, ecfg, held_out=held_out)
        return result["success"] if held_out is None else result["held_out_success"]

    return run_adversarial(cfg, models, data, judge, clean, each, "embed", attack_one)


RUNNERS: dict[str, Callable] = {"quant": run_quant, "prune": run_prune, "relearn": run_relearn, "probe": run_probe,
                                "capacity": run_capacity, "gcg": run_gcg, "embed": run_embed}


def _clean_hits(clean: dict[str, dict]) -> dict[str, list]:
    return {role: result["forget_correct"] for role, result in clean.items()}


def _world_holdout(forget_path: str) -> str | None:
    folder = Path(forget_path).absolute().parent
    candidate = folder / "holdout.jsonl"
    return str(candidate) if (folder / "world.json").exists() and candidate.exists() else None


def strip_hits(obj):
    """Drop per-record hit lists (``*_correct``, ``*_hits``) from nested results before writing them."""
    if isinstance(obj, dict):
        return {k: strip_hits(v) for k, v in obj.items() if not (k.endswith("_correct") or k.endswith("_hits"))}
    if isinstance(obj, list):
        return [strip_hits(v) for v in obj]
    return obj


class ReferenceCache:
    """Results of the reference models (original, retrained) shared between audits that use the same
    references, data and probe settings (the demo audits seven models against one original and one gold
    model): keyed by (role, its path, every audit setting but --model and --out, what was computed)."""

    def __init__(self):
        self.results: dict = {}

    def each(self, cfg: AuditConfig, models: dict[str, LM]) -> Callable[[str, Callable], dict]:
        """``each(key, fn)`` → {role: fn(lm)}, reusing the references' earlier results."""
        scope = repr(dataclasses.replace(cfg, model="", out=""))
        paths = {"original": cfg.original, "retrained": cfg.retrained}

        def each(key: str, fn: Callable) -> dict:
            out = {}
            for role, lm in models.items():
                if role == "model":
                    out[role] = fn(lm)
                    continue
                slot = (role, paths[role], scope, key)
                if slot not in self.results:
                    self.results[slot] = fn(lm)
                out[role] = self.results[slot]
            return out

        return each


def audit(cfg: AuditConfig, *, force: bool = False, quiet: bool = False, cache: ReferenceCache | None = None) -> dict:
    """Run the probes, write the audit directory, return audit.json's content. ``cache`` shares the
    reference models' results with other audits (a fresh one per call by default)."""
    out, work = prepare_run_dir(cfg.out, resume=False, force=force)
    started = time.perf_counter()
    models = load_models(cfg)
    data = load_audit_data(cfg, models["model"])
    judge = Judge("retrained" in models, cfg.seed)
    each = (cache or ReferenceCache()).each(cfg, models)
    clean = each("clean", lambda lm: knowledge(lm.params, lm, data))
    probes, timings = {}, {}
    for name in cfg.probes:
        begin = time.perf_counter()
        if not quiet:
            print(f"audit: {name} ...", flush=True)
        probes[name] = RUNNERS[name](cfg, models, data, judge, clean, each)
        timings[name] = round(time.perf_counter() - begin, 2)
    result = {
        "probes": strip_hits(probes),
        "overall": verdicts.overall([p["verdict"] for p in probes.values()]),
        "baseline": judge.baseline,
        "judgement": ("against the gold model retrained without the forget data" if judge.baseline == "retrained"
                      else "weaker: no --retrained model, so attacks are compared with the model itself before "
                           "the attack and forgetting with the original"),
        "clean": strip_hits(clean),
        "margin": verdicts.MARGIN,
        "confidence": verdicts.CONFIDENCE,
    }
    work.mkdir(parents=True, exist_ok=True)
    write_report(work, result, cfg)
    write_json_atomic(work / "audit.json", result)
    run = {"command": "audit", "config": dataclasses.asdict(cfg), "overall": result["overall"],
           "timings": {"wall_s": round(time.perf_counter() - started, 2), "probes_s": timings},
           "versions": versions()}
    write_json_atomic(work / "run.json", run)
    replace_directory(work, out)
    if not quiet:
        print(summary_text(result, out))
    return result


def summary_text(result: dict, out: Path) -> str:
    lines = [f"audit: {out}  overall: {result['overall'].upper()}  (baseline: {result['baseline']})"]
    for name, probe in result["probes"].items():
        lines.append(f"  {name:<9} {probe['verdict']}")
    return "\n".join(lines)

