"""Pitfall 2, figure 1: Min-K% and Min-K%++ scores over the forget set, base model vs gold model.

The base model trained on the forget facts; the gold model never saw them. A forget record whose base
score sits inside the gold distribution was never really memorized — unlearning it is wasted effort.
Writes OUT/score_distribution.{json,png} and prints a table.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import world_and_models, write_json
from unlearn_jax import load_model
from unlearn_jax.data.records import load_records
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.runs.score import target_texts
from unlearn_jax.scores.memorization import score_records


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/pitfall2", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    world, base, gold = world_and_models(args.out, args.seed)
    records = load_records(str(world / "forget.jsonl"))
    scores = {}
    for name, run in (("base", base), ("gold", gold)):
        lm = load_model(run)
        rows = score_records(lm.params, lm.config, encode_records(records, lm.tokenizer), target_texts(records))
        scores[name] = {key: [r[key] for r in rows] for key in ("mink", "minkpp", "loss")}
    summary = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in zip(axes, ("mink", "minkpp"), ("Min-K% (k=0.2)", "Min-K%++ (k=0.2)"), strict=True):
        lo = min(min(scores["base"][key]), min(scores["gold"][key]))
        hi = max(max(scores["base"][key]), max(scores["gold"][key]))
        bins = np.linspace(lo, hi, 40)
        for name, colour in (("base", "tab:red"), ("gold", "tab:blue")):
            values = np.array(scores[name][key])
            ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{name} (mean {values.mean():.2f})")
            summary[f"{name}_{key}"] = {"mean": float(values.mean()), "std": float(values.std()),
                                        "p10": float(np.percentile(values, 10)),
                                        "p90": float(np.percentile(values, 90))}
        gold_p90 = np.percentile(scores["gold"][key], 90)
        summary[f"base_{key}_below_gold_p90"] = float(np.mean(np.array(scores["base"][key]) <= gold_p90))
        ax.set_xlabel(label + "  (higher = more memorized)")
        ax.set_ylabel("forget records")
        ax.legend()
    fig.suptitle("Forget-set memorization: base model vs gold model (never trained on it)")
    fig.tight_layout()
    fig.savefig(args.out / "score_distribution.png", dpi=120)
    write_json(args.out / "score_distribution.json", {"seed": args.seed, "summary": summary, "scores": scores})
    print(f"{'score':<10}{'base mean':>12}{'gold mean':>12}{'base <= gold p90':>18}")
    for key in ("mink", "minkpp"):
        print(f"{key:<10}{summary['base_' + key]['mean']:>12.3f}{summary['gold_' + key]['mean']:>12.3f}"
              f"{summary[f'base_{key}_below_gold_p90']:>18.3f}")


if __name__ == "__main__":
    main()
