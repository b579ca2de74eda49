"""The alignment's torch path (what runs on CUDA) against the numpy / scipy path, run here on the CPU: the grid
matching finds the k-d tree's neighbours, and the whole alignment gives the same transform, matches and flow."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from backend.world.motion.align import AlignConfig, align_flow, default_match_radius
from backend.world.motion.align_torch import GridIndex
from backend.world.motion.align_torch import default_match_radius as radius_on_device
from backend.world.motion.cues import MATERIAL_CODE
from backend.world.motion.lift import SceneFlow

torch.set_num_threads(2)


def test_grid_finds_the_tree_s_nearest_neighbour_within_the_radius():
    rng = np.random.default_rng(0)
    prev = np.r_[rng.normal(0, 3, (4000, 3)), rng.uniform(-1, 1, (3000, 3)) * [8, 8, 0.01]]  # a blob and a sheet
    prev = np.r_[prev, prev[:50]]  # repeated samples (a view seen twice): several points at one place
    q = np.r_[rng.normal(0, 4, (3000, 3)), prev[:20] + 1e-3]
    for radius in (0.05, 0.3, 2.0):
        d_tree, j_tree = cKDTree(prev).query(q, k=1, distance_upper_bound=radius)
        grid = GridIndex(torch.as_tensor(prev), radius)
        d, j = (t.numpy() for t in grid.nearest_within(torch.as_tensor(q), radius, chunk=777, max_pairs=20_000))
        found = np.isfinite(d_tree)
        assert found.any() and (~found).any()
        np.testing.assert_array_equal(np.isfinite(d), found)
        np.testing.assert_allclose(d[found], d_tree[found], rtol=1e-12)
        assert (j[~found] == len(prev)).all()
        np.testing.assert_allclose(np.linalg.norm(prev[j[found]] - q[found], axis=1), d_tree[found], rtol=1e-12)
        twin = np.isin(j_tree, np.r_[0:50, len(prev) - 50:len(prev)])  # a repeated point: either copy is nearest
        np.testing.assert_array_equal(j[found & ~twin], j_tree[found & ~twin])


def test_default_radius_is_the_cpu_path_s():
    rng = np.random.default_rng(1)
    pts = np.c_[rng.uniform(-10, 10, (20_000, 2)), np.zeros(20_000)]
    pts[:300] = pts[300:600]  # duplicates are not neighbours
    assert radius_on_device(torch.as_tensor(pts)) == pytest.approx(default_match_radius(pts), rel=1e-12)


def _scene(seed=0, n_prev=20_000, n_new=6_000):
    rng = np.random.default_rng(seed)

    def vel(x):
        return np.array([0.04, 0.02, 0.0]) + np.cross([0, 0, 0.015], x)

    def flow(points, view, material="water"):
        return SceneFlow(points, vel(points), np.full(len(points), MATERIAL_CODE[material], np.uint8),
                         np.full(len(points), view, np.int32))

    prev = flow(np.c_[rng.uniform(-10, 10, (n_prev, 2)), np.zeros(n_prev)], 0)
    clouds = flow(np.c_[rng.uniform(-50, 50, (2000, 2)), np.full(2000, 80.0)], 0, "clouds")
    prev = SceneFlow.concatenate([prev, clouds])
    new_pts = np.c_[rng.uniform(0, 20, (n_new, 1)), rng.uniform(-10, 10, (n_new, 1)), np.zeros(n_new)]
    new = SceneFlow.concatenate([flow(new_pts, 1), flow(np.c_[rng.uniform(0, 60, (800, 2)), np.full(800, 80.0)], 1,
                                                       "clouds")])
    bad = Rotation.from_euler("zx", [215, 10], degrees=True).as_matrix()
    v = 2.5 * new.vectors @ bad.T
    out = rng.random(len(v)) < 0.2
    v[out] = rng.normal(size=(out.sum(), 3)) * 0.1
    return new.with_vectors(v), prev


def test_torch_alignment_equals_the_numpy_alignment():
    new, prev = _scene()
    centre = np.array([0.0, -10.0, 5.0])
    ref = align_flow(new, prev, centre, device=None)
    got = align_flow(new, prev, centre, device="cpu")
    assert ref.status == got.status == "aligned"
    assert (got.matches, got.dropped) == (ref.matches, ref.dropped)
    np.testing.assert_allclose(got.rotation, ref.rotation, atol=1e-9)
    assert got.scale == pytest.approx(ref.scale, rel=1e-9) and got.scale == pytest.approx(0.4, rel=0.01)
    assert set(got.materials) == set(ref.materials) == {"water", "clouds"}
    np.testing.assert_allclose(got.flow.vectors, ref.flow.vectors, atol=1e-9)
    assert got.inlier_fraction == pytest.approx(ref.inlier_fraction) and got.residual == pytest.approx(ref.residual)


def test_torch_alignment_with_a_set_radius_and_without_overlap():
    new, prev = _scene(seed=2)
    cfg = AlignConfig(match_radius=0.2)
    ref = align_flow(new, prev, None, cfg, device=None)
    got = align_flow(new, prev, None, cfg, device="cpu")
    assert got.matches == ref.matches and got.scale == pytest.approx(ref.scale, rel=1e-9)
    far = new.with_vectors(new.vectors)
    far.points = far.points + 1000.0  # no previous sample anywhere near
    assert align_flow(far, prev, None, device="cpu").status == "no_overlap"
