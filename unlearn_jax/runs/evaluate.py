"""`unlearn-jax eval`: knowledge metrics per split and membership inference, as one JSON file.

Suites:
- ``knowledge``: per split (a world's forget, retain, neighbours and holdout files, or ``--data``) the
  metrics of ``evaluation.knowledge.knowledge_metrics``; **model utility** = the harmonic mean of answer
  probability, ROUGE-L recall and truth score over the retain and neighbour splits; with ``--retrained``
  (the gold model), **forget quality** = the KS p-value of the truth ratios on the forget split.
- ``mia``: forget (members) vs holdout (never trained) AUCs for loss, zlib, Min-K%, Min-K%++ (k = 0.4);
  with ``--retrained``, PrivLeak per attack relative to the gold model's AUC.
"""

from __future__ import annotations

import time
from pathlib import Path

from unlearn_jax.data import world as world_lib
from unlearn_jax.data.records import load_records, parse_field_map
from unlearn_jax.errors import UserError
from unlearn_jax.evaluation.knowledge import forget_quality, harmonic_mean, knowledge_metrics
from unlearn_jax.evaluation.mia import mia_aucs, priv_leak
from unlearn_jax.fileio import write_json_atomic
from unlearn_jax.models.hf import load_model
from unlearn_jax.runs.rundir import versions

SUITES = ("knowledge", "mia")
WORLD_SPLITS = ("forget", "retain", "neighbours", "holdout")
UTILITY_SPLITS = ("retain", "neighbours")
UTILITY_METRICS = ("prob", "rouge_l_recall", "truth")


def parse_suites(text: str) -> tuple[str, ...]:
    suites = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise UserError(f"--suite: unknown suite {unknown[0]!r}: choose from {', '.join(SUITES)}" if unknown
                        else "--suite: name at least one suite")
    return suites


def evaluate(model: str, out: str, *, world: str | None = None, data: str | None = None,
             retrained: str | None = None, suites: str = "knowledge,mia", field_map: str | None = None,
             force: bool = False, quiet: bool = False) -> dict:
    chosen = parse_suites(suites)
    out_path = Path(out)
    if out_path.is_dir():
        raise UserError(f"--out {out}: is a directory; give a .json file path")
    if out_path.exists() and not force:
        raise UserError(f"--out {out}: already exists (pass --force to replace it)")
    if world is None and data is None:
        raise UserError("eval needs --world DIR (every split) or --data DATA (one file)")
    if "mia" in chosen and world is None:
        raise UserError("--suite mia needs --world DIR (forget records as members, holdout as non-members)")
    started = time.perf_counter()
    splits = {}
    if world is not None:
        manifest = world_lib.load_world(world)
        splits = {name: load_records(world_lib.world_path(manifest, f"{name}.jsonl")) for name in WORLD_SPLITS}
    if data is not None:
        splits["data"] = load_records(data, parse_field_map(field_map) if field_map else None)
    models = {"model": load_model(model)}
    if retrained:
        models["retrained"] = load_model(retrained)
    result: dict = {"model": model, "retrained": retrained, "world": world, "data": data, "suites": list(chosen)}
    if "knowledge" in chosen:
        per_model = {role: {name: knowledge_metrics(lm.params, lm.config, lm.tokenizer, records)
                            for name, records in splits.items()} for role, lm in models.items()}
        knowledge = {name: _without_ratios(metrics) for name, metrics in per_model["model"].items()}
        if all(s in knowledge for s in UTILITY_SPLITS):
            knowledge["model_utility"] = harmonic_mean([knowledge[s][m] for s in UTILITY_SPLITS
                                                        for m in UTILITY_METRICS if m in knowledge[s]])
        if retrained and "forget" in splits:
            knowledge["forget_quality"] = forget_quality(per_model["model"]["forget"]["truth_ratios"],
                                                         per_model["retrained"]["forget"]["truth_ratios"])
        result["knowledge"] = knowledge
    if "mia" in chosen:
        aucs = {role: mia_aucs(lm.params, lm.config, lm.tokenizer, splits["forget"], splits["holdout"])
                for role, lm in models.items()}
        result["mia"] = {"auc": aucs["model"], "k": 0.4}
        if retrained:
            result["mia"]["gold_auc"] = aucs["retrained"]
            result["mia"]["priv_leak"] = {a: priv_leak(aucs["model"][a], aucs["retrained"][a]) for a in aucs["model"]}
    result["timings"] = {"wall_s": round(time.perf_counter() - started, 2)}
    result["versions"] = versions()
    write_json_atomic(out_path, result)
    if not quiet:
        print(summary_text(result, out_path))
    return result


def _without_ratios(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "truth_ratios"}


def summary_text(result: dict, out: Path) -> str:
    lines = [f"eval: {out.absolute()}"]
    for name, m in result.get("knowledge", {}).items():
        if isinstance(m, dict):
            lines.append(f"  {name:<11} acc {m['acc']:.3f}  prob {m['prob']:.3f}  rougeL {m['rouge_l_recall']:.3f}"
                         + (f"  truth {m['truth']:.3f}" if "truth" in m else ""))
    for key in ("model_utility", "forget_quality"):
        if key in result.get("knowledge", {}):
            lines.append(f"  {key}: {result['knowledge'][key]:.4g}")
    if "mia" in result:
        lines.append("  MIA AUC " + "  ".join(f"{a} {v:.3f}" for a, v in result["mia"]["auc"].items()))
        if "priv_leak" in result["mia"]:
            lines.append("  PrivLeak " + "  ".join(f"{a} {v:+.3f}" for a, v in result["mia"]["priv_leak"].items()))
    return "\n".join(lines)
