"""Diffusion, concept erasure: erase the colour ``red`` from the tiny DDPM with the seed objective and with
ESD, on three parameter groups, 3 seeds (each its own base model and evaluator). Reports UA (erased
concept), IRA (other colours), CRA (backgrounds) and the Fréchet distance (evaluator features) before
and after; writes OUT/dm_unlearn.{json,md} and each run's sample grid (OUT/seedS/VARIANT/samples.png).
"""

import argparse
from pathlib import Path

import numpy as np

from experiments.common import write_json
from unlearn_jax.diffusion import runs as dm
from unlearn_jax.diffusion.objectives import EraseConfig
from unlearn_jax.report.markdown import table

VARIANTS = {
    "seed / full": EraseConfig(objective="seed", params="full"),
    "seed / xattn": EraseConfig(objective="seed", params="xattn"),
    "seed / non-xattn": EraseConfig(objective="seed", params="non-xattn"),
    "esd / full": EraseConfig(objective="esd", params="full", beta=0.0),
    "esd / xattn": EraseConfig(objective="esd", params="xattn", beta=0.0),
}


def base_model(root: Path, seed: int) -> Path:
    """The tiny-preset DDPM of ``seed`` under ``root`` (trained once, then from the cache)."""
    out = root / f"seed{seed}" / "base"
    if not (out / "run.json").exists():
        dm.train(str(out), preset="tiny", seed=seed, quiet=True)
    return out


def erased(root: Path, seed: int, name: str, erase: EraseConfig, concept: str = "red") -> tuple[Path, dict]:
    out = root / f"seed{seed}" / name.replace(" / ", "_")
    if not (out / "run.json").exists():
        dm.unlearn(str(base_model(root, seed)), concept, str(out), erase, seed=seed, force=True, quiet=True)
    import json

    return out, json.loads((out / "run.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/dm", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        for name, erase in VARIANTS.items():
            _, run = erased(args.out, seed, name, erase)
            m = run["metrics"]
            rows.append({"variant": name, "seed": seed, "before": m["before"], "after": m["after"],
                         "wall_s": run["timings"]["wall_s"]})
            print(name, seed, {k: round(m["after"][k] if k != "ua" else m["after"]["ua"]["red"], 3)
                               for k in ("ua", "ira", "cra", "fd")}, flush=True)
    write_json(args.out / "dm_unlearn.json", {"runs": rows})
    text = summary(rows)
    (args.out / "dm_unlearn.md").write_text(text)
    print(text)


def _ms(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def summary(rows) -> str:
    base = [r for r in rows if r["variant"] == next(iter(VARIANTS))]
    lines = [["original", _ms([r["before"]["ua"]["red"] for r in base]), _ms([r["before"]["ira"] for r in base]),
              _ms([r["before"]["cra"] for r in base]), _ms([r["before"]["fd"] for r in base]), "–"]]
    for name in VARIANTS:
        group = [r for r in rows if r["variant"] == name]
        lines.append([name, _ms([r["after"]["ua"]["red"] for r in group]), _ms([r["after"]["ira"] for r in group]),
                      _ms([r["after"]["cra"] for r in group]), _ms([r["after"]["fd"] for r in group]),
                      f"{np.mean([r['wall_s'] for r in group]):.1f}"])
    return table(["model", "UA (red) ↑", "IRA ↑", "CRA ↑", "FD ↓", "unlearn s"], lines)


if __name__ == "__main__":
    main()
