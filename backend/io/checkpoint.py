"""Reading torch checkpoints without running anything they contain.

``torch.load(weights_only=False)`` unpickles arbitrary objects: a crafted ``checkpoint.pt`` placed in a run
folder could execute code in the server process. Every checkpoint of the backend is plain data (tensors, dicts,
lists, tuples, numbers, strings, None), which torch's restricted unpickler (``weights_only=True``) reads; anything
else is refused with a one-line error naming the file. Writers must keep it that way: ``plain`` turns
dataclasses, numpy scalars/arrays and paths into such data before ``torch.save``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInput, NotFound


def plain(obj):
    """``obj`` with every dataclass, numpy value and path replaced by plain data that ``weights_only`` loads
    (dataclass -> dict, numpy array -> tensor, numpy scalar -> int/float/bool, Path -> str), recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def load_checkpoint_file(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """The dict saved at ``path`` by ``torch.save``, loaded on the CPU with ``weights_only=True``.

    Raises ``NotFound`` when there is no file, ``InvalidInput`` (one line, naming the file) when it holds anything
    but plain data (a pickle that would build other objects is never executed) or is not a torch file at all.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no {what} at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InvalidInput(f"{path}: refused as a {what}: it holds Python objects other than tensors, numbers and "
                           "strings, which are never unpickled; train again to rewrite it") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, TypeError,
            KeyError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{path}: not a readable {what} (truncated or not a torch file: {first[:200]}); "
                           "train again to rewrite it") from None
    if not isinstance(blob, dict):
        raise InvalidInput(f"{path}: not a {what}: it holds a {type(blob).__name__}, expected a dict")
    return blob
