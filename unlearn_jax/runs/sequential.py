"""`unlearn-jax sequential`: forget requests applied one after another, each starting from the previous
result, with the forget accuracy on *every* request measured after each one — does an earlier target
come back (rebound)?

The run directory holds one ordinary unlearning run per request (``request_1/`` …, each resumable),
``sequential.json``, ``heatmap.png``, ``report.md``, the final ``model/`` and ``run.json`` (written last).
With ``retrained`` (one gold model per prefix of requests: gold k never saw requests 1..k) the same
accuracies are measured on the gold models as the reference. Rebound of request j: the highest forget
accuracy on j after any later request minus the accuracy right after j itself; flagged by the audit's
significance rule (``audit.verdict.excess``: above 0.05 and a paired-bootstrap interval above 0).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from unlearn_jax.audit.verdict import excess
from unlearn_jax.config import UnlearnConfig
from unlearn_jax.data.records import load_records, parse_field_map
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.engine.state import split_params
from unlearn_jax.errors import UserError
from unlearn_jax.evaluation.knowledge import record_stats, summarize
from unlearn_jax.fileio import replace_directory, write_json_atomic, write_text_atomic
from unlearn_jax.models.hf import load_model
from unlearn_jax.report import plots
from unlearn_jax.report.markdown import table
from unlearn_jax.runs.audit import strip_hits
from unlearn_jax.runs.rundir import prepare_run_dir, versions
from unlearn_jax.runs.unlearn import check_run, default_trainable, resolve, unlearn


def _evaluate(lm, request_sets, retain_set) -> dict:
    correct = [record_stats(lm.params, lm.config, s)["correct"].astype(bool) for s in request_sets]
    row = {"forget_acc": [float(c.mean()) for c in correct], "forget_correct": [c.tolist() for c in correct]}
    if retain_set is not None:
        row["retain_acc"] = summarize(record_stats(lm.params, lm.config, retain_set))["acc"]
    return row


def rebound(rows: list[dict], seed: int = 0) -> list[dict]:
    """``rows[k]["forget_correct"][j]``: per-record hits on request j after k requests (row 0: before
    any). For each j < K: the accuracy right after j, the highest after a later request, the excess test."""
    out = []
    for j in range(len(rows) - 2):
        own = rows[j + 1]["forget_correct"][j]
        k = max(range(j + 2, len(rows)), key=lambda i: rows[i]["forget_acc"][j])
        test = excess(rows[k]["forget_correct"][j], own, seed=seed)
        out.append({"request": j + 1, "after_own": float(np.mean(own)), "max_later": rows[k]["forget_acc"][j],
                    "after_request": k, "rebound": test["excess"], "ci": test["ci"], "rebounded": test["significant"]})
    return out


def sequential(cfg: UnlearnConfig, requests: list[str], out: str, *, retrained: list[str] | None = None,
               resume: bool = False, force: bool = False, quiet: bool = False) -> dict:
    """Run the requests in order from ``cfg.model`` (``cfg.forget``/``cfg.out`` are ignored); return
    sequential.json's content."""
    if not requests:
        raise UserError("--requests: give at least one forget data file")
    if retrained and len(retrained) != len(requests):
        raise UserError(f"--retrained: give one gold model per request prefix ({len(requests)}), got {len(retrained)}")
    method, _, _ = check_run(cfg)
    field_map = parse_field_map(cfg.field_map) if cfg.field_map else None
    request_records = [load_records(r, field_map) for r in requests]
    for path, records in zip(requests, request_records, strict=True):
        if "prompt" not in records[0]:
            raise UserError(f"--requests {path}: sequential unlearning needs QA records (prompt, answer)")
    out_path, work = prepare_run_dir(out, resume=resume, force=force)
    started = time.perf_counter()
    original = load_model(cfg.model)
    if original.tokenizer is None:
        raise UserError(f"--model {cfg.model}: has no tokenizer files; unlearning needs one to encode the data")
    # every option checked before the run directory appears (a failed first request would leave it behind)
    _, hp = resolve(cfg, method, original.config.num_layers)
    split_params(original.params, default_trainable(method, hp.rmu_layer) if cfg.trainable is None else cfg.trainable)
    max_len = original.config.max_position_embeddings
    request_sets = [encode_records(r, original.tokenizer, max_length=max_len, source=f"--requests {path}")
                    for path, r in zip(requests, request_records, strict=True)]
    retain_set = encode_records(load_records(cfg.retain, field_map), original.tokenizer, max_length=max_len,
                                source=f"--retain {cfg.retain}") if cfg.retain else None
    work.mkdir(parents=True, exist_ok=True)

    rows, gold_rows, model = [_evaluate(original, request_sets, retain_set)], [], cfg.model
    for k, request in enumerate(requests, start=1):
        sub = work / f"request_{k}"
        if not (sub / "run.json").exists():
            if not quiet:
                print(f"sequential: request {k}/{len(requests)}: {request}", flush=True)
            unlearn(dataclasses.replace(cfg, model=str(model), forget=request, out=str(sub)), resume=resume,
                    quiet=True)
        model = sub
        rows.append(_evaluate(load_model(sub), request_sets, retain_set))
        if retrained:
            gold_rows.append(_evaluate(load_model(retrained[k - 1]), request_sets, retain_set))
    matrix = np.array([r["forget_acc"] for r in rows])
    result = {"requests": list(requests), "method": cfg.method, "seed": cfg.seed,
              "rebound": rebound(rows, cfg.seed), "after": strip_hits(rows), "gold": strip_hits(gold_rows) or None}
    write_report(work, result)
    write_json_atomic(work / "sequential.json", result)
    if (work / "model").exists():
        shutil.rmtree(work / "model")
    shutil.copytree(model / "model", work / "model")
    run = {"command": "sequential", "config": dataclasses.asdict(cfg), "requests": list(requests),
           "retrained": retrained, "timings": {"wall_s": round(time.perf_counter() - started, 2)},
           "versions": versions()}
    write_json_atomic(work / "run.json", run)
    replace_directory(work, out_path)
    if not quiet:
        flagged = [r["request"] for r in result["rebound"] if r["rebounded"]]
        print(f"sequential {cfg.method}: {out_path}  forget acc after the last request: "
              f"{', '.join(f'{a:.2f}' for a in matrix[-1])}  rebound: {flagged or 'none'}")
    return result


