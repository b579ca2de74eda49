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
    assert len(seen) == 24 and set(seen) == {1, 2}  # both expert cameras drawn, the router view never

    seen = _seen_cameras(monkeypatch, router_mod, "render_mixture", video)
    train_router(run, video, RouterTrainConfig(iterations=6, device="cpu"))
    assert seen == [3] * 6
    seen.clear()
    train_router(run, video, RouterTrainConfig(iterations=12, device="cpu", views="train"),
                 out=run / "train_views" / "mixture.pt")
    assert set(seen) == {1, 2, 3}


def test_a_view_without_a_visible_gaussian_is_a_step_not_a_crash(half_run, tmp_path):
    video = load_run_video(half_run)
    pts = np.array([[0.0, -10.0, 0.0], [0.1, -10.0, 0.1]], np.float32)  # behind every camera (they sit at y = -3)
    cfg = TrainConfig(iterations=3, densify_from=10_000, device="cpu", torch_threads=1, min_points=1)
    ckpt = train_expert(video, "trajectory", tmp_path / "trajectory", pts, np.full((2, 3), 0.5, np.float32), cfg)
    expert, raw = train_mod.load_checkpoint(ckpt)
    assert raw["step"] == 3 and len(raw["log"]["loss"]) == 3
    np.testing.assert_array_equal(expert.means.detach().numpy(), pts)  # nothing seen, nothing moved
