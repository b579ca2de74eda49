"""Expansion from a turned camera: the hole is filled, the overlap is unchanged, the seam has no depth step."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from backend.errors import InvalidInput
from backend.io.ply import read_ply
from backend.render.rasterize import rasterize
from backend.world.depth_align import fit_scale_shift
from backend.world.lift import LiftConfig
from backend.world.pipeline import ExpandConfig, expand_world, new_world, refine
from backend.world.samples.make_landscape import SAMPLE_PATH


def _render(path, camera):
    with torch.no_grad():
        out = rasterize(read_ply(path).to_torch(), camera)
    return out.color.numpy(), out.alpha.numpy(), out.depth.numpy()


def test_expansion_fills_the_hole_and_keeps_the_overlap(tmp_path, make_config, turn):
    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=make_config(96))
    cam = turn(w0.current.opencv_camera(), 35)
    c0, a0, d0 = _render(w0.file("gaussians.ply"), cam)
    missing = a0 < 0.5
    assert 0.2 < missing.mean() < 0.8
    w1 = expand_world(root, cam)
    c1, a1, d1 = _render(w1.file("gaussians.ply"), cam)
    assert a1[missing].min() > 0.95  # the hole is filled
    keep = (a0 > 0.99) & ~np.pad(missing, 3, mode="edge")[3:-3, 3:-3]
    from scipy.ndimage import binary_dilation
    keep &= ~binary_dilation(missing, iterations=4)
    ground = keep & (d0 < 500)
    rel = np.abs(d1[ground] - d0[ground]) / d0[ground]
    assert np.median(rel) < 0.01 and np.percentile(rel, 95) < 0.05  # overlap geometry unchanged
    assert np.abs(c1[keep] - c0[keep]).mean() < 0.01  # overlap colours unchanged
    # The seam: new depth continues the old one (the ring of new pixels next to old ones).
    ring = missing & binary_dilation(~missing, iterations=3) & (d1 < 500)
    near_old = binary_dilation(ring, iterations=3) & keep & (d0 < 500)
    if ring.any() and near_old.any():
        assert abs(np.log(np.median(d1[ring])) - np.log(np.median(d0[near_old]))) < 0.25
    fit = w1.current.stats["depth_fit"]
    assert fit["overlap_pixels"] > 100 and fit["median_rel_error"] < 0.1
    assert set(w1.current.stats["timings"]) >= {"render_s", "outpaint_s", "depth_s", "lift_s", "total_s"}
    # the new view's sky joins the old one on the sphere around the shared camera centre: one layer, which the
    # motion field moves as one (two planes at different depths drift apart and open a gap at the seam)
    g1 = read_ply(w1.file("gaussians.ply"))
    sky = g1.extra["region"] == 1.0
    new_sky = sky & (g1.extra["step"] == 1.0)
    assert new_sky.sum() > 100
    radius = np.linalg.norm(g1.means[sky] - cam.center, axis=1) / LiftConfig().sky_depth
    assert radius.min() > 1 - 1e-4 and radius.max() < 1 + ExpandConfig().behind + 1e-4  # new sky under old soft
    assert np.mean(radius < 1 + 1e-4) > 0.95  # edges sits 1 % behind them; the rest is on the sphere
    # the step's PLY re-used the old Gaussians' records from the last write (only the new ones converted): the file
    # is the one write_ply makes of the whole world
    from backend.io.ply import write_ply
    from backend.world import pipeline

    assert len(pipeline._records_of(pipeline._read_gaussians(w1.file("gaussians.ply")))) == 2
    write_ply(tmp_path / "whole.ply", g1)
    assert (tmp_path / "whole.ply").read_bytes() == w1.file("gaussians.ply").read_bytes()


def test_robust_scale_shift_fit_ignores_outliers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, 500)
    y = 0.3 * x + 0.05 + rng.normal(0, 1e-3, 500)
    y[:60] += rng.uniform(0.5, 2.0, 60)  # 12% gross outliers
    a, b = fit_scale_shift(x, y)
    assert abs(a - 0.3) < 0.01 and abs(b - 0.05) < 0.005


def test_a_metric_depth_whose_overlap_is_one_flat_backdrop_gets_a_scale_instead_of_an_error():
    """The built-in depth puts far terrain at one capped depth: an overlap made only of it has no spread to fit a
    shift to (this stopped an expansion of a small city photo); a metric prediction is then scaled."""
    from backend.models.depth import DepthPrediction
    from backend.world.depth_align import align_depth

    pred = DepthPrediction(np.full((16, 16), 200.0, np.float32), "metric", np.ones((16, 16), bool))
    ref = np.full((16, 16), 180.0)
    depth, fit = align_depth(pred, ref, np.ones((16, 16), bool), max_depth=1e5)
    assert fit.shift == 0.0 and fit.scale == pytest.approx(200 / 180)
    np.testing.assert_allclose(depth, 180.0, rtol=1e-5)
    relative = DepthPrediction(np.full((16, 16), 0.3, np.float32), "inverse_relative", np.ones((16, 16), bool))
    with pytest.raises(InvalidInput):  # relative depth has nothing to fix its scale on a flat overlap
        align_depth(relative, ref, np.ones((16, 16), bool), max_depth=1e5)


def test_refine_lowers_the_l1_error_of_new_gaussians(tmp_path, make_config):
    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=make_config(48))
    g = read_ply(w0.file("gaussians.ply"))
    cam = w0.current.opencv_camera()
    target = np.full((48, 48, 3), 0.8, np.float32)  # a brighter target: colours must move towards it
    cfg = ExpandConfig(refine_steps=1, refine_size=48, refine_lr=0.05)
    _, first = refine(g.subset(np.arange(0)), g, cam, target, cfg)
    _, later = refine(g.subset(np.arange(0)), g, cam, target, ExpandConfig(refine_steps=4, refine_size=48,
                                                                           refine_lr=0.05))
    assert later < first


def test_new_world_and_expansion_run_through_the_real_model_classes(tmp_path, turn, tiny_depth_anything,
                                                                    tiny_segformer, tiny_sd2_inpainting):
    """Depth Anything V2, SegFormer and SD-2 inpainting (tiny random weights, saved with save_pretrained) drive
    one new world and one expansion exactly as downloaded weights would."""
    from backend.models.config import ModelConfig
    from backend.world.pipeline import WorldConfig

    models = ModelConfig(depth=str(tiny_depth_anything), segmentation=str(tiny_segformer),
                         outpaint=str(tiny_sd2_inpainting), device="cpu", outpaint_steps=2)
    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=WorldConfig(resolution=64, models=models))
    assert w0.current.providers["depth"] == f"transformers:{tiny_depth_anything}"
    assert w0.current.providers["segmentation"] == f"transformers:{tiny_segformer}"
    cam = turn(w0.current.opencv_camera(), 35)
    _, a0, _ = _render(w0.file("gaussians.ply"), cam)
    w1 = expand_world(root, cam)
    assert w1.current.index == 1 and w1.current.providers["outpaint"] == f"diffusers:{tiny_sd2_inpainting}"
    _, a1, _ = _render(w1.file("gaussians.ply"), cam)
    missing = a0 < 0.5
    assert missing.mean() > 0.2 and a1[missing].mean() > 0.9  # the diffusion pipeline's pixels filled the hole
    assert len(read_ply(w1.file("gaussians.ply"))) > len(read_ply(w0.file("gaussians.ply")))


def _project(points, camera):
    cam = points @ np.asarray(camera.world_to_cam)[:3, :3].T + np.asarray(camera.world_to_cam)[:3, 3]
    uv = cam @ np.asarray(camera.K).T
    return uv[:, :2] / uv[:, 2:3], cam[:, 2]


def test_expansion_adds_no_second_layer_where_the_old_world_is_opaque_and_keeps_the_old_view(tmp_path, make_config,
                                                                                              turn):
    """The seam: where the old render from the new camera is opaque, no new surfel lands; under its soft edges
    the new surfels sit behind the old ones; the input view re-renders as well as before the expansion."""
    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=make_config(96))
    cam0 = w0.current.opencv_camera()
    before, _, _ = _render(w0.file("gaussians.ply"), cam0)
    cam = turn(cam0, 30)
    _, a_old, d_old = _render(w0.file("gaussians.ply"), cam)
    w1 = expand_world(root, cam)
    g1 = read_ply(w1.file("gaussians.ply"))
    new = g1.subset(g1.extra["step"] == 1.0)
    uv, z = _project(new.means.astype(np.float64), cam)
    px = np.clip(np.floor(uv).astype(int), 0, [cam.width - 1, cam.height - 1])
    opaque = a_old[px[:, 1], px[:, 0]]
    assert (opaque >= ExpandConfig().covered_alpha).mean() < 0.002  # (the dilated band used to get a second layer)
    soft = (opaque > 0.05) & (new.extra["region"] != 1.0)
    assert soft.any() and np.median(z[soft] / d_old[px[soft, 1], px[soft, 0]]) > 1.0  # behind the old soft edges
    assert w1.current.stats["seam"]["covered_pixels"] > 0
    after, _, _ = _render(w1.file("gaussians.ply"), cam0)
    image = cv2.cvtColor(cv2.imread(str(w0.file("image.png"))), cv2.COLOR_BGR2RGB) / 255.0

    def psnr(a):
        return 10 * np.log10(1 / np.mean((a - image) ** 2))

    assert psnr(after) > psnr(before) - 0.5  # the old view does not degrade


def test_a_dolly_of_metres_shows_no_sky_parallax(tmp_path, make_config):
    """The sky sits at infinity: a camera moved 5 m sideways and forward sees every sky surfel where the first
    camera saw it, to a twentieth of a pixel, and renders the sky the same."""
    w0 = new_world(SAMPLE_PATH, tmp_path / "w", config=make_config(128))
    cam = w0.current.opencv_camera()
    moved = replace(cam, world_to_cam=np.asarray(cam.world_to_cam) @ np.linalg.inv(
        np.block([[np.eye(3), np.array([[3.0], [4.0], [0.5]])], [np.zeros((1, 3)), np.ones((1, 1))]])))
    assert np.linalg.norm(moved.center - cam.center) > 4.9
    g = read_ply(w0.file("gaussians.ply"))
    sky = g.extra["region"] == 1.0
    uv0, _ = _project(g.means[sky].astype(np.float64), cam)
    uv1, _ = _project(g.means[sky].astype(np.float64), moved)
    assert np.abs(uv1 - uv0).max() < 0.05
    c0, _, d0 = _render(w0.file("gaussians.ply"), cam)
    c1, _, d1 = _render(w0.file("gaussians.ply"), moved)
    from scipy.ndimage import binary_erosion

    far = binary_erosion((d0 > 0.5 * LiftConfig().sky_depth) & (d1 > 0.5 * LiftConfig().sky_depth), iterations=2)
    assert far.mean() > 0.2 and np.abs(c1[far] - c0[far]).mean() < 0.01
