"""Crash-safe writing: a file or directory appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from unlearn_jax.errors import UserError


def check_writable_target(path: Path) -> None:
    """Refuse a target whose parent cannot hold it (a file in the way, or a read-only directory)."""
    parent = path.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UserError(f"{path}: {ancestor} is a file, not a directory")
            if not os.access(ancestor, os.W_OK):
                raise UserError(f"{path}: cannot write into {ancestor} (permission denied)")
            return


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, *, replace: bool = True):
    """Yield a fresh temporary directory beside ``target``; on success it becomes ``target``.

    If the body fails, the temporary directory is removed and ``target`` is untouched. An existing
    ``target`` is only removed after the new one is complete (``replace=False`` refuses it instead).
    """
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: exists and is a file, not a directory")
    if target.exists() and not replace:
        raise UserError(f"{target}: already exists")
    check_writable_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, target)


def replace_directory(new: Path, target: Path) -> None:
    """Rename the complete directory ``new`` to ``target``; an old ``target`` is removed only after."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    check_writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
