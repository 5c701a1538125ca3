"""`unlearn-jax eval`: knowledge, membership inference and side effects, as one JSON file.

Suites:
- ``knowledge``: per split (a world's forget, retain, neighbours, holdout and sequential-request files
  ``requests/K``, or ``--data``) the metrics of ``evaluation.knowledge.knowledge_metrics``; **model
  utility** = the harmonic mean of answer probability, ROUGE-L recall and truth score over the retain and
  neighbour splits; with ``--retrained`` (the gold model), **forget quality** = the KS p-value of the
  truth ratios on the forget split.
- ``mia``: forget (members) vs holdout (never trained) AUCs for loss, zlib, Min-K%, Min-K%++ (k = 0.4);
  with ``--retrained``, PrivLeak per attack relative to the gold model's AUC.
- ``abilities``: the side-effect suite of ``evaluation.abilities`` on the world's skill files, for the
  model and, when given, the original (``--original``) and gold (``--retrained``) models, plus the
  seed-style table: original / unlearned / gold and the change unlearned − original.

Default suites: all three with ``--world``, ``knowledge`` with ``--data`` alone.

``--lm-eval-tasks``: lm-evaluation-harness tasks (by name; local YAMLs through ``--lm-eval-include-path``)
run through ``evaluation.lm_eval_adapter`` on the same models; their metrics go under ``lm_eval`` with the
same original / model / gold table. Real benchmarks (mmlu, truthfulqa_mc2, ifeval, ...) need their
datasets from the hub or its cache.
"""

from __future__ import annotations

import time
from pathlib import Path

from unlearn_jax.data import world as world_lib
from unlearn_jax.data.records import load_records, parse_field_map
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.errors import UserError
from unlearn_jax.evaluation import abilities as abilities_lib
from unlearn_jax.evaluation.knowledge import forget_quality, harmonic_mean, knowledge_metrics
from unlearn_jax.evaluation.mia import mia_aucs, priv_leak
from unlearn_jax.fileio import check_writable_target, write_json_atomic
from unlearn_jax.models.hf import load_model
from unlearn_jax.runs.rundir import versions

SUITES = ("knowledge", "mia", "abilities")
WORLD_SUITES = ("mia", "abilities")
UTILITY_SPLITS = ("retain", "neighbours")
UTILITY_METRICS = ("prob", "rouge_l_recall", "truth")


def parse_suites(text: str, allow_empty: bool = False) -> tuple[str, ...]:
    suites = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not (suites or allow_empty):
        raise UserError(f"--suite: unknown suite {unknown[0]!r}: choose from {', '.join(SUITES)}" if unknown
                        else "--suite: name at least one suite")
    return suites


