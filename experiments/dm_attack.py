"""Diffusion, soft-prompt attack: for every erased model of ``dm_unlearn`` (built here if missing), the
share of samples classified as ``red`` for the original model prompted with red (the ceiling), the
unlearned model prompted with red, and the unlearned model prompted with the optimised soft prompt.
Writes OUT/dm_attack.{json,md}; each attack's grid is OUT/seedS/attack_VARIANT/samples.png.
"""

import argparse
from pathlib import Path

import numpy as np

from experiments.common import write_json
from experiments.dm_unlearn import VARIANTS, base_model, erased
from unlearn_jax.diffusion import runs as dm
from unlearn_jax.report.markdown import table


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/dm", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, erase in VARIANTS.items():
            model, _ = erased(args.out, seed, name, erase)
            out = args.out / f"seed{seed}" / f"attack_{name.replace(' / ', '_')}"
            result = dm.attack(str(model), str(base_model(args.out, seed)), "red", str(out), seed=seed, force=True,
                               quiet=True)
            rows.append({"variant": name, "seed": seed, **result["concept_rate"]})
            print(rows[-1], flush=True)
    write_json(args.out / "dm_attack.json", {"runs": rows})
    lines = [[name, *(f"{np.mean([r[k] for r in rows if r['variant'] == name]):.3f} ± "
                      f"{np.std([r[k] for r in rows if r['variant'] == name]):.3f}"
                      for k in ("original", "unlearned", "attacked"))] for name in VARIANTS]
    text = table(["erasure", "original + red", "unlearned + red", "unlearned + soft prompt"], lines)
    (args.out / "dm_attack.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
