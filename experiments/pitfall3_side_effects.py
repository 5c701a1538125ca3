"""Pitfall 3, side effects: what unlearning costs beyond the forget set, in the shape of the seed's table
(NPO on Zephyr-7B: MMLU, TruthfulQA, GPQA and IFEval all fall while the knowledge metrics look fine).

For each world seed (a fresh world, base model and gold model per seed), GA, GradDiff, NPO, SimNPO and RMU
unlearn the forget split at their default hyper-parameters; every model (original, gold, unlearned) gets
the knowledge numbers the field usually reports (forget and retain accuracy) and the abilities suite
(in-context learning, two-hop reasoning, format instructions, hallucination on holdout and forget people).
Writes OUT/side_effects.{json,md,png} and prints the table: mean ± std over seeds, and for each method
the change against the original model.
"""

import argparse
from pathlib import Path

import numpy as np

from experiments.common import PITFALL1_METHODS, unlearned, world_and_models, write_json
from unlearn_jax.data import world as world_lib
from unlearn_jax.data.records import load_records
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.evaluation import abilities as abilities_lib
from unlearn_jax.evaluation.knowledge import record_stats
from unlearn_jax.models.hf import load_model
from unlearn_jax.report.markdown import table
from unlearn_jax.report.plots import grouped_bars

KNOWLEDGE = (("forget_acc", "forget accuracy", False), ("retain_acc", "retain accuracy", True))
ROWS = KNOWLEDGE + abilities_lib.HEADLINE


def measure(model_dir: Path, world: Path) -> dict[str, float]:
    """Forget/retain accuracy plus the abilities headline of one model."""
    lm = load_model(model_dir)
    manifest = world_lib.load_world(world)
    out = {}
    for split in ("forget", "retain"):
        records = load_records(str(world / f"{split}.jsonl"))
        stats = record_stats(lm.params, lm.config, encode_records(records, lm.tokenizer))
        out[f"{split}_acc"] = float(stats["correct"].mean())
    result = abilities_lib.abilities(lm.params, lm.config, lm.tokenizer, abilities_lib.skill_records(manifest))
    return out | abilities_lib.headline(result) | {"icl_by_shots": result["icl"]["by_shots"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/pitfall3", type=Path)
    parser.add_argument("--methods", default=",".join(PITFALL1_METHODS))
    parser.add_argument("--seeds", default="0,1,2", help="world seeds (each its own world, base and gold)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    runs = []
    for seed in map(int, args.seeds.split(",")):
        root = args.out / f"seed{seed}"
        world, base, gold = world_and_models(root, seed=seed)
        models = {"original": base, "gold": gold}
        for method in methods:
            models[method] = unlearned(base, world, root / "models" / method, method, seed)
        for name, path in models.items():
            runs.append({"seed": seed, "model": name, **measure(path, world)})
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in runs[-1].items()}, flush=True)
    names = ["original", *methods, "gold"]
    summary = {name: {key: [r[key] for r in runs if r["model"] == name] for key, _, _ in ROWS} for name in names}
    write_json(args.out / "side_effects.json", {"runs": runs, "rows": [list(r) for r in ROWS], "summary": {
        name: {key: {"mean": float(np.mean(v)), "std": float(np.std(v))} for key, v in cols.items()}
        for name, cols in summary.items()}})
    text = side_effect_table(summary, names)
    (args.out / "side_effects.md").write_text(text)
    print(text)
    grouped_bars(args.out / "side_effects.png", [label for key, label, _ in ROWS if key != "forget_acc"],
                 {name: [float(np.mean(summary[name][key])) for key, _, _ in ROWS if key != "forget_acc"]
                  for name in names},
                 title=f"Side effects of unlearning (mean of {len(set(r['seed'] for r in runs))} world seeds)",
                 ylabel="share")


def side_effect_table(summary: dict, names: list[str]) -> str:
    """Markdown: one row per measurement, one column per model (mean ± std), then each method's change
    against the original model (mean of the per-seed differences)."""
    methods = [n for n in names if n not in ("original", "gold")]
    headers = ["measurement", "better", *names, *(f"Δ {m}" for m in methods)]
    rows = []
    for key, label, higher in ROWS:
        cells = [f"{np.mean(summary[n][key]):.3f} ± {np.std(summary[n][key]):.3f}" for n in names]
        base = np.array(summary["original"][key])
        deltas = [f"{np.mean(np.array(summary[m][key]) - base):+.3f}" for m in methods]
        rows.append([label, {True: "↑", False: "↓", None: "≈ gold"}[higher], *cells, *deltas])
    return table(headers, rows)


if __name__ == "__main__":
    main()
