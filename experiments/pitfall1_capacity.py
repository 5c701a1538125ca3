"""Pitfall 1, capacity: after unlearning, how fast does each model learn new facts (the world's holdout
people, never seen by any model)? Hiding knowledge should cost capacity; the gold model is the baseline.
Every method at its default and 0.3x its default learning rate, 3 seeds; models shared with the other
pitfall-1 experiments (OUT/models). Writes OUT/capacity.{json,png}, prints a table.
"""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import audit_unlearned, default_lr, lr_grid, mean_std, pitfall1_setup, write_json

LR_SCALES = (0.3, 1.0)
STEPS = (0, 10, 20, 30, 40, 60)


def main():
    args, world, base, gold, methods, seeds = pitfall1_setup(__doc__)
    rows, baselines = [], {}
    for method, lr, seed in lr_grid(methods, LR_SCALES, seeds):
        result = audit_unlearned(args, world, base, gold, method, seed, lr, "capacity", capacity_steps=STEPS)
        probe = result["probes"]["capacity"]
        rows.append({"method": method, "lr": lr, "seed": seed, "verdict": probe["verdict"],
                     "steps_to_target": probe["model"]["steps_to_target"],
                     "final_acc": probe["model"]["final"]["acc"], "final_nll": probe["model"]["final"]["nll"],
                     "curve": [c["new"]["acc"] for c in probe["model"]["curve"]]})
        for role in ("original", "retrained"):
            baselines.setdefault(role, {})[seed] = probe[role]
        print(rows[-1], flush=True)
    table = []
    for method in methods:
        for scale in LR_SCALES:
            lr = default_lr(method) * scale
            group = [r for r in rows if (r["method"], r["lr"]) == (method, lr)]
            table.append({"method": method, "lr": lr, "curve": np.mean([r["curve"] for r in group], 0).tolist(),
                          "final_acc": mean_std([r["final_acc"] for r in group]),
                          "final_nll": mean_std([r["final_nll"] for r in group]),
                          "hidden_runs": sum(r["verdict"] == "hidden" for r in group), "runs": len(group)})
    base_rows = {role: {"curve": np.mean([[c["new"]["acc"] for c in v["curve"]] for v in runs.values()], 0).tolist(),
                        "final_acc": mean_std([v["final"]["acc"] for v in runs.values()]),
                        "final_nll": mean_std([v["final"]["nll"] for v in runs.values()])}
                 for role, runs in baselines.items()}
    plot(table, base_rows, args.out / "capacity.png")
    write_json(args.out / "capacity.json", {"steps": list(STEPS), "runs": rows, "table": table,
                                            "baselines": base_rows})
    print(f"{'model':<22}" + "".join(f"{'step ' + str(s):>9}" for s in STEPS) + f"{'final NLL':>16}  capacity lost")
    for name, r in [(f"{role}", base_rows[role]) for role in ("original", "retrained")] + \
            [(f"{r['method']} lr {r['lr']:.0e}", r) for r in table]:
        lost = f"{r['hidden_runs']}/{r['runs']}" if "runs" in r else ""
        print(f"{name:<22}" + "".join(f"{v:>9.3f}" for v in r["curve"])
              + f"{r['final_nll'][0]:>9.3f} ± {r['final_nll'][1]:.3f}  {lost}")


def plot(table, base_rows, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in table:
        if r["lr"] == default_lr(r["method"]):
            ax.plot(STEPS, r["curve"], marker="o", label=r["method"])
    for role, style in (("retrained", "k--"), ("original", "k:")):
        ax.plot(STEPS, base_rows[role]["curve"], style, label="gold" if role == "retrained" else "original")
    ax.set(title="Learning new facts after unlearning", xlabel="fine-tuning steps", ylabel="accuracy on new facts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
