"""Reading ``.npy`` files a user can hand us: never unpickling, never allocating what the file does not hold.

``load_array`` reads the header first (``numpy.lib.format``), refuses object dtypes (a pickle) and headers whose
shape needs more bytes than the file has (a 16-byte file claiming 10^12 floats would otherwise be allocated before
the read fails), then loads (or memory-maps) the data. Every failure is a one-line ``InvalidInput`` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInput

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def load_array(path: str | os.PathLike, mmap: bool = False, what: str = "numpy array file") -> np.ndarray:
    """The array in the ``.npy`` file ``path``; memory-mapped read-only when ``mmap``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in _HEADER_READERS:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, dtype = _HEADER_READERS[version](f)  # the header only, no data
            offset = f.tell()
        if dtype.hasobject:
            raise ValueError("it holds Python objects (a pickle), which are never loaded")
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        have = path.stat().st_size - offset
        if need > have:
            raise ValueError(f"its header promises shape {shape} {dtype} ({need} bytes), the file holds {have}")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"{path}: not a readable {what} ({first})") from None
