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


def unlearned(base: Path, world: Path, out: Path, method: str, seed: int, **overrides) -> Path:
    """Unlearn ``method`` from ``base`` on the world's forget/retain split into ``out``; reuse ``out`` when
    it already holds a finished run with the same configuration (experiments share unlearned models)."""
    import dataclasses

    from unlearn_jax.config import UnlearnConfig
    from unlearn_jax.runs.unlearn import unlearn

    cfg = UnlearnConfig(model=str(base), forget=str(world / "forget.jsonl"), retain=str(world / "retain.jsonl"),
                        method=method, seed=seed, out=str(out), **overrides)
    done = out / "run.json"
    if not done.exists() or json.loads(done.read_text())["config"] != dataclasses.asdict(cfg):
        unlearn(cfg, force=True, quiet=True)
    return out


def default_lr(method: str) -> float:
    from unlearn_jax.objectives import METHODS

    return METHODS[method].defaults["lr"]


PITFALL1_METHODS = ("ga", "graddiff", "npo", "simnpo", "rmu")


def pitfall1_setup(doc: str):
    """Shared command line of the pitfall-1 experiments: (args, world, base, gold, methods, seeds)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--out", default="runs/pitfall1", type=Path)
    parser.add_argument("--methods", default=",".join(PITFALL1_METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    world, base, gold = world_and_models(args.out)
    return args, world, base, gold, args.methods.split(","), [int(s) for s in args.seeds.split(",")]


def lr_grid(methods, scales, seeds):
    """(method, learning rate = scale x the method's default, seed) for every combination."""
    for method in methods:
        for scale in scales:
            for seed in seeds:
                yield method, default_lr(method) * scale, seed


def audit_unlearned(args, world: Path, base: Path, gold: Path, method: str, seed: int, lr: float, probe: str,
                    optimizer: str = "adamw", **audit_options) -> dict:
    """Unlearn (or reuse OUT/models/NAME) and run one audit probe on it against the base and gold models."""
    from unlearn_jax.runs.audit import AuditConfig, audit

    name = f"{method}_{optimizer}_lr{lr:g}_s{seed}"
    model = unlearned(base, world, args.out / "models" / name, method, seed, lr=lr, optimizer=optimizer,
                      max_grad_norm=1.0 if optimizer == "adamw" else 0.0)
    return audit(AuditConfig(model=str(model), original=str(base), retrained=str(gold),
                             forget=str(world / "forget.jsonl"), retain=str(world / "retain.jsonl"),
                             out=str(args.out / "audits" / f"{probe}_{name}"), probes=(probe,), seed=seed,
                             **audit_options), force=True, quiet=True)
