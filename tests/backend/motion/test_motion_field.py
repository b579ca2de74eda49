"""The motion field's contracted domain, its device-sized defaults, frozen-decoder updates, per-step progress and
cancel, and the velocity lattice the CPU bake integrates through."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.errors import InvalidInput
from backend.fields import HashGridConfig
from backend.world.motion.field import (
    CONTRACTED_BOX,
    MotionField,
    MotionFieldConfig,
    field_config_for,
    new_motion_field,
)
from backend.world.motion.lift import SceneFlow

torch.set_num_threads(1)

SMALL = MotionFieldConfig(encoding=HashGridConfig(n_levels=4, log2_table_size=14, base_resolution=8,
                                                  per_level_scale=1.5), hidden=32, hidden_layers=1, steps=80,
                          update_steps=40, batch_size=2048, lr=2e-2)


def _flow(points, vectors, material=2, view=0):
    n = len(points)
    return SceneFlow(np.asarray(points, float), np.asarray(vectors, float), np.full(n, material, np.uint8),
                     np.full(n, view, np.int32))


def _ground(rng, n, lo=1.0, hi=12.0):
    """Points on the ground z = -1.6 in front of a camera at the origin, 1..12 m away."""
    r, a = rng.uniform(lo, hi, n), rng.uniform(-0.6, 0.6, n)
    return np.c_[r * np.sin(a), r * np.cos(a), np.full(n, -1.6)]


def _sky(rng, n, radius=50_000.0):
    """Points on a sky sphere of ``radius`` around the origin, above the horizon, in front."""
    az, el = rng.uniform(-0.6, 0.6, n), rng.uniform(0.02, 0.5, n)
    return radius * np.c_[np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)]


def test_contracted_domain_holds_near_water_and_a_sky_50_km_away_in_one_field():
    """Water 1-12 m away flowing 3 cm/frame and clouds 50 km away drifting 50 m/frame (the same angle per frame
    within a factor of a few) are both fitted: the gain g = max(|u|, 1) carries the distance."""
    rng = np.random.default_rng(0)
    water = _ground(rng, 3000)
    sky = _sky(rng, 3000)
    wv = np.tile([0.0, -0.03, 0.0], (len(water), 1))
    sv = np.cross([0, 0, 1e-3], sky)  # rotation about the vertical: ~50 m/frame at 50 km
    field = new_motion_field(water, SMALL, centre=np.zeros(3))
    assert field.config.centre == (0.0, 0.0, 0.0) and 1.0 < field.config.radius < 4.0  # 10th percentile distance
    y, gain = field.inputs(torch.as_tensor(np.r_[water[:5], sky[:5]], dtype=torch.float32))
    assert float(torch.linalg.vector_norm(y, dim=1).max()) < 2.0 < CONTRACTED_BOX  # inside the ball, at any distance
    assert float(gain[5:].min()) > 1e4  # the sky's gain is its distance in radii
    report = field.fit(SceneFlow.concatenate([_flow(water, wv), _flow(sky, sv, material=1)]))
    assert report.steps == 80 and report.relative_error < 0.1
    w_test, s_test = _ground(rng, 300, 2.0, 10.0), _sky(rng, 300)
    w_err = np.linalg.norm(field.velocity(w_test) - [0, -0.03, 0], axis=1) / 0.03
    s_true = np.cross([0, 0, 1e-3], s_test)
    s_err = np.linalg.norm(field.velocity(s_test) - s_true, axis=1) / np.linalg.norm(s_true, axis=1)
    assert np.median(w_err) < 0.15 and np.median(s_err) < 0.15
    # content far outside everything the field has seen is still in its domain (no clamping to a box)
    far = np.array([[0.0, 400.0, -1.6], [-300.0, -200.0, 5.0]])
    assert np.all(np.isfinite(field.velocity(far)))


def test_later_fits_warm_start_on_all_samples_and_report_every_step():
    rng = np.random.default_rng(1)
    pts = _ground(rng, 2000)
    drift = np.tile([0.02, 0.01, 0.0], (len(pts), 1))
    field = new_motion_field(pts, SMALL, centre=np.zeros(3))
    calls = []
    assert field.fit(_flow(pts, drift), progress=lambda d, t: calls.append((d, t))).decoder == "trained"
    assert calls == [(i, 80) for i in range(1, 81)]
    # an expansion further out, then smoke rising where the first fit only saw drift along the ground
    more = _ground(rng, 1000, 12.0, 30.0)
    smoke = _ground(rng, 1000, 3.0, 6.0) + [0.0, 0.0, 2.0]
    samples = SceneFlow.concatenate([_flow(pts, drift), _flow(more, np.tile([0.02, 0.01, 0.0], (len(more), 1)), view=1),
                                     _flow(smoke, np.tile([0.0, 0.0, 0.03], (len(smoke), 1)), material=3, view=2)])
    calls.clear()
    update = field.fit(samples, progress=lambda d, t: calls.append((d, t)))
    assert update.steps == 40 and update.relative_error < 0.1 and calls == [(i, 40) for i in range(1, 41)]
    rise = field.velocity(_ground(rng, 200, 3.5, 5.5) + [0.0, 0.0, 2.0])
    assert np.median(rise[:, 2]) > 0.025


def test_the_papers_frozen_decoder_re_fit_trains_the_encoding_only():
    rng = np.random.default_rng(4)
    pts = _ground(rng, 1500)
    field = new_motion_field(pts, replace(SMALL, freeze_decoder=True), centre=np.zeros(3))
    field.fit(_flow(pts, np.tile([0.02, 0.01, 0.0], (len(pts), 1))))
    mlp = {k: v.clone() for k, v in field.mlp.state_dict().items()}
    table = field.encoding.table.detach().clone()
    update = field.fit(_flow(pts, np.tile([0.03, 0.0, 0.0], (len(pts), 1))))
    assert update.decoder == "frozen"
    for k, v in field.mlp.state_dict().items():
        assert torch.equal(v, mlp[k]), k
    assert not torch.equal(field.encoding.table.detach(), table)
    assert all(p.requires_grad for p in field.mlp.parameters())  # left trainable for whoever uses it next


def test_a_cancel_raised_from_progress_stops_the_fit_within_one_step():
    rng = np.random.default_rng(2)
    pts = _ground(rng, 500)
    field = new_motion_field(pts, SMALL, centre=np.zeros(3))
    seen = []

    def progress(done, total):
        seen.append(done)
        if done == 3:
            raise KeyboardInterrupt("cancel")

    with pytest.raises(KeyboardInterrupt):
        field.fit(_flow(pts, np.tile([0.02, 0.0, 0.0], (len(pts), 1))), progress=progress)
    assert seen == [1, 2, 3]


def test_devices_get_their_own_default_field_sizes():
    gpu, cpu = field_config_for("cuda"), field_config_for("cpu")
    assert gpu == MotionFieldConfig()  # Instant-NGP's 16 hashed levels
    from backend.fields import level_layout

    lay = level_layout(cpu.encoding)
    assert cpu.encoding.n_levels == 5 and not lay.hashed.any()  # every CPU level is a dense grid_sample volume
    assert lay.n_rows < 500_000 and cpu.steps == 100 and cpu.hidden_layers == 1


def test_the_lattice_flow_in_contracted_space_follows_the_field():
    """The CPU bake integrates dy/dt = J F on a 64^3 lattice of the contracted space: trajectories of near water
    and of a sky 50 km away end where integrating F itself ends them, to a few per cent of their travel."""
    from backend.world.motion.bake import integrate_loop

    rng = np.random.default_rng(3)
    water, sky = _ground(rng, 3000), _sky(rng, 2000)
    field = new_motion_field(water, field_config_for("cpu"), centre=np.zeros(3))
    wv = np.c_[0.02 * np.sin(water[:, 0]), -0.03 + 0.0 * water[:, 1], np.zeros(len(water))]
    field.fit(SceneFlow.concatenate([_flow(water, wv), _flow(sky, np.cross([0, 0, 1e-3], sky), material=1)]),
              steps=60)
    x0 = torch.as_tensor(np.r_[_ground(rng, 300, 2.0, 10.0), _sky(rng, 300)], dtype=torch.float64)
    flow = field.lattice(64)
    back = flow.to_x(flow.to_q(x0.float())).double()  # float32 y: a 50 km sky comes back within 0.3 %
    assert float((torch.linalg.vector_norm(back - x0, dim=1) / torch.linalg.vector_norm(x0, dim=1)).max()) < 3e-3
    direct = integrate_loop(field, x0.float(), 12, loop=False).double()
    looked_up = integrate_loop(flow, x0.float(), 12, loop=False).double()
    travel = torch.linalg.vector_norm(direct[-1] - x0, dim=1)
    err = torch.linalg.vector_norm(looked_up[-1] - direct[-1], dim=1) / travel.clamp(min=1e-9)
    assert float(travel[300:].median()) > 100.0  # the sky moved a lot in metres
    assert float(err[:300].median()) < 0.05 and float(err[300:].median()) < 0.05
    radius = torch.linalg.vector_norm(looked_up[-1, 300:], dim=1)
    assert float((radius / 50_000.0 - 1).abs().max()) < 0.01  # the sky stays on its shell
    with pytest.raises(InvalidInput):
        field.lattice(1)


def test_integration_order_does_not_change_any_trajectory():
    """integrate_loop runs the Gaussians in Z-order; each trajectory is the one of its own start, in x0's order."""
    from backend.world.motion.bake import integrate_loop

    rng = np.random.default_rng(5)
    ground = _ground(rng, 2000)
    field = new_motion_field(ground, field_config_for("cpu"), centre=np.zeros(3))
    field.fit(_flow(ground, np.c_[0.05 * np.cos(ground[:, 1]), 0.02 + 0.0 * ground[:, 0], np.zeros(len(ground))]),
              steps=30)
    x0 = torch.as_tensor(_ground(rng, 500, 2.0, 10.0), dtype=torch.float32)
    whole = integrate_loop(field, x0, 6)
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    shuffled = integrate_loop(field, x0[perm], 6)
    assert torch.equal(whole[0, :500], x0)
    assert float((shuffled[:, :500] - whole[:, :500][:, perm]).abs().max()) < 1e-5
    assert float((shuffled[:, 500:] - whole[:, 500:][:, perm]).abs().max()) < 1e-5
    one = integrate_loop(field, x0[7:8], 6)  # a Gaussian alone moves as it does among the others
    assert float((one[:, 0] - whole[:, 7]).abs().max()) < 1e-5 and float((whole[-1] - whole[0]).abs().max()) > 1e-3


def test_a_field_saved_before_the_contracted_domain_still_loads_with_its_box(tmp_path):
    old = MotionField(MotionFieldConfig(encoding=HashGridConfig(n_levels=2, log2_table_size=10, base_resolution=4,
                                                                bbox_min=(-1, -1, -1), bbox_max=(1, 1, 1),
                                                                backend="torch")))
    old.velocity_scale.fill_(1.0)
    blob = {"config": {k: v for k, v in old.save(tmp_path / "f.pt") and torch.load(tmp_path / "f.pt",
                                                                                      weights_only=True)["config"].items()
                       if k not in ("centre", "radius")},
            "state_dict": {k: v.detach() for k, v in old.state_dict().items()}}
    torch.save(blob, tmp_path / "old.pt")
    loaded = MotionField.load(tmp_path / "old.pt")
    assert loaded.config.centre is None
    p = np.array([[0.2, -0.3, 0.5], [3.0, 0.0, 0.0]])
    np.testing.assert_allclose(loaded.velocity(p), old.velocity(p), atol=1e-7)
