"""Pitfall 2, selective unlearning: drop the P least-memorized forget records (by Min-K%++) before
unlearning, for NPO and RMU, P in {0, 10, 20, 30, 50} %, 3 seeds (the unlearning run's seed: data order
and RMU's control vector). Forgetting is always measured on the WHOLE forget set.

The seed paper's claim: dropping 10-20 % leaves forgetting and utility intact; 30 % improves the trade-off.
The world deals facts to exposure levels (default 32,8,2,1 copies per epoch), so part of the forget set
is genuinely weakly memorized; each run also records how many of the dropped records were rare (seen at
the lowest two levels) and how many the base model did not know at all.
Writes OUT/selective.{json,png} and prints mean ± std per (method, P).
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt

from experiments.common import MIXED_EXPOSURE, mean_std, world_and_models, write_json
from unlearn_jax.config import UnlearnConfig
from unlearn_jax.data.records import load_records
from unlearn_jax.runs.unlearn import unlearn

DROPS = (0.0, 0.1, 0.2, 0.3, 0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/pitfall2", type=Path)
    parser.add_argument("--methods", default="npo,rmu")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--exposure", default=MIXED_EXPOSURE, help="world exposure levels (1 = all equal)")
    args = parser.parse_args()
    world, base, _ = world_and_models(args.out, exposure=args.exposure)
    exposure = {r["id"]: r.get("exposure", 1) for r in load_records(str(world / "forget.jsonl"))}
    rare = sorted(set(exposure.values()))[:2]
    rows = []
    for method in args.methods.split(","):
        for drop in DROPS:
            for seed in map(int, args.seeds.split(",")):
                cfg = UnlearnConfig(model=str(base), forget=str(world / "forget.jsonl"),
                                    retain=str(world / "retain.jsonl"), method=method, seed=seed,
                                    select="minkpp" if drop else None, drop=drop,
                                    out=str(args.out / "selective" / f"{method}_drop{int(drop * 100)}_s{seed}"))
                run = unlearn(cfg, force=True, quiet=True)
                dropped = [d["id"] for d in (run["resolved"].get("selection") or {}).get("dropped", [])]
                rows.append({"method": method, "drop": drop, "seed": seed, **run["metrics"]["after"],
                             "base_forget_acc": run["metrics"]["before"]["forget_acc"],
                             "dropped_rare_share": sum(exposure[i] in rare for i in dropped) / max(len(dropped), 1)})
                print(rows[-1], flush=True)
    table = []
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method, marker in zip(args.methods.split(","), "os^", strict=False):
        xs, ys = [], []
        for drop in DROPS:
            group = [r for r in rows if r["method"] == method and r["drop"] == drop]
            f, fs = mean_std([r["forget_acc"] for r in group])
            t, ts = mean_std([r["retain_acc"] for r in group])
            table.append({"method": method, "drop": drop, "forget_acc": f, "forget_acc_std": fs, "retain_acc": t,
                          "retain_acc_std": ts, "dropped_rare_share": group[0]["dropped_rare_share"]})
            ax.errorbar(f, t, xerr=fs, yerr=ts, marker=marker, capsize=3, label=f"{method} drop {drop:.0%}")
            xs.append(f)
            ys.append(t)
        ax.plot(xs, ys, alpha=0.3)
    ax.set_xlabel("forget accuracy on the whole forget set (lower = better)")
    ax.set_ylabel("retain accuracy (higher = better)")
    ax.set_title("Selective unlearning: drop the least-memorized (Min-K%++)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out / "selective.png", dpi=120)
    write_json(args.out / "selective.json", {"runs": rows, "table": table})
    print(f"base forget accuracy {rows[0]['base_forget_acc']:.3f}; rare = exposure {rare}")
    print(f"{'method':<8}{'drop':>6}{'forget acc':>16}{'retain acc':>16}{'dropped rare':>14}")
    for r in table:
        print(f"{r['method']:<8}{r['drop']:>6.0%}{r['forget_acc']:>10.3f} ± {r['forget_acc_std']:.3f}"
              f"{r['retain_acc']:>10.3f} ± {r['retain_acc_std']:.3f}{r['dropped_rare_share']:>14.2f}")


if __name__ == "__main__":
    main()
