"""Motion field fitting and bidirectional loop baking, with seam / coverage / flicker metrics on renders."""

import numpy as np
import pytest
import torch

from backend.errors import InvalidInput, NotFound
from backend.fields import HashGridConfig
from backend.gaussians import Gaussians, rgb_to_sh_dc
from backend.io.lw4d import read_sequence
from backend.world.motion.bake import (
    BakeConfig,
    bake_loop,
    crossfade_weights,
    loop_metrics,
    render_loop,
    write_loop,
)
from backend.world.motion.field import MotionField, MotionFieldConfig, field_fit_error, new_motion_field
from backend.world.motion.lift import SceneFlow

torch.set_num_threads(1)  # a loaded 2-core machine runs these small kernels faster on one thread

SMALL = MotionFieldConfig(encoding=HashGridConfig(n_levels=4, log2_table_size=12, base_resolution=4,
                                                  per_level_scale=2.0), steps=60, update_steps=30,
                          batch_size=1024, lr=2e-2)
V = np.array([0.02, 0.0, 0.0])


def _grid(x0, x1, y0, y1, step, z, rgb):
    xs, ys = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    n = xs.size
    return Gaussians(
        means=np.c_[xs.ravel(), ys.ravel(), np.full(n, z)].astype(np.float32),
        quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
        log_scales=np.full((n, 3), np.log(step * 0.7), np.float32),
        opacity_logits=np.full(n, 4.0, np.float32),
        sh=np.tile(rgb_to_sh_dc(np.float32(rgb))[None, None], (n, 1, 1)).astype(np.float32),
    )


def _world():
    ground = _grid(-2.5, 2.5, 0.0, 4.0, 0.12, 0.0, [0.45, 0.35, 0.2])
    water = _grid(-1.0, 1.0, 1.2, 2.8, 0.08, 0.02, [0.1, 0.3, 0.8])
    g = Gaussians.concatenate([ground, water])
    dynamic = np.r_[np.zeros(len(ground), bool), np.ones(len(water), bool)]
    return g, dynamic


def _constant(x):
    return torch.as_tensor(V, dtype=x.dtype, device=x.device).expand_as(x)


def test_rk2_trajectories_and_crossfade_close_the_loop():
    g, dyn = _world()
    baked = bake_loop(g, dyn, _constant, BakeConfig(frames=10))
    m = int(dyn.sum())
    x0 = g.means[dyn]
    assert baked.positions.shape == (10, 2 * m, 3)
    t = np.arange(10)[:, None, None]
    np.testing.assert_allclose(baked.positions[:, :m], x0[None] + t * V, atol=1e-5)  # forward from frame 0
    np.testing.assert_allclose(baked.positions[:, m:], x0[None] - (10 - t) * V, atol=1e-5)  # backward from N
    o = 1 / (1 + np.exp(-4.0))
    np.testing.assert_allclose(baked.opacity[:, :m] + baked.opacity[:, m:], o, atol=1e-6)
    np.testing.assert_allclose(baked.opacity[0, :m], o, atol=1e-6)
    assert np.all(baked.opacity[0, m:] == 0)
    w = crossfade_weights(10, smooth=True)
    assert w[0] == 0 and np.all(np.diff(w) > 0) and w[-1] < 1


def test_bake_rejects_bad_inputs():
    g, dyn = _world()
    with pytest.raises(InvalidInput):
        bake_loop(g, np.zeros(len(g), bool), _constant)
    with pytest.raises(InvalidInput):
        bake_loop(g, dyn, _constant, BakeConfig(frames=1))


def test_loop_writes_lw4d_that_reads_back(tmp_path):
    g, dyn = _world()
    baked = bake_loop(g, dyn, _constant, BakeConfig(frames=6, fps=12))
    seq = read_sequence(write_loop(tmp_path / "loop.lw4d", baked), check_values=True)
    m = int(dyn.sum())
    assert seq.loop and seq.frame_count == 6 and seq.fps == 12
    assert seq.count == len(g) + m and seq.dynamic_count == 2 * m
    np.testing.assert_array_equal(seq.dynamic_index, np.arange(len(g) - m, len(g) + m))
    np.testing.assert_allclose(seq.channels["position"][3], baked.positions[3])
    np.testing.assert_allclose(seq.channels["opacity"][3], baked.opacity[3])
    # static Gaussians sit at rest in base.ply
    np.testing.assert_allclose(seq.base.means[: len(g) - m], g.means[~dyn])


def _camera():
    from backend.render.cameras import Camera

    eye, target = np.array([0.0, -1.5, 3.0]), np.array([0.0, 2.0, 0.0])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, np.cross(z, x), z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return Camera(K=np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]]), world_to_cam=w2c, width=64, height=48)