def evaluate(model: str, out: str, *, world: str | None = None, data: str | None = None,
             retrained: str | None = None, original: str | None = None, suites: str | None = None,
             field_map: str | None = None, lm_eval_tasks: str | None = None, lm_eval_include_path: str | None = None,
             lm_eval_limit: int | None = None, lm_eval_fewshot: int | None = None, force: bool = False,
             quiet: bool = False) -> dict:
    if suites is None:
        suites = ",".join(SUITES) if world else "knowledge" if data or not lm_eval_tasks else ""
    chosen = parse_suites(suites, allow_empty=bool(lm_eval_tasks))
    out_path = Path(out)
    if out_path.is_dir():
        raise UserError(f"--out {out}: is a directory; give a .json file path")
    if out_path.exists() and not force:
        raise UserError(f"--out {out}: already exists (pass --force to replace it)")
    if world is None and data is None and chosen:
        raise UserError("eval needs --world DIR (every split) or --data DATA (one file)")
    check_writable_target(out_path.absolute())  # before the work, not after it
    tasks = _lm_eval_tasks(lm_eval_tasks, lm_eval_include_path) if lm_eval_tasks else None
    needs = {"mia": "forget records as members, holdout as non-members", "abilities": "its skill files"}
    for suite in WORLD_SUITES:
        if suite in chosen and world is None:
            raise UserError(f"--suite {suite} needs --world DIR ({needs[suite]})")
    started = time.perf_counter()
    splits = {}
    if world is not None:
        manifest = world_lib.load_world(world)
        splits = {name: load_records(world_lib.world_path(manifest, meta["file"]))
                  for name, meta in manifest["splits"].items()}
    if data is not None:
        splits["data"] = load_records(data, parse_field_map(field_map) if field_map else None)
    models = {"model": load_model(model)}
    if retrained:
        models["retrained"] = load_model(retrained)
    if original and ("abilities" in chosen or tasks):
        models["original"] = load_model(original)
    flags = {"model": model, "retrained": retrained, "original": original}
    for role, lm in models.items():
        if lm.tokenizer is None:
            raise UserError(f"--{role} {flags[role]}: has no tokenizer files; evaluation needs one to encode the data")
    sources = {"data": f"--data {data}"}
    for name, records in splits.items():  # refuse records the model cannot read whole, before any work
        encode_records(records, models["model"].tokenizer, max_length=models["model"].config.max_position_embeddings,
                       source=sources.get(name, f"--world {world}: split {name}"))
    skills = abilities_lib.skill_records(manifest) if "abilities" in chosen else None
    roles = {"model": chosen, "retrained": chosen, "original": [x for x in chosen if x == "abilities"]}
    measured = {role: measure(lm, roles[role], splits, skills) for role, lm in models.items()}
    result: dict = {"model": model, "original": original, "retrained": retrained, "world": world, "data": data,
                    "suites": list(chosen), **compare(measured)}
    if tasks:
        names = {"model": model, "original": original, "retrained": retrained}
        per_role = {role: run_lm_eval(lm, names[role], tasks, lm_eval_include_path, lm_eval_limit, lm_eval_fewshot)
                    for role, lm in models.items()}
        result["lm_eval"] = {**per_role, "table": lm_eval_table(per_role)}
    result["timings"] = {"wall_s": round(time.perf_counter() - started, 2)}
    result["versions"] = versions()
    write_json_atomic(out_path, result)
    if not quiet:
        print(summary_text(result, out_path))
    return result


def measure(lm, suites, splits: dict[str, list], skills: dict | None) -> dict:
    """What one model contributes to an evaluation: per-split knowledge metrics (with the truth ratios),
    MIA AUCs (forget vs holdout) and the abilities suite, for the ``suites`` asked."""
    out = {}
    if "knowledge" in suites:
        out["knowledge"] = {name: knowledge_metrics(lm.params, lm.config, lm.tokenizer, records)
                            for name, records in splits.items()}
    if "mia" in suites:
        out["mia"] = mia_aucs(lm.params, lm.config, lm.tokenizer, splits["forget"], splits["holdout"])
    if "abilities" in suites:
        out["abilities"] = abilities_lib.abilities(lm.params, lm.config, lm.tokenizer, skills)
    return out


def compare(measured: dict[str, dict]) -> dict:
    """The result sections for ``measured["model"]`` against the original and gold models (when measured):
    model utility and forget quality, PrivLeak, the abilities table."""
    result, model, gold = {}, measured["model"], measured.get("retrained", {})
    if "knowledge" in model:
        knowledge = {name: _without_ratios(metrics) for name, metrics in model["knowledge"].items()}
        if all(s in knowledge for s in UTILITY_SPLITS):
            knowledge["model_utility"] = harmonic_mean([knowledge[s][m] for s in UTILITY_SPLITS
                                                        for m in UTILITY_METRICS if m in knowledge[s]])
        if "forget" in knowledge and "knowledge" in gold:
            knowledge["forget_quality"] = forget_quality(model["knowledge"]["forget"]["truth_ratios"],
                                                         gold["knowledge"]["forget"]["truth_ratios"])
        result["knowledge"] = knowledge
    if "mia" in model:
        result["mia"] = {"auc": model["mia"], "k": 0.4}
        if "mia" in gold:
            result["mia"]["gold_auc"] = gold["mia"]
            result["mia"]["priv_leak"] = {a: priv_leak(model["mia"][a], gold["mia"][a]) for a in model["mia"]}
    if "abilities" in model:
        per_role = {role: m["abilities"] for role, m in measured.items() if "abilities" in m}
        result["abilities"] = {**per_role, "table": ability_table(per_role)}
    return result


