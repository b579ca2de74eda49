"""Tiny real data for backend/io tests: random Gaussians and PLYs written by plyfile the way other tools do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from backend.gaussians import Gaussians
from backend.io.ply import sh_rest_names


def _make_gaussians(n: int = 50, degree: int = 3, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    return Gaussians(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.uniform(-5, 0, size=(n, 3)).astype(np.float32),
        opacity_logits=rng.uniform(-4, 4, size=n).astype(np.float32),
        sh=rng.normal(scale=0.5, size=(n, k, 3)).astype(np.float32),
    )


@pytest.fixture
def make_gaussians():
    """make_gaussians(n, degree, seed) -> numpy Gaussians with random, valid raw parameters."""
    return _make_gaussians


def inria_columns(g: Gaussians, normals: bool = True) -> dict[str, np.ndarray]:
    """The properties of ``g`` by INRIA name, computed independently of backend.io.ply (reference layout)."""
    n, k = len(g), g.sh.shape[1]
    cols = {"x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2]}
    if normals:
        cols.update({"nx": np.zeros(n, np.float32), "ny": np.zeros(n, np.float32), "nz": np.zeros(n, np.float32)})
    for c in range(3):
        cols[f"f_dc_{c}"] = g.sh[:, 0, c]
    for i, name in enumerate(sh_rest_names(k)):
        cols[name] = g.sh[:, 1 + i % (k - 1), i // (k - 1)]
    cols["opacity"] = g.opacity_logits
    for i in range(3):
        cols[f"scale_{i}"] = g.log_scales[:, i]
    for i in range(4):
        cols[f"rot_{i}"] = g.quats[:, i]
    return cols


def write_with_plyfile(path: Path, columns: dict[str, np.ndarray], byte_order: str = "<", text: bool = False,
                       dtypes: dict[str, str] | None = None) -> Path:
    """Write ``columns`` as one 'vertex' element in the given order, types and encoding ("another tool")."""
    dtypes = dtypes or {}
    n = len(next(iter(columns.values())))
    rec = np.empty(n, dtype=[(name, dtypes.get(name, "f4")) for name in columns])
    for name, values in columns.items():
        rec[name] = values
    PlyData([PlyElement.describe(rec, "vertex")], text=text, byte_order=byte_order).write(str(path))
    return path


@pytest.fixture
def other_tool_ply():
    """other_tool_ply(path, columns, byte_order="<", text=False, dtypes=None) -> path written by plyfile."""
    return write_with_plyfile


@pytest.fixture
def columns_of():
    """columns_of(gaussians, normals=True) -> {INRIA property name: (N,) array}."""
    return inria_columns
