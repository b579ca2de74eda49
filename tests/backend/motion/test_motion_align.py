"""Lifting cues to 3D and geometry-aware alignment on synthetic views with known 3D motion."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from backend.errors import InvalidInput
from backend.world.motion.align import AlignConfig, _minimal_sets, align_flow, match_index, solve_rotation_scale
from backend.world.motion.cues import MATERIAL_CODE, MotionCue
from backend.world.motion.lift import SceneFlow, lift_cue


def _angles_deg(a, b):
    cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _errors(flow: SceneFlow, truth_fn):
    truth = truth_fn(flow.points)
    ang = _angles_deg(flow.vectors, truth).mean()
    scale = np.linalg.norm(flow.vectors, axis=1).mean() / np.linalg.norm(truth, axis=1).mean()
    return ang, abs(scale - 1)


def _views(scene):
    cams = [scene.look_at([0, -6, 2.5], [0, 0, 0]), scene.look_at([2.5, -5.5, 2.5], [1.5, 0.5, 0])]
    return [(c, scene.ground_depth(c)) for c in cams]


def test_lifted_true_cue_recovers_the_3d_motion(scene):
    cam, depth = _views(scene)[0]
    flow = lift_cue(scene.true_cue(cam, depth), depth, cam, view=0)
    assert len(flow) > 500 and np.all(flow.material == MATERIAL_CODE["water"])
    np.testing.assert_allclose(flow.points[:, 2], 0, atol=1e-9)  # on the ground plane
    ang, scale_err = _errors(flow, scene.true_velocity)
    assert ang < 2.0 and scale_err < 0.03


def test_lift_checks_sizes(scene):
    cam, depth = _views(scene)[0]
    with pytest.raises(InvalidInput):
        lift_cue(MotionCue.empty(10, 10), depth, cam)


def test_closed_form_recovers_rotation_and_scale_exactly():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    r_true = Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix()
    r, s = solve_rotation_scale(a, 1.7 * a @ r_true.T)
    np.testing.assert_allclose(r, r_true, atol=1e-9)
    assert s == pytest.approx(1.7)


@pytest.mark.parametrize("flip,angle,scale", [(True, 0.0, 2.5), (True, 35.0, 0.4), (False, -60.0, 3.0)])
def test_alignment_fixes_a_flipped_rotated_scaled_view_with_outliers(scene, flip, angle, scale):
    (c1, d1), (c2, d2) = _views(scene)
    prev = align_flow(lift_cue(scene.true_cue(c1, d1), d1, c1, view=0), None, c1.center)
    assert prev.status == "first_view"
    raw = lift_cue(scene.true_cue(c2, d2), d2, c2, view=1)
    # corrupt the raw 3D cue: flipped (180 degrees about the ground normal), rotated, scaled, 25% outliers
    bad = Rotation.from_euler("z", angle + (180.0 if flip else 0.0), degrees=True).as_matrix()
    bad = Rotation.from_euler("x", 10, degrees=True).as_matrix() @ bad  # and tilted out of the plane
    v = scale * raw.vectors @ bad.T
    rng = np.random.default_rng(1)
    out = rng.random(len(v)) < 0.25
    v[out] = rng.normal(size=(out.sum(), 3)) * np.linalg.norm(v, axis=1).mean() * 2
    corrupted = raw.with_vectors(v)
    corrupted.view = np.arange(len(v), dtype=np.int32)  # sample ids, to tell outliers apart after alignment
    res = align_flow(corrupted, prev.flow, c2.center)
    assert res.status == "aligned" and res.matches > 100
    ang, scale_err = _errors(res.flow.subset(~out[res.flow.view]), scene.true_velocity)
    assert ang < 10.0 and scale_err < 0.10
    assert 0.6 < res.inlier_fraction < 0.85
    # most outliers are dropped, nearly all true samples kept
    assert res.dropped >= 0.5 * out.sum() and np.isin(np.flatnonzero(~out), res.flow.view).mean() > 0.98


def test_alignment_of_a_flipped_scaled_2d_cue_through_lifting(scene):
    (c1, d1), (c2, d2) = _views(scene)
    prev = align_flow(lift_cue(scene.true_cue(c1, d1), d1, c1), None, c1.center).flow
    cue = scene.true_cue(c2, d2)
    flipped = MotionCue(-3.0 * cue.flow, cue.mask, cue.material)  # the model said "back, three times as fast"
    res = align_flow(lift_cue(flipped, d2, c2, view=1), prev, c2.center)
    ang, scale_err = _errors(res.flow, scene.true_velocity)
    assert res.status == "aligned" and ang < 10.0 and scale_err < 0.10
    # water stays on the ground: no vertical motion after the constraint
    assert np.abs(res.flow.vectors[:, 2]).max() < 1e-9


def test_no_overlap_keeps_the_view_and_flags_it(scene):
    (c1, d1), _ = _views(scene)
    prev = lift_cue(scene.true_cue(c1, d1), d1, c1)
    far = lift_cue(scene.true_cue(c1, d1), d1, c1)
    far.points = far.points + np.array([500.0, 0, 0])
    res = align_flow(far, prev, c1.center, AlignConfig(min_matches=20))
    assert res.status == "no_overlap" and res.scale == 1.0
    np.testing.assert_allclose(res.flow.vectors[:, :2], far.vectors[:, :2])


def test_cloud_flow_stays_tangent_to_the_sky_shell():
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(200, 3))
    dirs[:, 2] = np.abs(dirs[:, 2]) + 0.5
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pts = 1000.0 * dirs
    flow = SceneFlow(pts, rng.normal(size=(200, 3)), np.full(200, MATERIAL_CODE["clouds"], np.uint8),
                     np.zeros(200, np.int32))
    res = align_flow(flow, None, np.zeros(3))
    np.testing.assert_allclose(np.sum(res.flow.vectors * dirs, axis=1), 0, atol=1e-9)


@pytest.mark.parametrize("k", [3, 4, 1000])
def test_ransac_minimal_sets_are_distinct_triples_in_range(k):
    idx = _minimal_sets(np.random.default_rng(0), k, 500)
    assert idx.shape == (500, 3) and idx.min() >= 0 and idx.max() < k
    assert all(len(set(row)) == 3 for row in idx.tolist())
    assert len({tuple(r) for r in idx.tolist()}) > 3  # random, not one triple repeated


def test_each_material_is_aligned_on_its_own_matches():
    """Clouds (dense overlap, raw cue flipped) and water (raw cue scaled 3x) of one view get their own transforms:
    the sky's many matches do not decide the water's."""
    rng = np.random.default_rng(1)
    sky_prev = rng.uniform(-50, 50, (4000, 3)) + [0, 0, 200]
    water_prev = np.c_[rng.uniform(-10, 10, (2000, 2)), np.zeros(2000)]
    v_sky, v_water = np.array([2.0, 0.5, 0.0]), np.array([0.0, 0.3, 0.0])
    n_prev = len(sky_prev) + len(water_prev)
    prev = SceneFlow(np.r_[sky_prev, water_prev], np.r_[np.tile(v_sky, (4000, 1)), np.tile(v_water, (2000, 1))],
                     np.r_[np.full(4000, MATERIAL_CODE["clouds"]), np.full(2000, MATERIAL_CODE["water"])].astype(np.uint8),
                     np.zeros(n_prev, np.int32))
    sky_new = sky_prev[:1500] + rng.normal(0, 0.01, (1500, 3))
    water_new = water_prev[:800] + np.r_[rng.normal(0, 0.01, (800, 2)).T, np.zeros((1, 800))].T
    flipped = Rotation.from_euler("z", 180, degrees=True).as_matrix()
    new = SceneFlow(np.r_[sky_new, water_new],
                    np.r_[np.tile(v_sky @ flipped.T, (1500, 1)), np.tile(3.0 * v_water, (800, 1))],
                    np.r_[np.full(1500, MATERIAL_CODE["clouds"]), np.full(800, MATERIAL_CODE["water"])].astype(np.uint8),
                    np.ones(2300, np.int32))
    res = align_flow(new, prev, camera_center=None)
    # the previous samples' index built ahead (as an expansion does while it outpaints): the same alignment
    ahead = align_flow(new, prev, camera_center=None, index=match_index(prev))
    assert ahead.materials == res.materials and ahead.dropped == res.dropped
    np.testing.assert_array_equal(ahead.flow.vectors, res.flow.vectors)
    with pytest.raises(ValueError, match="match index"):  # built with another config
        align_flow(new, prev, None, AlignConfig(match_radius=1.0), index=match_index(prev))
    assert res.status == "aligned" and set(res.materials) == {"clouds", "water"}
    assert res.materials["water"]["scale"] == pytest.approx(1 / 3, rel=1e-3)
    assert res.materials["clouds"]["scale"] == pytest.approx(1.0, rel=1e-3)
    water = res.flow.material == MATERIAL_CODE["water"]
    np.testing.assert_allclose(res.flow.vectors[water], np.tile(v_water, (water.sum(), 1)), atol=1e-3)
    np.testing.assert_allclose(res.flow.vectors[~water], np.tile(v_sky, ((~water).sum(), 1)), atol=1e-3)
