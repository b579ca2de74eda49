"""Fixtures: a tiny multi-view video rendered by Blender (scripts/make_synthetic_dataset.py), made once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
BLENDER_PY = ROOT / ".venv-blender" / "bin" / "python"


def make_dataset(out: Path, *args: str) -> Path:
    if not BLENDER_PY.exists():
        pytest.skip(".venv-blender (bpy) is missing: run `make envs` to build the synthetic dataset")
    res = subprocess.run([str(BLENDER_PY), str(ROOT / "scripts" / "make_synthetic_dataset.py"), "--out", str(out),
                          *args], capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"dataset generation failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """4 cameras x 6 frames at 96x72 (N3V layout + depth/ + scene.json)."""
    return make_dataset(tmp_path_factory.mktemp("moe") / "tiny", "--preset", "tiny")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
