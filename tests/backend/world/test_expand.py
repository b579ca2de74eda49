"""Expansion from a turned camera: the hole is filled, the overlap is unchanged, the seam has no depth step."""

from __future__ import annotations

import numpy as np
import torch

from backend.io.ply import read_ply
from backend.render.rasterize import rasterize
from backend.world.depth_align import fit_scale_shift
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
    np.testing.assert_allclose(np.linalg.norm(g1.means[sky] - cam.center, axis=1), 1000.0, rtol=1e-4)


def test_robust_scale_shift_fit_ignores_outliers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, 500)
    y = 0.3 * x + 0.05 + rng.normal(0, 1e-3, 500)
    y[:60] += rng.uniform(0.5, 2.0, 60)  # 12% gross outliers
    a, b = fit_scale_shift(x, y)
    assert abs(a - 0.3) < 0.01 and abs(b - 0.05) < 0.005


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
