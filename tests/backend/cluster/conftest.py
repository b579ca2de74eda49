"""Fixtures: one local Ray cluster (2 CPUs) for the whole test session, and a tiny multi-view video.

The cluster is started in this process (``ray.init``), so a ``RayWorker`` built here uses it as it is, and a
separate ``lw serve --ray ADDRESS`` process can join it at ``ray_cluster`` (its GCS address).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")  # an optional dependency ([cluster] extra); the [test] extra installs it

ROOT = Path(__file__).resolve().parents[3]
BLENDER_PY = ROOT / ".venv-blender" / "bin" / "python"


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """A 2-CPU local Ray cluster; yields its address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """4 cameras x 6 frames at 96x72 (N3V layout), rendered by Blender (scripts/make_synthetic_dataset.py)."""
    if not BLENDER_PY.exists():
        pytest.skip(".venv-blender (bpy) is missing: run `make envs` to build the synthetic dataset")
    out = tmp_path_factory.mktemp("cluster") / "tiny"
    res = subprocess.run([str(BLENDER_PY), str(ROOT / "scripts" / "make_synthetic_dataset.py"), "--out", str(out),
                          "--preset", "tiny"], capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"dataset generation failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return out


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
