"""Pitfall 2, curriculum unlearning: NPO with the forget set uniformly shuffled (none), most-memorized
first (confidence, by Min-K%++, 3 stages), the same re-ranked with the current model at every stage
boundary (confidence+rescore) and least-memorized first (reverse, the control), same step budget, 3 seeds,
on a world whose facts were seen 32, 8, 2 or 1 times per pretraining epoch (``--exposure``). Reports the
final forget/retain trade-off and the steps to reach forget accuracy <= 0.1
(evaluated every 8 steps; the run is not stopped, so every run spends the same budget).
Writes OUT/curriculum.{json,png} and prints mean ± std per order.
"""

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt

from experiments.common import MIXED_EXPOSURE, mean_std, world_and_models, write_json
from unlearn_jax.config import UnlearnConfig
from unlearn_jax.runs.unlearn import unlearn

ORDERS = ("none", "confidence", "confidence+rescore", "reverse")
TARGET = 0.1


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/pitfall2", type=Path)
    parser.add_argument("--method", default="npo")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--exposure", default=MIXED_EXPOSURE, help="world exposure levels (1 = all equal)")
    args = parser.parse_args()
    world, base, _ = world_and_models(args.out, exposure=args.exposure)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, curves = [], {}
    for order in ORDERS:
        for seed in seeds:
            out = args.out / "curriculum" / f"{args.method}_{order.replace('+', '_')}_s{seed}"
            curriculum, _, rescore = order.partition("+")
            cfg = UnlearnConfig(model=str(base), forget=str(world / "forget.jsonl"),
                                retain=str(world / "retain.jsonl"), method=args.method, seed=seed,
                                curriculum=curriculum, stages=args.stages if order != "none" else 1, eval_every=8,
                                rescore=bool(rescore), out=str(out))
            run = unlearn(cfg, force=True, quiet=True)
            evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            evals = [e for e in evals if "forget_acc" in e]
            reached = next((e["step"] for e in evals if e["forget_acc"] <= TARGET), None)
            curves[f"{order}_s{seed}"] = [[e["step"], e["forget_acc"], e["retain_acc"]] for e in evals]
            rows.append({"order": order, "seed": seed, "steps_to_target": reached, **run["metrics"]["after"]})
            print(rows[-1], flush=True)
    table = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for order, colour in zip(ORDERS, ("tab:grey", "tab:red", "tab:orange", "tab:blue"), strict=True):
        group = [r for r in rows if r["order"] == order]
        reached = [r["steps_to_target"] for r in group if r["steps_to_target"] is not None]
        f, fs = mean_std([r["forget_acc"] for r in group])
        t, ts = mean_std([r["retain_acc"] for r in group])
        table.append({"order": order, "forget_acc": f, "forget_acc_std": fs, "retain_acc": t, "retain_acc_std": ts,
                      "steps_to_target_mean": mean_std(reached)[0] if reached else None,
                      "runs_reaching_target": len(reached)})
        for key, curve in curves.items():
            if key.startswith(order + "_"):
                ax.plot([c[0] for c in curve], [c[1] for c in curve], color=colour, alpha=0.7,
                        label=order if key.endswith("_s0") else None)
    ax.axhline(TARGET, color="k", lw=0.5, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("forget accuracy")
    ax.set_title(f"{args.method}: curriculum order ({args.stages} stages)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "curriculum.png", dpi=120)
    write_json(args.out / "curriculum.json", {"runs": rows, "table": table, "curves": curves})
    print(f"{'order':<20}{'forget acc':>16}{'retain acc':>16}{'steps to <= 0.1':>18}")
    for r in table:
        reached = f"{r['steps_to_target_mean']:.0f}" if r["steps_to_target_mean"] else None
        steps = f"{reached} ({r['runs_reaching_target']}/{len(seeds)})" if reached \
            else "never"
        print(f"{r['order']:<20}{r['forget_acc']:>10.3f} ± {r['forget_acc_std']:.3f}"
              f"{r['retain_acc']:>10.3f} ± {r['retain_acc_std']:.3f}{steps:>18}")


if __name__ == "__main__":
    main()
