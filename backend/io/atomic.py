"""Atomic writes: a reader sees the old file/folder or the new one, never a half-written one.

A file is written to a temporary sibling (same folder, so the same file system) and moved over the target
with ``os.replace``. A folder is filled under ``<name>.tmp-XXXX/`` and renamed into place; an existing
folder is first renamed aside to ``<name>.old-XXXX/`` and deleted after the new one is in place (POSIX
``rename`` cannot replace a non-empty directory in one step).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import LWError


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary binary file next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temp_dir_for(path: str | os.PathLike) -> Path:
    """Create and return an empty ``<name>.tmp-XXXX/`` folder next to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{path.name}.tmp-"))


def commit_dir(tmp: Path, path: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` to ``path``, replacing what was there."""
    path = Path(path)
    old = None
    try:
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{path.name}.old-"))
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
    except OSError as exc:  # Windows: a program (Blender playing this sequence) holds a file of it open
        if old is not None and not path.exists():
            os.rename(old, path)
        raise LWError(f"cannot replace {path}: {exc.strerror}; close programs that use it and try again") from exc
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else os.unlink(old)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes ``path``, on error it is deleted."""
    tmp = temp_dir_for(path)
    try:
        yield tmp
        commit_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
