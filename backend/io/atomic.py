"""Atomic writes: a reader sees the old file/folder or the new one, never a half-written one.

A file is written to a temporary sibling (same folder, so the same file system) and moved over the target
with ``os.replace``. A folder is filled under ``<name>.tmp-XXXX/`` and renamed into place; an existing
folder is first renamed aside to ``<name>.old-XXXX/`` and deleted after the new one is in place (POSIX
``rename`` cannot replace a non-empty directory in one step). That happens only to an earlier output of the
same kind the caller was told to replace (``backend.io.outputs.check_output``, checked again at the rename):
nothing else at the target is ever moved or deleted.
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
from .outputs import OutputKind, check_output


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


def commit_dir(tmp: Path, path: str | os.PathLike, kind: OutputKind, replace: bool = False) -> None:
    """Move the finished folder ``tmp`` to ``path``. What is there (an empty folder, or an earlier output of
    ``kind`` with ``replace``) is replaced; anything else raises ``InvalidInput`` and stays as it was."""
    path = Path(path)
    check_output(path, kind, replace)
    old = None
    try:
        if path.exists():
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
def atomic_dir(path: str | os.PathLike, kind: OutputKind, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes ``path`` (``commit_dir``), on error it is deleted.
    ``path`` is checked (``check_output``) before the folder is yielded, so nothing is computed for a refused one."""
    check_output(path, kind, replace)
    tmp = temp_dir_for(path)
    try:
        yield tmp
        commit_dir(tmp, path, kind, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
