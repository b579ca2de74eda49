"""How Triton kernels run in this process (shared by the hash grid and the frame renderer; imports no Triton)."""

from __future__ import annotations

import os


def interpreting() -> bool:
    """True under Triton's CPU interpreter (``TRITON_INTERPRET=1``): the kernels run on CPU tensors (tests without
    a GPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
