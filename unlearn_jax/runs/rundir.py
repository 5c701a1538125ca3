"""Run directories: where a run works while it runs, and the rules that protect what the user had.

A run works in a hidden sibling ``.NAME.partial/`` (checkpoints, metrics) and is renamed to ``NAME``
only when complete, with ``run.json`` written last; so ``NAME`` never looks complete when it is not,
and a failing run leaves an earlier ``NAME`` untouched. ``--resume`` continues a ``.partial``.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

from unlearn_jax.engine.loop import checkpoint_exists
from unlearn_jax.errors import UserError
from unlearn_jax.fileio import atomic_directory, check_writable_target, replace_directory, write_json_atomic


def work_dir_for(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def prepare_run_dir(out: str, *, resume: bool, force: bool) -> tuple[Path, Path]:
    """(final run directory, work directory), after checking the rules above."""
    out_path = Path(out).absolute()
    if out_path.exists() and not out_path.is_dir():
        raise UserError(f"--out {out}: is a file, not a directory")
    check_writable_target(out_path)
    work = work_dir_for(out_path)
    if resume:
        if checkpoint_exists(work):
            return out_path, work
        if (out_path / "run.json").exists() and not force:
            raise UserError(f"--out {out}: the run already finished; nothing to resume (pass --force to redo it)")
    elif work.exists():
        if not force:
            raise UserError(f"--out {out}: an interrupted run is in {work}; pass --resume to continue it "
                            "or --force to start over")
        shutil.rmtree(work)
    if out_path.exists() and any(out_path.iterdir()) and not force and not resume:
        raise UserError(f"--out {out}: already exists (pass --force to replace it when the new run succeeds)")
    return out_path, work


def finish_run(work: Path, out: Path, lm, run: dict) -> None:
    """Save the model, write run.json last, and move the work directory into place."""
    lm.save_hf(work / "model")
    write_json_atomic(work / "run.json", run)
    replace_directory(work, out)


def copy_run(source: Path, target: Path) -> None:
    """Copy a finished run directory (to or from the cache) atomically."""
    with atomic_directory(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)


def versions() -> dict[str, str]:
    import flax
    import jax
    import optax
    import orbax.checkpoint
    import transformers

    import unlearn_jax

    return {"unlearn_jax": unlearn_jax.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "orbax": orbax.checkpoint.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}
