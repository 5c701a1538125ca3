"""Pitfall 1, sequential unlearning: the world's forget requests arrive one after another; after each,
forget accuracy on every request (does an earlier target come back?) and on the gold models retrained
without each prefix of requests. GA, NPO, SimNPO and RMU at their defaults, 3 seeds.
Writes OUT/sequential.{json,png} and prints the rebound table.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import mean_std, world_and_models, write_json
from unlearn_jax.config import UnlearnConfig
from unlearn_jax.runs.pretrain import pretrain
from unlearn_jax.runs.sequential import sequential

METHODS = ("ga", "npo", "simnpo", "rmu")


def gold_models(world: Path, root: Path, count: int) -> list[str]:
    """Gold model k never saw requests 1..k (the last one is the ordinary gold model)."""
    golds = []
    for k in range(1, count + 1):
        out = root / f"gold_requests_1-{k}"
        if not (out / "run.json").exists():
            pretrain(str(world), str(out), exclude=tuple(f"requests/{j}" for j in range(1, k + 1)), force=True,
                     quiet=True)
        golds.append(str(out))
    return golds


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/pitfall1", type=Path)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    world, base, _ = world_and_models(args.out)
    requests = sorted((world / "requests").glob("*.jsonl"), key=lambda p: int(p.stem))
    golds = gold_models(world, args.out, len(requests))
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    runs = []
    for method in methods:
        for seed in seeds:
            cfg = UnlearnConfig(model=str(base), forget=str(requests[0]), retain=str(world / "retain.jsonl"),
                                method=method, seed=seed, out="")
            result = sequential(cfg, [str(r) for r in requests], str(args.out / "sequential" / f"{method}_s{seed}"),
                                retrained=golds, force=True, quiet=True)
            runs.append({"method": method, "seed": seed, "matrix": [r["forget_acc"] for r in result["after"]],
                         "retain": [r.get("retain_acc") for r in result["after"]], "rebound": result["rebound"],
                         "gold": [g["forget_acc"] for g in result["gold"]]})
            print(method, seed, np.round(runs[-1]["matrix"], 3).tolist(), flush=True)
    table = []
    for method in methods:
        group = [r for r in runs if r["method"] == method]
        for j in range(len(requests) - 1):
            table.append({"method": method, "request": j + 1,
                          "after_own": mean_std([r["rebound"][j]["after_own"] for r in group]),
                          "max_later": mean_std([r["rebound"][j]["max_later"] for r in group]),
                          "flagged_runs": sum(r["rebound"][j]["rebounded"] for r in group), "runs": len(group)})
    gold = runs[0]["gold"]
    plot(runs, methods, args.out / "sequential.png")
    write_json(args.out / "sequential.json", {"runs": runs, "table": table, "gold": gold})
    print("gold models (rows: without requests 1..k):", np.round(gold, 3).tolist())
    print(f"{'method':<8}{'request':>8}{'right after':>16}{'highest later':>16}  rebound flagged")
    for r in table:
        print(f"{r['method']:<8}{r['request']:>8}{r['after_own'][0]:>10.3f} ± {r['after_own'][1]:.3f}"
              f"{r['max_later'][0]:>10.3f} ± {r['max_later'][1]:.3f}  {r['flagged_runs']}/{r['runs']}")


def plot(runs, methods, path):
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.2))
    for ax, method in zip(np.atleast_1d(axes), methods, strict=True):
        matrix = np.mean([r["matrix"] for r in runs if r["method"] == method], axis=0)
        ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
        ax.set_xticks(range(matrix.shape[1]), [f"req {j + 1}" for j in range(matrix.shape[1])], fontsize=7)
        ax.set_yticks(range(matrix.shape[0]), ["before"] + [f"after {k}" for k in range(1, matrix.shape[0])],
                      fontsize=7)
        ax.set_title(method)
    fig.suptitle("Forget accuracy on each request after each request (mean of seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
