"""Pitfall 2, figure 1: Min-K% and Min-K%++ scores over the forget set, base model vs gold model.

The base model trained on the forget facts; the gold model never saw them. A forget record whose base
score sits inside the gold distribution was never really memorized — unlearning it is wasted effort.
The world deals facts to exposure levels (copies per pretraining epoch, default 32,8,2,1), so the third
panel shows how the base model's Min-K%++ follows how often a fact was seen.
Writes OUT/score_distribution.{json,png} and prints a table.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import MIXED_EXPOSURE, world_and_models, write_json
from unlearn_jax import load_model
from unlearn_jax.data.records import load_records
from unlearn_jax.data.tokenize import encode_records
from unlearn_jax.runs.score import target_texts
from unlearn_jax.scores.memorization import score_records


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/pitfall2", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exposure", default=MIXED_EXPOSURE, help="world exposure levels (1 = all equal)")
    args = parser.parse_args()
    world, base, gold = world_and_models(args.out, args.seed, args.exposure)
    records = load_records(str(world / "forget.jsonl"))
    scores = {}
    for name, run in (("base", base), ("gold", gold)):
        lm = load_model(run)
        rows = score_records(lm.params, lm.config, encode_records(records, lm.tokenizer), target_texts(records))
        scores[name] = {key: [r[key] for r in rows] for key in ("mink", "minkpp", "loss", "correct")}
    exposure = np.array([r.get("exposure", 1) for r in records])
    summary = {}
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for ax, key, label in zip(axes[:2], ("mink", "minkpp"), ("Min-K% (k=0.2)", "Min-K%++ (k=0.2)"), strict=True):
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
    levels = sorted(set(exposure.tolist()))
    by_level = {}
    for level in levels:
        m = exposure == level
        by_level[str(level)] = {f"{name}_{key}": float(np.mean(np.array(scores[name][key], float)[m]))
                                for name in ("base", "gold") for key in ("minkpp", "mink", "correct")}
        by_level[str(level)]["records"] = int(m.sum())
    summary["by_exposure"] = by_level
    axes[2].boxplot([np.array(scores["base"]["minkpp"])[exposure == lv] for lv in levels],
                    tick_labels=[str(lv) for lv in levels])
    axes[2].set_xlabel("exposure (copies per pretraining epoch)")
    axes[2].set_ylabel("base Min-K%++ (k=0.2)")
    fig.suptitle("Forget-set memorization: base model vs gold model (never trained on it)")
    fig.tight_layout()
    fig.savefig(args.out / "score_distribution.png", dpi=120)
    write_json(args.out / "score_distribution.json", {"seed": args.seed, "summary": summary, "scores": scores})
    print(f"{'score':<10}{'base mean':>12}{'gold mean':>12}{'base <= gold p90':>18}")
    for key in ("mink", "minkpp"):
        print(f"{key:<10}{summary['base_' + key]['mean']:>12.3f}{summary['gold_' + key]['mean']:>12.3f}"
              f"{summary[f'base_{key}_below_gold_p90']:>18.3f}")
    print(f"{'exposure':<10}{'records':>8}{'base acc':>10}{'base minkpp':>13}{'base mink':>11}{'gold acc':>10}")
    for level, row in by_level.items():
        print(f"{level:<10}{row['records']:>8}{row['base_correct']:>10.3f}{row['base_minkpp']:>13.3f}"
              f"{row['base_mink']:>11.3f}{row['gold_correct']:>10.3f}")


if __name__ == "__main__":
    main()
