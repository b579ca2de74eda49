"""Output safety: a writer never deletes or overwrites anything it did not create.

Every output path is checked before any work starts (``check_output``): a path that does not exist (or an empty
folder) may be written; an existing one only when it is an earlier output of the same kind (``OutputKind.is_ours``
recognises it: a ``.lw4d`` folder holding only sequence files, a PLY whose header says LivingWorld wrote it, ...)
AND the caller was told to replace it (``replace=True``: job parameter ``replace``, CLI ``--replace``). Kinds that
continue an earlier output in place (a MoE run folder resumes) need no flag; kinds that are never replaced (a
world) refuse any existing one. A symbolic link is never an output (replacing it would remove the link the user
made). The low-level writers (``SequenceWriter``, ``commit_dir``, ``write_decoded``) apply the same rule again at
the moment they rename their finished temporary folder into place.

The job side (``backend.jobs``) adds the workspace's own files and folders, which are never a target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInput


@dataclass(frozen=True)
class OutputKind:
    """What a writer produces and how to recognise an earlier output of that kind.

    ``name`` is said in errors ("a .lw4d sequence"); ``is_ours(path)`` is True when the existing ``path`` is an
    output of this kind (and holds nothing else); ``continues``: an existing one is continued in place, not
    replaced (no ``replace`` needed); ``replaceable``: False when an existing one is always refused.
    """

    name: str
    is_ours: Callable[[Path], bool]
    continues: bool = False
    replaceable: bool = True


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _writable_parent(path: Path) -> None:
    """The nearest existing ancestor of ``path`` is a folder this process may write into."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link: creating the folder would write where it points
            raise InvalidInput(f"cannot write {path}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise InvalidInput(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"cannot write {path}: no permission to write in {parent}")


def check_output(path: str | os.PathLike, kind: OutputKind, replace: bool = False) -> Path:
    """Raise ``InvalidInput`` (one line, naming ``path``) unless writing ``kind`` at ``path`` loses nothing.

    Allowed: a path that does not exist (its parent folders may be created) or an empty folder; an earlier output
    of ``kind`` when ``kind.continues``, or when ``replace`` and ``kind.replaceable``. Refused: symbolic links,
    anything else that exists. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    if path.is_symlink():
        raise InvalidInput(f"{path} is a symbolic link; give the real path of a new {kind.name} (nothing was changed)")
    if path.exists() and not _is_empty_dir(path):
        ours = kind.is_ours(path)
        if not ours:
            raise InvalidInput(f"{path} already exists and is not {kind.name} LivingWorld wrote; choose another "
                               "output path (nothing was changed)")
        if not kind.continues:
            if not kind.replaceable:
                raise InvalidInput(f"{path} already holds {kind.name}; choose another output path (nothing was "
                                   "changed)")
            if not replace:
                raise InvalidInput(f"{path} already holds {kind.name}; pass replace=true (CLI: --replace) to "
                                   "overwrite it, or choose another output path (nothing was changed)")
    _writable_parent(path)
    return path


def only_files(path: Path, allowed: Callable[[str], bool]) -> bool:
    """``path`` is a real folder whose entries are all plain files with names ``allowed`` accepts (a folder one of
    our writers made holds nothing else; a user's folder that happens to hold a manifest.json does)."""
    if not path.is_dir() or path.is_symlink():
        return False
    for entry in os.scandir(path):
        if not entry.is_file(follow_symlinks=False) or not allowed(entry.name):
            return False
    return True


def remove_empty_folders(folder: Path) -> None:
    """Delete ``folder`` and the folders under it when they hold no file (a failed job's leftovers); a folder
    with anything in it stays, and so does what it holds."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for sub in list(folder.iterdir()):
        if sub.is_dir() and not sub.is_symlink():
            remove_empty_folders(sub)
    try:
        folder.rmdir()
    except OSError:  # not empty
        pass
