"""Shared setup of the experiments: the embedded world and its tiny base and gold models (cached)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from unlearn_jax.data.world import build_world, parse_exposure  # noqa: E402
from unlearn_jax.runs.pretrain import pretrain  # noqa: E402

# Facts seen 32, 8, 2 or 1 times per epoch: the base model knows the frequent ones cold and only part of
# the rare ones (forget accuracy by level 1.00 / 1.00 / 0.80 / 0.33 on the default seed).
MIXED_EXPOSURE = "32,8,2,1"


def world_and_models(root: Path, seed: int = 0, exposure: str = "1") -> tuple[Path, Path, Path]:
    """(world dir, base run, gold run) under ``root``, rebuilt when ``exposure`` or ``seed`` changed;
    pretraining results come from the cache if present."""
    root.mkdir(parents=True, exist_ok=True)
    world = root / "world"
    levels = list(parse_exposure(exposure))
    manifest = world / "world.json"
    current = json.loads(manifest.read_text()) if manifest.exists() else {}
    if current.get("exposure") != levels or current.get("seed") != seed:
        build_world(world, seed=seed, exposure=levels, force=True)
    base, gold = root / "base", root / "gold"
    world_hash = json.loads(manifest.read_text())["world_hash"]
    for run, exclude in ((base, ()), (gold, ("forget",))):
        done = run / "run.json"
        if not done.exists() or json.loads(done.read_text())["config"]["world_hash"] != world_hash:
            pretrain(str(world), str(run), seed=seed, exclude=exclude, force=True, quiet=True)
    return world, base, gold


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def mean_std(values) -> tuple[float, float]:
    import numpy as np

    return float(np.mean(values)), float(np.std(values))

