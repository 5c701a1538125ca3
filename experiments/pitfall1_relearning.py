"""Pitfall 1, relearning: fine-tune each unlearned model on 20 % of the forget facts (or on as many retain
records) and watch the *other* 80 % — do facts never shown come back? The gold model (retrained without
the forget data) is the baseline: whatever it picks up is what the fine-tuning itself teaches.
Every method at its default and 0.3x its default learning rate, 3 seeds, on the tiny world; models are
shared with the other pitfall-1 experiments (OUT/models). Writes OUT/relearning.{json,png}, prints a table.
"""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import audit_unlearned, default_lr, lr_grid, mean_std, pitfall1_setup, write_json

LR_SCALES = (0.3, 1.0)
STEPS = (0, 5, 10, 20, 40)


def main():
    args, world, base, gold, methods, seeds = pitfall1_setup(__doc__)
    rows, baselines = [], {}
    for method, lr, seed in lr_grid(methods, LR_SCALES, seeds):
        result = audit_unlearned(args, world, base, gold, method, seed, lr, "relearn", relearn_steps=STEPS)
        probe = result["probes"]["relearn"]
        for source in ("forget", "retain"):
            rows.append({"method": method, "lr": lr, "seed": seed, "source": source,
                         "verdict": probe["verdict"],
                         "curve": [c["heldout"]["acc"] for c in probe["model"][source]]})
            for role in ("original", "retrained"):
                baselines.setdefault(f"{role}_{source}", {})[seed] = \
                    [c["heldout"]["acc"] for c in probe[role][source]]
        print(method, lr, seed, probe["verdict"], [r["curve"] for r in rows[-2:]], flush=True)
    table = []
    for method in methods:
        for scale in LR_SCALES:
            lr = default_lr(method) * scale
            for source in ("forget", "retain"):
                group = [r for r in rows if (r["method"], r["lr"], r["source"]) == (method, lr, source)]
                curve = np.array([r["curve"] for r in group])
                table.append({"method": method, "lr": lr, "source": source, "mean": curve.mean(0).tolist(),
                              "std": curve.std(0).tolist(), "peak": mean_std(curve.max(1)),
                              "hidden_runs": sum(r["verdict"] == "hidden" for r in group), "runs": len(group)})
    base_curves = {k: np.array(list(v.values())).mean(0).tolist() for k, v in baselines.items()}
    plot(table, base_curves, args.out / "relearning.png")
    write_json(args.out / "relearning.json", {"steps": list(STEPS), "runs": rows, "table": table,
                                              "baselines": base_curves})
    print("gold on forget:", np.round(base_curves["retrained_forget"], 3).tolist(),
          " original on forget:", np.round(base_curves["original_forget"], 3).tolist())
    print(f"{'method':<9}{'lr':>8}{'source':>8}  " + "".join(f"{'step ' + str(s):>9}" for s in STEPS) + "  hidden")
    for r in table:
        print(f"{r['method']:<9}{r['lr']:>8.0e}{r['source']:>8}  " + "".join(f"{v:>9.3f}" for v in r["mean"])
              + f"  {r['hidden_runs']}/{r['runs']}")


def plot(table, base_curves, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, source in zip(axes, ("forget", "retain"), strict=True):
        for r in table:
            if r["source"] == source and r["lr"] == default_lr(r["method"]):
                ax.plot(STEPS, r["mean"], marker="o", label=r["method"])
        ax.plot(STEPS, base_curves[f"retrained_{source}"], "k--", label="gold (retrained)")
        ax.set(title=f"relearning on {'20 % of the forget facts' if source == 'forget' else 'retain records'}",
               xlabel="fine-tuning steps", ylabel="accuracy on the held-out forget facts")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
