"""Running a script's Triton kernels on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``), for the
slow tests that check the CUDA kernels' arithmetic on a machine without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_interpreted(script: str, timeout: float = 900) -> str:
    """Run ``script`` in a fresh interpreter with ``TRITON_INTERPRET=1`` from the repository root; its stdout.
    Skips the test where the triton package is missing; fails with the script's stderr when it fails."""
    pytest.importorskip("triton")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "TRITON_INTERPRET": "1"},
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout
