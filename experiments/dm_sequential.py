"""Diffusion, sequential erasure: red, then green, then blue (seed objective, full U-Net), 3 seeds. After
each request, UA of every concept erased so far, and rebound (a concept's UA falling more than 0.1 below
its value right after its own request). Writes OUT/dm_sequential.{json,md} and each seed's heatmap.
"""

import argparse
from pathlib import Path

import numpy as np

from experiments.common import write_json
from experiments.dm_unlearn import base_model
from unlearn_jax.diffusion import runs as dm
from unlearn_jax.diffusion.objectives import EraseConfig
from unlearn_jax.report.markdown import table

CONCEPTS = ["red", "green", "blue"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/dm", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        result = dm.sequential(str(base_model(args.out, seed)), CONCEPTS, str(args.out / f"seed{seed}" / "sequential"),
                               EraseConfig(), seed=seed, resume=True, quiet=True)
        results.append(result)
        print(seed, result["ua_matrix"], result["rebound"], flush=True)
    write_json(args.out / "dm_sequential.json", {"runs": results})
    lines = []
    for k, word in enumerate(CONCEPTS):
        cells = []
        for j in range(len(CONCEPTS)):
            values = [r["ua_matrix"][k][j] for r in results]
            cells.append("–" if values[0] is None else f"{np.mean(values):.3f} ± {np.std(values):.3f}")
        lines.append([f"after {word}", *cells])
    text = table(["request", *(f"UA {w}" for w in CONCEPTS)], lines)
    pairs = len(CONCEPTS) * (len(CONCEPTS) - 1) // 2 * len(results)
    text += f"\nrebound in {sum(len(r['rebound']) for r in results)} of {pairs} (concept, later request) pairs\n"
    (args.out / "dm_sequential.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