def write_report(folder: Path, result: dict) -> None:
    matrix = np.array([r["forget_acc"] for r in result["after"]])
    n = matrix.shape[1]
    labels = ["before"] + [f"after {k}" for k in range(1, n + 1)]
    plots.heatmap(folder / "heatmap.png", matrix, row_labels=labels, col_labels=[f"request {j}" for j in
                  range(1, n + 1)], title=f"{result['method']}: forget accuracy on each request", vmin=0, vmax=1)
    rows = [[labels[k], *matrix[k], result["after"][k].get("retain_acc")] for k in range(len(labels))]
    md = [f"# Sequential unlearning ({result['method']}, seed {result['seed']})\n",
          "Forget accuracy on every request (columns) after each request (rows):\n",
          table(["", *[f"request {j}" for j in range(1, n + 1)], "retain acc"], rows),
          "\n![heatmap](heatmap.png)\n"]
    if result["gold"]:
        gold = [[f"gold after {k}", *g["forget_acc"], g.get("retain_acc")] for k, g in enumerate(result["gold"], 1)]
        md += ["\nGold models (retrained without requests 1..k):\n",
               table(["", *[f"request {j}" for j in range(1, n + 1)], "retain acc"], gold)]
    md += ["\nRebound: the highest later accuracy minus the accuracy right after the request; flagged when above "
           "0.05 with a 95 % paired-bootstrap interval above 0:\n",
           table(["request", "right after it", "highest later (after request)", "rebound [95% CI]", "flagged"],
                 [[r["request"], r["after_own"], f"{r['max_later']:.3f} ({r['after_request']})",
                   f"{r['rebound']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]", r["rebounded"]]
                  for r in result["rebound"]])]
    write_text_atomic(folder / "report.md", "\n".join(md))
