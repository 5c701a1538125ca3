"""The training loop: batches in, jitted steps, metrics out at log points only, orbax checkpoints,
resume, early stopping, and the non-finite guard.

Metrics stay on the device between log points (no host sync per step). A run resumed from its latest
checkpoint draws the same batches (the sampler position is saved with the state) and the same random
numbers (the rng is part of the state), so on CPU it ends bitwise identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from unlearn_jax.engine.state import TrainState
from unlearn_jax.errors import UserError


class DivergedError(UserError):
    """Loss or gradients stayed non-finite for several steps in a row."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end
    eval_every: int = 0  # 0: never during the run
    max_bad_steps: int = 5
    keep_checkpoints: int = 2

    def __post_init__(self):
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1 (got {self.steps})")
        for name in ("log_every", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0")


@dataclasses.dataclass
class LoopResult:
    state: TrainState
    position: dict
    history: list[dict]  # one dict per log point (and per evaluation)
    stopped_early: bool
    seconds: float  # wall time of the steps run in this process (compilation included)
    steps_run: int  # steps run in this process


def _to_host(metrics: dict) -> dict:
    return {k: (v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in jax.device_get(metrics).items()}


def _checkpoint_manager(run_dir: Path, keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (run_dir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )


def _restore(manager: ocp.CheckpointManager, state: TrainState) -> tuple[TrainState, dict, int]:
    step = manager.latest_step()
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                             meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta["position"], step


def _save(manager: ocp.CheckpointManager, state: TrainState, position: dict, step: int) -> None:
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave({"position": position})))


def _trim_metrics(path: Path, last_step: int) -> list[dict]:
    """Keep the metric lines of steps <= last_step (a resumed run rewrites the rest)."""
    if not path.exists():
        return []
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [m for m in kept if m["step"] <= last_step]
    path.write_text("".join(json.dumps(m) + "\n" for m in kept))
    return kept


def run_loop(
    step_fn: Callable,
    state: TrainState,
    frozen_params: dict,
    constants,
    next_batch: Callable[[dict, TrainState], tuple[object, dict]],
    position: dict,
    config: LoopConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    evaluate: Callable[[TrainState], dict] | None = None,
    should_stop: Callable[[dict], bool] | None = None,
    quiet: bool = False,
    description: str = "train",
) -> LoopResult:
    """Run ``config.steps`` steps (or fewer if ``should_stop(evaluate(state))`` says so).

    ``next_batch(position, state) -> (device batch, next position)`` (the state lets a curriculum re-score
    its data between stages; it must not be kept); checkpoints go to
    ``run_dir/checkpoints``, metric lines to ``run_dir/metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    manager = _checkpoint_manager(run_dir, config.keep_checkpoints)
    start = 0
    if resume and manager.latest_step() is not None:
        state, position, start = _restore(manager, state)
        if int(state.step) != start:
            raise UserError(f"{run_dir}/checkpoints: step {start} holds a state at step {int(state.step)}")
    history = _trim_metrics(metrics_path, start)
    pending: list[tuple[int, dict]] = []
    stopped_early = False
    began = time.perf_counter()
    bar = tqdm(total=config.steps, initial=start, desc=description, disable=quiet, dynamic_ncols=True)

    def flush(step: int) -> None:
        lines = []
        for s, m in pending:
            record = {"step": s, **_to_host(m)}
            lines.append(record)
        pending.clear()
        if lines:
            with open(metrics_path, "a") as f:
                f.writelines(json.dumps(m) + "\n" for m in lines)
            history.extend(lines)
            bar.set_postfix(loss=f"{lines[-1]['loss']:.4g}", refresh=False)
        if int(state.bad_steps) >= config.max_bad_steps:
            _save(manager, state, position, step)
            manager.wait_until_finished()
            raise DivergedError(
                f"the run diverged: loss or gradients were non-finite for {int(state.bad_steps)} steps in a row "
                f"at step {step} (updates were skipped; the last good state is checkpointed in "
                f"{run_dir / 'checkpoints'}); lower --lr or set --max-grad-norm")

    try:
        for step in range(start + 1, config.steps + 1):
            batch, position = next_batch(position, state)
            state, metrics = step_fn(state, frozen_params, constants, batch)
            pending.append((step, metrics))
            bar.update(1)
            last = step == config.steps
            if last or (config.log_every and step % config.log_every == 0):
                flush(step)
            if evaluate is not None and (last or (config.eval_every and step % config.eval_every == 0)):
                result = {"step": step, **evaluate(state)}
                history.append(result)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(result) + "\n")
                bar.set_postfix({k: f"{v:.3g}" for k, v in result.items() if isinstance(v, float)}, refresh=False)
                if should_stop is not None and should_stop(result) and not last:
                    flush(step)
                    stopped_early = True
                    _save(manager, state, position, step)
                    break
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                _save(manager, state, position, step)
        else:
            _save(manager, state, position, config.steps)
        jax.block_until_ready(state)
    finally:
        bar.close()
        manager.wait_until_finished()
        manager.close()
    steps_run = int(state.step) - start
    return LoopResult(state, position, history, stopped_early, time.perf_counter() - began, steps_run)


def checkpoint_exists(run_dir: os.PathLike) -> bool:
    path = Path(run_dir) / "checkpoints"
    return path.is_dir() and any(p.name.isdigit() for p in path.iterdir())
