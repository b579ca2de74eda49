"""Router views: training cameras set aside from the experts for the router (``TrainConfig.router_views``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backend.errors import InvalidInput
from backend.moe import train as train_mod
from backend.moe import train_router as router_mod
from backend.moe.train import TrainConfig, load_run_video, prepare_run, router_views, train_expert
from backend.moe.train_router import RouterTrainConfig, train_router


def _seen_cameras(monkeypatch, module, name, video):
    """Record the index (in ``video.cameras``) of every camera ``module.name`` is called with."""
    seen: list[int] = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        cam = next(a for a in args if any(a is c for c in video.cameras))
        seen.append(next(i for i, c in enumerate(video.cameras) if c is cam))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


def test_router_views_are_the_training_cameras_nearest_the_rig_centre(half_run):
    video = load_run_video(half_run)  # camera x: 0 (held out), -0.6, 0.6, 0.3; rig centre x = 0.075
    assert router_views(video, 0) == ([1, 2, 3], [1, 2, 3])
    assert router_views(video, 1) == ([1, 2], [3])
    assert router_views(video, 2) == ([1], [2, 3])
    with pytest.raises(InvalidInput, match="router_views=3 would leave the experts no camera.*at most 2"):
        router_views(video, 3)


def test_experts_never_train_on_the_router_views_and_the_router_trains_only_on_them(half_run, tmp_path,
                                                                                     monkeypatch):
    video = load_run_video(half_run)
    run = tmp_path / "run"
    (run).mkdir()
    shutil.copyfile(half_run / "points.npz", run / "points.npz")  # prepare_run keeps it
    cfg = TrainConfig(iterations=12, densify_from=10_000, device="cpu", torch_threads=1, router_views=1)
    prepare_run(json.loads((half_run / "run.json").read_text())["dataset"], run, ["deformation", "keyframe"], cfg)
    assert json.loads((run / "run.json").read_text())["router_views"] == ["cam03"]
    z = np.load(run / "points.npz")
    seen = _seen_cameras(monkeypatch, train_mod, "rasterize", video)
    for name in ("deformation", "keyframe"):
        train_expert(video, name, run / name, z["points"], z["colors"], cfg)
    # both expert cameras drawn (12 steps each, and the start's visibility check: one render per expert), the
    # router view never
    assert len(seen) == 2 * (12 + 1) and set(seen) == {1, 2}

    seen = _seen_cameras(monkeypatch, router_mod, "render_mixture", video)
    train_router(run, video, RouterTrainConfig(iterations=6, device="cpu"))
    assert seen == [3] * 6
    seen.clear()
    train_router(run, video, RouterTrainConfig(iterations=12, device="cpu", views="train"),
                 out=run / "train_views" / "mixture.pt")
    assert set(seen) == {1, 2, 3}


def test_a_view_without_a_visible_gaussian_is_a_step_not_a_crash(half_run, tmp_path, monkeypatch):
    video = load_run_video(half_run)
    pts = np.array([[0.0, -10.0, 0.0], [0.1, -10.0, 0.1]], np.float32)  # behind every camera (they sit at y = -3)
    cfg = TrainConfig(iterations=3, densify_from=10_000, device="cpu", torch_threads=1, min_points=1)
    grey = np.full((2, 3), 0.5, np.float32)
    with pytest.raises(InvalidInput, match="no training camera sees any of the 2 initial Gaussians"):
        train_expert(video, "trajectory", tmp_path / "refused", pts, grey, cfg)  # a start nothing sees: refused
    # past the start a view can still see nothing (a Gaussian that moved away): that step must not crash
    monkeypatch.setattr(train_mod, "_check_cloud_is_seen", lambda *args, **kwargs: None)
    ckpt = train_expert(video, "trajectory", tmp_path / "trajectory", pts, grey, cfg)
    expert, raw = train_mod.load_checkpoint(ckpt)
    assert raw["step"] == 3 and len(raw["log"]["loss"]) == 3
    np.testing.assert_array_equal(expert.means.detach().numpy(), pts)  # nothing seen, nothing moved


def _run_with_router_view(half_run, tmp_path):
    """A copy of the half run whose experts kept cam03 back for the router (as ``router_views=1`` trains)."""
    run = tmp_path / "run"
    shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))
    meta = json.loads((run / "run.json").read_text())
    meta["train_config"]["router_views"], meta["router_views"] = 1, ["cam03"]
    (run / "run.json").write_text(json.dumps(meta))
    return run


def test_refit_gives_the_router_views_back_to_the_experts_and_keeps_the_router(half_run, tmp_path, monkeypatch):
    import torch

    from backend.moe.run_mixture import MixtureRunConfig, run_mixture
    from backend.moe.train_router import load_mixture

    run = _run_with_router_view(half_run, tmp_path)
    video = load_run_video(run)
    router_seen = _seen_cameras(monkeypatch, router_mod, "render_mixture", video)
    trained_router = {}
    real_train_router = router_mod.train_router

    def keep_router(*args, **kwargs):  # the router as stage 2 left it, before the refit
        path = real_train_router(*args, **kwargs)
        trained_router.update(torch.load(path, weights_only=True)["router"]["state"])
        return path

    monkeypatch.setattr(router_mod, "train_router", keep_router)
    expert_seen = _seen_cameras(monkeypatch, train_mod, "rasterize", video)
    cfg = MixtureRunConfig(iterations=5, refit_iterations=12, distill="keyframe", distill_iterations=2, bake=False,
                           device="cpu", torch_threads=1)
    report = run_mixture(run, cfg, video)
    assert router_seen[:5] == [3] * 5  # the router trained on the kept-back view only
    assert 3 in expert_seen[:24] and set(expert_seen[:24]) <= {1, 2, 3}  # refit: every training camera
    mixture, ckpt = load_mixture(run / "mixture" / "mixture.pt")
    assert ckpt["refit_iterations"] == 12 and ckpt["step"] == 5 and report["refit_iterations"] == 12
    for name, expert in zip(mixture.names, mixture.experts):
        refit, raw = train_mod.load_checkpoint(run / "mixture" / "refit" / name / "checkpoint.pt")
        stage1, _ = train_mod.load_checkpoint(run / name / "checkpoint.pt")
        assert raw["step"] == 1 + 12 and refit.num_gaussians == stage1.num_gaussians  # no densification
        for k, v in expert.state_dict().items():  # the mixture holds the refit expert
            torch.testing.assert_close(v, refit.state_dict()[k])
        assert not torch.equal(refit.means, stage1.means)
        assert report["experts"][name]["psnr"] != report["experts_before_refit"][name]["psnr"]
    assert trained_router and mixture.router.state_dict().keys() == trained_router.keys()
    for k, v in mixture.router.state_dict().items():  # and the router as it was trained
        torch.testing.assert_close(v, trained_router[k])
    # the distilled student and its baseline start from the refit expert, not from stage 1
    for key in ("distilled", "finetuned"):
        assert train_mod.load_checkpoint(run / "mixture" / key / "keyframe" / "checkpoint.pt")[1]["step"] == 15


def test_refit_needs_router_views_and_excludes_joint(half_run, tmp_path):
    from backend.moe.run_mixture import MixtureRunConfig, run_mixture

    run = tmp_path / "plain"
    shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))
    with pytest.raises(InvalidInput, match="kept none back: train the experts with router_views >= 1"):
        run_mixture(run, MixtureRunConfig(iterations=2, refit_iterations=3, device="cpu"))
    assert not (run / "mixture").exists()  # refused before anything was written
    run = _run_with_router_view(half_run, tmp_path)
    with pytest.raises(InvalidInput, match="refit and joint"):
        run_mixture(run, MixtureRunConfig(iterations=2, refit_iterations=3, joint=True, device="cpu"))
    assert not (run / "mixture").exists()


def test_lw_moe_router_runs_stage_two_and_refuses_a_refit_without_router_views(half_run, tmp_path, capsys):
    from backend.cli import main as lw_main

    run = _run_with_router_view(half_run, tmp_path)
    assert lw_main(["moe", "router", str(run), "--iterations", "3", "--refit-iterations", "2", "--prune",
                    "--no-bake", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run / "mixture" / "report.json").read_text())
    assert report["refit_iterations"] == 2 and "pruned" in report and not (run / "mixture" / "mixture.lw4d").exists()
    assert f"moe          PSNR {report['moe']['psnr']:6.2f} dB" in out and "MoE - best expert" in out
    plain = tmp_path / "plain"
    shutil.copytree(half_run, plain, ignore=shutil.ignore_patterns("mixture"))
    assert lw_main(["moe", "router", str(plain), "--iterations", "2", "--refit-iterations", "2"]) == 2
    assert "kept none back" in capsys.readouterr().err and not (plain / "mixture").exists()


def test_distilling_into_an_untrained_expert_is_refused_before_the_router_trains(half_run, tmp_path):
    from backend.moe.run_mixture import MixtureRunConfig, run_mixture

    run = tmp_path / "plain"
    shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))
    with pytest.raises(InvalidInput, match="cannot distil into 'trajectory'.*deformation, keyframe"):
        run_mixture(run, MixtureRunConfig(iterations=2, distill="trajectory", device="cpu"))
    assert not (run / "mixture").exists()  # nothing trained, nothing written
