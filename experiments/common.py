"""Shared setup of the experiments: the embedded world and its tiny base and gold models (cached)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from unlearn_jax.data.world import build_world  # noqa: E402
from unlearn_jax.runs.pretrain import pretrain  # noqa: E402


def world_and_models(root: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """(world dir, base run, gold run) under ``root``; pretraining results come from the cache if present."""
    root.mkdir(parents=True, exist_ok=True)
    world = root / "world"
    if not (world / "world.json").exists():
        build_world(world, seed=seed, force=True)
    base, gold = root / "base", root / "gold"
    if not (base / "run.json").exists():
        pretrain(str(world), str(base), seed=seed, force=True, quiet=True)
    if not (gold / "run.json").exists():
        pretrain(str(world), str(gold), seed=seed, exclude=("forget",), force=True, quiet=True)
    return world, base, gold


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def mean_std(values) -> tuple[float, float]:
    import numpy as np

    return float(np.mean(values)), float(np.std(values))