def ability_table(per_role: dict) -> list[dict]:
    """One row per ``abilities.HEADLINE`` entry: original / model / retrained values (those evaluated) and
    ``change`` = model − original."""
    flat = {role: abilities_lib.headline(result) for role, result in per_role.items()}
    rows = []
    for key, label, higher_is_better in abilities_lib.HEADLINE:
        row = {"key": key, "ability": label, "higher_is_better": higher_is_better}
        row |= {role: flat[role][key] for role in ("original", "model", "retrained") if role in flat}
        if "original" in flat:
            row["change"] = flat["model"][key] - flat["original"][key]
        rows.append(row)
    return rows


def _task_manager(include_path: str | None):
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"--lm-eval-include-path {include_path}: not a directory")
    return TaskManager(include_path=include_path)


def _lm_eval_tasks(text: str, include_path: str | None) -> list[str]:
    """The task names of ``--lm-eval-tasks``, each checked against lm-eval's index (and the include path)."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise UserError("--lm-eval-tasks: name at least one task")
    known = set(_task_manager(include_path).all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise UserError(f"--lm-eval-tasks: unknown task {unknown[0]!r} (not among lm-eval's tasks"
                        + (f" or those in {include_path})" if include_path else "; local YAMLs need "
                           "--lm-eval-include-path)"))
    return tasks


def run_lm_eval(lm, name: str, tasks: list[str], include_path: str | None, limit: int | None,
                fewshot: int | None) -> dict:
    """{task: {metric: value}} from ``lm_eval.simple_evaluate`` with our adapter around ``lm``."""
    from lm_eval import simple_evaluate

    from unlearn_jax.evaluation.lm_eval_adapter import UnlearnJaxLM

    try:
        results = simple_evaluate(model=UnlearnJaxLM(pretrained=name, loaded=lm), tasks=tasks, num_fewshot=fewshot,
                                  limit=limit, task_manager=_task_manager(include_path), bootstrap_iters=0,
                                  log_samples=False)
    except (FileNotFoundError, ConnectionError, OSError) as e:
        raise UserError(f"--lm-eval-tasks {','.join(tasks)}: cannot load a task's data ({e}); real benchmarks "
                        "need the hub or a datasets cache") from None
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "stderr" not in k
                   and k != "alias"} for task, metrics in results["results"].items()}


def lm_eval_table(per_role: dict) -> list[dict]:
    """One row per (task, metric): original / model / retrained values and ``change`` = model − original."""
    rows = []
    for task, metrics in per_role["model"].items():
        for metric in metrics:
            row = {"task": task, "metric": metric}
            row |= {role: per_role[role][task][metric] for role in ("original", "model", "retrained")
                    if role in per_role}
            if "original" in per_role:
                row["change"] = row["model"] - row["original"]
            rows.append(row)
    return rows


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
    if "lm_eval" in result:
        for row in result["lm_eval"]["table"]:
            lines.append(f"  lm-eval {row['task']} {row['metric']}: "
                         + "  ".join(f"{r} {row[r]:.4g}" for r in ("original", "model", "retrained") if r in row))
    if "abilities" in result:
        roles = [r for r in ("original", "model", "retrained") if r in result["abilities"]["table"][0]]
        lines.append("  abilities" + " " * 39 + "".join(f"{r:>10}" for r in roles)
                     + ("    change" if "original" in roles else ""))
        for row in result["abilities"]["table"]:
            lines.append(f"    {row['ability']:<46}" + "".join(f"{row[r]:>10.3f}" for r in roles)
                         + (f"{row['change']:>+10.3f}" if "change" in row else ""))
    return "\n".join(lines)
