"""Experts: each renders differentiably, trains on CPU, densifies, checkpoints, resumes and cancels."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from backend.errors import InvalidInput, JobCancelled
from backend.moe.data import load_n3v
from backend.moe.experts import EXPERTS, make_expert
from backend.moe.points import init_points
from backend.moe.train import TrainConfig, load_checkpoint, train_expert
from backend.render.rasterize import rasterize

NAMES = sorted(EXPERTS)


@pytest.fixture(scope="module")
def video(tiny_dataset):
    return load_n3v(tiny_dataset, downsample=2)  # 48 x 36: fast on 2 cores


@pytest.fixture(scope="module")
def cloud(video):
    pts, cols, _ = init_points(video, min_points=600, max_points=600)
    return pts, cols


def _expert(name, video, cloud, **options):
    e = make_expert(name, video.num_frames, video.scene_extent(), options)
    e.init_from_points(*cloud)
    return e


@pytest.mark.parametrize("name", NAMES)
def test_expert_renders_differentiably_at_any_time(name, video, cloud):
    e = _expert(name, video, cloud)
    assert e.name == name and e.num_gaussians == 600
    for t in (0.0, 0.37, 1.0):
        g = e.gaussians_at(t)
        g.validate()
        assert len(g) == 600
    out = rasterize(e.gaussians_at(0.5), video.cameras[1])
    out.color.mean().backward()
    grads = {n: p.grad for n, p in e.named_parameters() if p.grad is not None}
    assert "means" in grads and "sh_dc" in grads and float(grads["means"].abs().sum()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_expert_loss_decreases_when_training(name, video, cloud, tmp_path):
    cfg = TrainConfig(iterations=30, densify_from=1000, checkpoint_every=1000)
    ckpt = train_expert(video, name, tmp_path / name, *cloud, cfg)
    _, state = load_checkpoint(ckpt)
    loss = np.array(state["log"]["loss"])
    assert state["step"] == 30 and np.isfinite(loss).all()
    assert loss[-5:].mean() < 0.9 * loss[:5].mean()


def test_time_varying_parts_start_at_rest_and_then_move(video, cloud):
    for name in NAMES:
        e = _expert(name, video, cloud)
        a, b = e.gaussians_at(0.0), e.gaussians_at(1.0)
        torch.testing.assert_close(a.means, b.means)  # motion parameters start at zero
    traj = _expert("trajectory", video, cloud)
    with torch.no_grad():
        traj.motion[:, 0] = torch.tensor([1.0, 0.0, 0.0])  # b1: 1 unit per unit time along x
        traj.t_center.fill_(0.25)
    g0, g1 = traj.gaussians_at(0.25), traj.gaussians_at(0.75)
    torch.testing.assert_close(g1.means[:, 0] - g0.means[:, 0], torch.full((600,), 0.5))
    # temporal opacity peaks at the temporal centre: exp(-(0.5 / 0.5)^2) of the peak half a unit later
    torch.testing.assert_close(g1.opacity_logits.sigmoid(), g0.opacity_logits.sigmoid() * np.exp(-1.0))


def test_deformation_coarse_stage_renders_the_canonical_cloud(video, cloud):
    e = _expert("deformation", video, cloud, coarse_fraction=0.25)
    with torch.no_grad():
        e.heads.bias.fill_(0.1)  # a non-zero deformation everywhere
    e.on_step(24, 100)
    torch.testing.assert_close(e.gaussians_at(0.7).means, e.means)
    e.on_step(25, 100)
    torch.testing.assert_close(e.gaussians_at(0.7).means, e.means + 0.1)


def test_keyframe_hermite_passes_through_keyframes_and_static_gaussians_stay(video, cloud):
    e = _expert("keyframe", video, cloud, keyframe_interval=2)  # 6 frames -> keyframes at 0, 0.5, 1
    assert e.num_keyframes == 3
    with torch.no_grad():
        e.key_offsets.copy_(torch.randn(600, 3, 3))
        e.dynamic[:300] = True
    for k, t in enumerate((0.0, 0.5, 1.0)):
        g = e.gaussians_at(t)
        torch.testing.assert_close(g.means[:300], e.means[:300] + e.key_offsets[:300, k])
        torch.testing.assert_close(g.means[300:], e.means[300:])
    # between keyframes the path is smooth: the midpoint differs from linear interpolation (cubic tangents)
    mid = e.gaussians_at(0.25).means[:300]
    linear = e.means[:300] + 0.5 * (e.key_offsets[:300, 0] + e.key_offsets[:300, 1])
    assert float((mid - linear).detach().abs().max()) > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_densify_and_prune_keeps_parameters_and_adam_state_consistent(name, video, cloud):
    e = _expert(name, video, cloud)
    opt = e.make_optimizer()
    out = rasterize(e.gaussians_at(0.5), video.cameras[1])
    out.color.mean().backward()
    opt.step()
    n = e.num_gaussians
    grad = torch.zeros(n)
    grad[:100] = 1.0  # 100 Gaussians over the threshold
    count = torch.ones(n)
    with torch.no_grad():
        e.log_scales[:50] = np.log(10 * e.config.percent_dense * e.extent)  # big -> split
        e.log_scales[50:100] = np.log(0.1 * e.config.percent_dense * e.extent)  # small -> clone
        e.opacity_logits[100:110] = -10.0  # transparent -> pruned
    stats = e.densify_and_prune(opt, grad, count, torch.Generator().manual_seed(0))
    assert stats["cloned"] == 50 and stats["split"] == 50
    assert e.num_gaussians == n + 50 + 2 * 50 - 50 - 10
    for group in opt.param_groups:
        for p in group["params"]:
            if group["name"] in e.per_gaussian:
                assert p.shape[0] == e.num_gaussians and p is getattr(e, group["name"])
                state = opt.state.get(p)
                if state:
                    assert state["exp_avg"].shape == p.shape
    out = rasterize(e.gaussians_at(0.5), video.cameras[1])  # still trains after surgery
    opt.zero_grad()
    out.color.mean().backward()
    opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_resume_gives_the_same_model_as_an_uninterrupted_run(name, video, cloud, tmp_path):
    cfg = TrainConfig(iterations=14, densify_from=2, densify_every=4, densify_until=1.0, checkpoint_every=100)
    train_expert(video, name, tmp_path / "straight", *cloud, cfg)
    cancel = threading.Event()
    with pytest.raises(JobCancelled):  # progress comes at step 10: interrupt there
        train_expert(video, name, tmp_path / "resumed", *cloud, cfg, progress=lambda f, m: cancel.set(),
                     cancel=cancel)
    train_expert(video, name, tmp_path / "resumed", *cloud, cfg)
    a, sa = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b, sb = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert sa["step"] == sb["step"] == 14
    assert a.num_gaussians == b.num_gaussians
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], msg=f"{name}.{k} differs after resume")


def test_cancel_writes_a_resumable_checkpoint(video, cloud, tmp_path):
    cancel = threading.Event()
    steps = []

    def progress(f, msg):
        steps.append(msg)
        cancel.set()

    cfg = TrainConfig(iterations=40, checkpoint_every=1000)
    with pytest.raises(JobCancelled, match="cancelled at step 10"):
        train_expert(video, "trajectory", tmp_path / "t", *cloud, cfg, progress=progress, cancel=cancel)
    _, state = load_checkpoint(tmp_path / "t" / "checkpoint.pt")
    assert state["step"] == 10 and len(state["log"]["loss"]) == 10


def test_a_cloud_no_camera_sees_is_refused_before_training(video, cloud, tmp_path):
    """A cloud beyond every training camera's far plane (as a Technicolor scene's cloud was, swept over the
    loader's placeholder bounds) would train a blank expert for hours: it is refused at once, naming the cameras."""
    pts, cols = cloud
    cam = video.cameras[video.train[0]]
    far_away = cam.center + (pts - cam.center) * (2.0 * cam.far / np.linalg.norm(pts - cam.center, axis=1).min())
    with pytest.raises(InvalidInput, match="no training camera sees any of the 600 initial Gaussians"):
        train_expert(video, "trajectory", tmp_path / "far", far_away.astype(np.float32), cols, TrainConfig(iterations=5))
    assert not (tmp_path / "far" / "checkpoint.pt").exists()
    ckpt = train_expert(video, "trajectory", tmp_path / "ok", pts, cols, TrainConfig(iterations=2))
    assert ckpt.is_file()  # the real cloud trains as before


