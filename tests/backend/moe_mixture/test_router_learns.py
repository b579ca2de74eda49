"""Stage 2 on the half scene: the learned pixel weights pick the expert that is right in each region."""

from __future__ import annotations

import torch

from backend.moe.mixture import render_mixture
from backend.moe.train_router import evaluate_mixture, load_mixture, score_renders
from backend.render.rasterize import RasterConfig, rasterize


def test_learned_weights_pick_the_better_expert_per_region(trained_half):
    path, video = trained_half
    mixture, ckpt = load_mixture(path)
    assert ckpt["step"] == 80
    cam = video.cameras[video.test[0]]  # a camera the router never saw
    with torch.no_grad():
        out = render_mixture(mixture.gaussians_at(0.0), mixture.router, cam, 0.0)
    covered = out.experts.alphas.min(0).values > 0.9
    w, h = cam.width, cam.height
    # the plane's x < 0 half projects to the left half of the image (the camera looks along +y, x to the right)
    left = torch.zeros(h, w, dtype=torch.bool)
    left[:, : w // 2 - 2] = True
    right = torch.zeros(h, w, dtype=torch.bool)
    right[:, w // 2 + 2:] = True
    k_def, k_key = mixture.names.index("deformation"), mixture.names.index("keyframe")
    assert out.weights[k_def][covered & left].mean() > 0.8
    assert out.weights[k_key][covered & right].mean() > 0.8


def test_mixture_beats_each_expert_on_the_held_out_camera(trained_half):
    path, video = trained_half
    mixture, _ = load_mixture(path)
    moe = evaluate_mixture(mixture, video, RasterConfig())
    for expert in mixture.experts:
        alone = score_renders(lambda c, f, e=expert: rasterize(e.gaussians_at(float(video.times[f])),
                                                               video.cameras[c]).color, video, torch.device("cpu"))
        assert moe["psnr"] > alone["psnr"] + 3.0


def test_the_default_router_learns_to_pick_the_better_expert_per_region(half_run, tmp_path):
    """What ``lw moe router`` runs by default (the volume router, per-Gaussian gates, expert bias): given enough
    steps it picks the right expert on each half of a camera it never saw."""
    from backend.moe.router import RouterConfig
    from backend.moe.train import load_run_video
    from backend.moe.train_router import RouterTrainConfig, train_router

    video = load_run_video(half_run)
    config = RouterConfig()
    assert (config.kind, config.gate, config.expert_bias) == ("volume", "param", True)
    path = train_router(half_run, video, RouterTrainConfig(iterations=300, router=config, device="cpu"),
                        out=tmp_path / "mixture.pt")
    mixture, _ = load_mixture(path)
    cam = video.cameras[video.test[0]]
    with torch.no_grad():
        out = render_mixture(mixture.gaussians_at(0.0), mixture.router, cam, 0.0)
    covered = out.experts.alphas.min(0).values > 0.9
    left, right = torch.zeros_like(covered), torch.zeros_like(covered)
    left[:, : cam.width // 2 - 2], right[:, cam.width // 2 + 2:] = True, True
    k_def, k_key = mixture.names.index("deformation"), mixture.names.index("keyframe")
    assert out.weights[k_def][covered & left].mean() > 0.8
    assert out.weights[k_key][covered & right].mean() > 0.8
