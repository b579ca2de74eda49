"""MoE-GS III on the half scene: the volume-aware pixel router trains only itself, the paper's pruning score and
distillation loss, the scored baked cloud, the distilled student's export and the true mixture rendered from
Blender cameras."""

from __future__ import annotations

import json
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from backend.errors import InvalidInput
from backend.io.checkpoint import load_checkpoint_file
from backend.io.lw4d import read_sequence
from backend.jobs import run_inline
from backend.moe.distill import DistillConfig, distill, gated_loss
from backend.moe.export import export_expert
from backend.moe.losses import photometric_loss
from backend.moe.mixture import render_mixture
from backend.moe.prune import PruneConfig, gate_gradient_scores
from backend.moe.router import Router, RouterConfig
from backend.moe.train import load_run_video
from backend.moe.train_router import RouterTrainConfig, load_mixture, train_router
from backend.render.cameras import opencv_to_blender


def _copy(half_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))
    return run


def test_stage_two_moves_every_router_parameter_and_no_expert_parameter(half_run, tmp_path):
    run = _copy(half_run, tmp_path)
    video = load_run_video(run)
    config = RouterTrainConfig(iterations=8, router=RouterConfig(kind="volume_pixel"), device="cpu", seed=2)
    path = train_router(run, video, config)
    mixture, ckpt = load_mixture(path)
    fresh = Router.for_experts(mixture.experts, config.router, seed=2)  # the same init: seed, feature value
    for (name, before), after in zip(fresh.named_parameters(), mixture.router.parameters()):
        assert bool((after != before).any()), f"router parameter {name} did not train"
    for name in mixture.names:  # the experts in the mixture are the stage-1 experts, bit for bit
        stage1 = load_checkpoint_file(run / name / "checkpoint.pt")["model"]
        for key, value in ckpt["models"][name]["model"].items():
            torch.testing.assert_close(value, stage1[key], atol=0, rtol=0)
    assert isinstance(mixture.router.make_optimizer(), torch.optim.RAdam)
    assert len(ckpt["optimizer"]) == 1 and len(ckpt["optimizer"][0]["param_groups"]) == 2  # gates, decoder


def test_gated_loss_is_the_truth_where_the_student_wins_and_the_mixture_elsewhere():
    g = torch.Generator().manual_seed(0)
    student, truth, teacher = (torch.rand(12, 16, 3, generator=g) for _ in range(3))
    images = (teacher.numpy() * 255).round().astype(np.uint8)[None, None]  # (C=1, T=1, H, W, 3)
    m = torch.from_numpy(images[0, 0]).float() / 255
    ones, zeros = np.full((1, 1, 12, 16), 255, np.uint8), np.zeros((1, 1, 12, 16), np.uint8)
    mine = gated_loss(images, ones, 0.3)(student, truth, 0, 0)
    theirs = gated_loss(images, zeros, 0.3)(student, truth, 0, 0)
    torch.testing.assert_close(mine, 0.3 * photometric_loss(student, truth))  # (1 - w) = 0: SSIM(0, 0) = 1
    torch.testing.assert_close(theirs, 0.7 * photometric_loss(student, m))
    with pytest.raises(InvalidInput, match="lambda in"):
        DistillConfig(method="gated", gated_lambda=1.5)


def test_gated_distillation_trains_the_student_from_its_own_gate(trained_half, tmp_path):
    path, video = trained_half
    mixture, _ = load_mixture(path)
    ckpt = distill(path.parent.parent, mixture, video, DistillConfig("deformation", 3, method="gated"),
                   out=tmp_path / "student")
    state = load_checkpoint_file(ckpt)
    assert state["step"] == 1 + 3 and len(state["log"]["loss"]) == 3
    with pytest.raises(InvalidInput, match="not one of the mixture's experts"):
        distill(path.parent.parent, mixture, video, DistillConfig("trajectory", 3, method="gated"),
                out=tmp_path / "other")


def test_gate_gradient_scores_follow_the_expert_the_router_picks(trained_half):
    path, video = trained_half
    mixture, _ = load_mixture(path)
    q = gate_gradient_scores(mixture, video, max_views=4)
    k_def, k_key = mixture.names.index("deformation"), mixture.names.index("keyframe")
    x_def = mixture.experts[k_def].means[:, 0].detach()
    x_key = mixture.experts[k_key].means[:, 0].detach()
    # deformation is right (and chosen) on the left half, keyframe on the right: there their Gaussians matter
    assert q[k_def][x_def < -0.1].mean() > 3 * q[k_def][x_def > 0.1].mean()
    assert q[k_key][x_key > 0.1].mean() > 3 * q[k_key][x_key < -0.1].mean()
    with pytest.raises(InvalidInput, match="pruning method"):
        PruneConfig(method="magnitude")


def test_router_job_scores_the_baked_cloud_and_prunes_with_the_papers_score(half_run, tmp_path):
    run = _copy(half_run, tmp_path)
    run_inline("moe_router", {"run": str(run), "iterations": 3, "prune": True, "prune_method": "gate_gradient",
                              "prune_threshold": 0.5, "prune_finetune": 2, "distill": "keyframe",
                              "distill_iterations": 2, "distill_method": "gated"}, tmp_path)
    report = json.loads((run / "mixture" / "report.json").read_text())
    seq = read_sequence(run / "mixture" / "mixture.lw4d")
    assert report["baked"]["num_gaussians"] == seq.count == report["pruned"]["after"]
    assert 5.0 < report["baked"]["psnr"] < 60.0 and report["baked"]["psnr"] != report["pruned"]["psnr"]
    assert report["pruned"]["method"] == "gate_gradient" and report["pruned"]["finetune"] == 2
    assert report["distilled"]["method"] == "gated"
    out = export_expert(run, tmp_path / "student.lw4d", "distilled")  # the student is importable
    assert read_sequence(out).count == report["distilled"]["num_gaussians"]
    with pytest.raises(InvalidInput, match="distilled students"):
        export_expert(half_run, tmp_path / "none.lw4d", "distilled")


def test_moe_render_job_draws_the_true_mixture_from_blender_cameras(trained_half, tmp_path):
    path, video = trained_half
    run = path.parent.parent
    mixture, _ = load_mixture(path)
    cams = [video.cameras[0], video.cameras[2]]
    specs = [opencv_to_blender(c).to_dict() for c in cams]
    arts = run_inline("moe_render", {"run": str(run), "cameras": specs, "times": [0.0, 1.0], "frames": [7, 8]},
                      tmp_path)
    assert [a.split("/")[-1] for a in arts] == ["frame_0007.png", "frame_0008.png"]
    folder = next(tmp_path.rglob("frame_0007.png")).parent
    for name, cam, t in (("frame_0007.png", cams[0], 0.0), ("frame_0008.png", cams[1], 1.0)):
        with torch.no_grad():
            want = render_mixture(mixture.gaussians_at(t), mixture.router, cam, t).color.clamp(0, 1).numpy()
        got = imageio.imread(folder / name).astype(np.float32) / 255
        assert got.shape == want.shape and np.abs(got - want).max() <= 1 / 255 + 1e-5
    with pytest.raises(Exception, match="one time and one frame number per camera"):
        run_inline("moe_render", {"run": str(run), "cameras": specs, "times": [0.0], "frames": [1, 2]}, tmp_path)