def test_bidirectional_loop_is_seamless_and_covers_more_than_a_one_way_bake():
    g, dyn = _world()
    cam = _camera()
    loop = bake_loop(g, dyn, _constant, BakeConfig(frames=12))
    one_way = bake_loop(g, dyn, _constant, BakeConfig(frames=12, loop=False))
    ml = loop_metrics(*render_loop(loop, cam))
    mo = loop_metrics(*render_loop(one_way, cam))
    assert ml.seam_ratio < 2.0  # the wrap looks like any other step
    assert mo.seam_ratio > 4.0  # a one-way clip jumps back at the wrap
    assert ml.uncovered_max < mo.uncovered_max
    assert ml.uncovered_max < 0.1
    assert ml.flicker < 1e-6 and ml.flicker_score > 0.999  # static areas do not change at all


def test_motion_field_fits_synthetic_flow_and_warm_starts(tmp_path):
    rng = np.random.default_rng(0)

    def vel(x):
        return np.array([0.04, 0.02, 0.0]) + np.cross([0, 0, 0.015], x)

    pts = np.c_[rng.uniform(-4, 4, (3000, 2)), np.zeros(3000)]
    samples = SceneFlow(pts, vel(pts), np.full(3000, 2, np.uint8), np.zeros(3000, np.int32))
    field = new_motion_field(pts, SMALL)
    first = field.fit(samples)
    assert first.steps == 60 and first.relative_error < 0.1
    held = np.c_[rng.uniform(-3.5, 3.5, (500, 2)), np.zeros(500)]
    ang, rel = field_fit_error(field, held, vel(held))
    assert ang < 8.0 and rel < 0.15
    # a new view: warm start continues from the fitted parameters with fewer steps
    more = np.c_[rng.uniform(4, 6, (1000, 1)), rng.uniform(-4, 4, (1000, 1)), np.zeros(1000)]
    update = field.fit(SceneFlow.concatenate([samples, SceneFlow(more, vel(more), np.full(1000, 2, np.uint8),
                                                                 np.ones(1000, np.int32))]))
    assert update.steps == 30 and update.relative_error < 0.15
    path = field.save(tmp_path / "field.pt")
    again = MotionField.load(path)
    np.testing.assert_allclose(again.velocity(held), field.velocity(held), atol=1e-6)
    with pytest.raises(NotFound):
        MotionField.load(tmp_path / "missing.pt")


def test_backdrop_keeps_uncovered_pixels_the_surface_colour_and_stays_behind_the_moving_copies():
    """Water with nothing behind it slides sideways: without the still bed the upstream strip and the mid-loop
    cross-fade show the empty background; with it they show water, and the moving copies stay in front."""
    water = _grid(-1.0, 1.0, 1.2, 2.8, 0.08, 0.02, [0.1, 0.3, 0.8])
    dyn = np.ones(len(water), bool)
    cam = _camera()
    eye = cam.center
    shifted = lambda x: torch.as_tensor(10 * V, dtype=x.dtype, device=x.device).expand_as(x)
    results = {}
    for backdrop in (False, True):
        for loop in (False, True):
            baked = bake_loop(water, dyn, shifted, BakeConfig(frames=8, loop=loop, backdrop=backdrop), eye=eye)
            colors, _, rest = render_loop(baked, cam, frames=[0, 4])
            results[backdrop, loop] = (baked, colors, rest)
    bare, bed = results[False, False], results[True, False]
    assert len(bed[0].static) == len(water) and len(bare[0].static) == 0
    region = bare[2] > 0.9  # where the water is at rest
    blue = np.array([0.1, 0.3, 0.8])
    # frame 4 of the one-way clip: the upstream strip is empty without the bed, water with it
    err_bare = np.abs(bare[1][1][region] - blue).mean(axis=1)
    err_bed = np.abs(bed[1][1][region] - blue).mean(axis=1)
    uncovered = err_bare > 0.2
    assert uncovered.mean() > 0.05
    assert err_bed[uncovered].max() < 0.1
    # at rest the bed is behind the copies: inside the water it only fills their residual transmittance (a few
    # per cent) with the water's own colour
    assert np.abs(bed[1][0] - bare[1][0])[region].max() < 0.06
    assert np.abs(bed[1][0][region] - blue).mean() < np.abs(bare[1][0][region] - blue).mean()
    # mid-loop of the looping bake: two half-faded copies let the background through without the bed
    mid_bare = np.abs(results[False, True][1][1][region] - blue).mean()
    mid_bed = np.abs(results[True, True][1][1][region] - blue).mean()
    assert mid_bed < 0.5 * mid_bare


def test_bake_reports_every_integration_step_and_stops_on_cancel():
    g, dyn = _world()
    calls = []
    bake_loop(g, dyn, _constant, BakeConfig(frames=6), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 11) for i in range(1, 12)]  # 5 forward frames + 6 backward ones
    calls.clear()
    bake_loop(g, dyn, _constant, BakeConfig(frames=6, loop=False), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 5) for i in range(1, 6)]

    def cancel(done, total):
        if done == 2:
            raise KeyboardInterrupt("cancel")

    with pytest.raises(KeyboardInterrupt):
        bake_loop(g, dyn, _constant, BakeConfig(frames=50), progress=cancel)