def test_unknown_expert_or_option_is_refused():
    with pytest.raises(InvalidInput, match="unknown expert 'nerf'"):
        make_expert("nerf", 5)
    with pytest.raises(InvalidInput, match="no option"):
        make_expert("keyframe", 5, options={"keyframes": 3})


def test_embedding_expert_moves_each_gaussian_by_its_own_code(video, cloud):
    from backend.moe.experts.embedding import interpolate_rows

    table = torch.arange(12.0).reshape(4, 3)  # rows at t = 0, 1/3, 2/3, 1
    torch.testing.assert_close(interpolate_rows(table, 1 / 3), table[1])
    torch.testing.assert_close(interpolate_rows(table, 0.5), (table[1] + table[2]) / 2)
    torch.testing.assert_close(interpolate_rows(table, 1.0), table[3])

    e = _expert("embedding", video, cloud, static_fraction=0.25)
    with torch.no_grad():
        e.means[1] = e.means[0]  # two Gaussians at one place, with different codes
        for decoder in (e.decoder_coarse, e.decoder_fine):
            decoder[-1].weight.normal_(0.0, 0.1)
    e.on_step(0, 100)  # the static stage: the canonical cloud
    torch.testing.assert_close(e.gaussians_at(0.7).means, e.means)
    e.on_step(25, 100)
    with torch.no_grad():
        a, b = e.gaussians_at(0.0), e.gaussians_at(1.0)
    assert float((a.means - b.means).abs().max()) > 1e-3  # the deformation changes with time
    assert float((a.means[0] - a.means[1]).abs().max()) > 1e-4  # same position, different motion
    a.validate()


def test_deformation_time_planes_follow_the_frame_count():
    """4DGaussians' recipe: about one time cell per two frames (a 300-frame N3V clip gets 150, not a fixed 8)."""
    for frames, cells in ((300, 150), (20, 10), (3, 2)):
        e = make_expert("deformation", frames)
        assert {p.shape[2] for p in e.field.planes[3:6]} == {cells}  # the (x,t) (y,t) (z,t) planes
    assert make_expert("deformation", 300, options={"time_resolution": 8}).field.planes[3].shape[2] == 8
