"""Tiny real data for the mixture tests.

``half_run``: a run folder (as ``moe_train`` writes it) over an N3V-layout dataset of a static coloured plane
seen by 4 cameras (cam00 held out), with two hand-made "experts": ``deformation`` has the right colours on the
left half of the plane (x < 0) and wrong ones on the right, ``keyframe`` the opposite. A router must learn to
pick the deformation expert on the left and the keyframe expert on the right.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.gaussians import Gaussians, rgb_to_sh_dc
from backend.moe.experts import expert_options, make_expert
from backend.moe.train import TrainConfig
from backend.render.cameras import Camera, camera_from_fov
from backend.render.rasterize import rasterize

torch.set_num_threads(1)

W, H = 48, 32
EYES_X = (0.0, -0.6, 0.6, 0.3)  # cam00 is the held-out centre camera


def random_gaussians(n: int, seed: int, shift=(0.0, 0.0, 0.0)) -> Gaussians:
    """n random opaque-ish coloured Gaussians (SH degree 1) around the origin."""
    g = torch.Generator().manual_seed(seed)
    sh = torch.zeros(n, 4, 3)
    sh[:, 0] = rgb_to_sh_dc(torch.rand(n, 3, generator=g))
    sh[:, 1:] = 0.1 * torch.randn(n, 3, 3, generator=g)
    return Gaussians(means=torch.randn(n, 3, generator=g) * 0.5 + torch.tensor(shift),
                     quats=torch.randn(n, 4, generator=g),
                     log_scales=torch.full((n, 3), -2.3) + 0.3 * torch.randn(n, 3, generator=g),
                     opacity_logits=torch.randn(n, generator=g) + 1.0, sh=sh)


def camera(eye_x: float = 0.0, w: int = W, h: int = H) -> Camera:
    return camera_from_fov((eye_x, -3.0, 0.0), (0.0, 0.0, 0.0), w, h, 45.0)


def plane_points() -> tuple[np.ndarray, np.ndarray]:
    """A 20 x 14 grid on the plane y = 0 and its true colours (P, 3)."""
    x, z = np.meshgrid(np.linspace(-1, 1, 20), np.linspace(-0.7, 0.7, 14))
    pts = np.stack([x.ravel(), np.zeros(x.size), z.ravel()], 1).astype(np.float32)
    col = np.stack([0.5 + 0.4 * np.sin(3 * pts[:, 0]), 0.5 + 0.4 * np.cos(4 * pts[:, 2]),
                    0.5 + 0.3 * np.sin(2 * (pts[:, 0] + pts[:, 2]))], 1).astype(np.float32)
    return pts, col


def plane_expert(name: str, colors: np.ndarray, extent: float):
    pts, _ = plane_points()
    e = make_expert(name, 2, extent)
    e.init_from_points(pts, colors)
    with torch.no_grad():
        e.log_scales.fill_(float(np.log(0.07)))
        e.opacity_logits.fill_(4.0)
    return e


def write_n3v(folder: Path, cameras: list[Camera], frames: np.ndarray) -> None:
    """N3V layout: poses_bounds.npy (LLFF [down, right, back | centre | h, w, f], near, far) + camNN.mp4.
    frames: (C, T, H, W, 3) uint8."""
    import imageio.v2 as iio

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, cam in enumerate(cameras):
        c2w = np.linalg.inv(cam.world_to_cam)
        r = np.stack([c2w[:3, 1], c2w[:3, 0], -c2w[:3, 2]], 1)
        pose = np.concatenate([r, c2w[:3, 3:4], np.array([[cam.height], [cam.width], [cam.K[0, 0]]])], 1)
        rows.append(np.concatenate([pose.reshape(-1), [1.0, 6.0]]))
        iio.mimwrite(folder / f"cam{c:02d}.mp4", list(frames[c]), fps=30, codec="libx264", macro_block_size=16,
                     output_params=["-crf", "0"])
    np.save(folder / "poses_bounds.npy", np.stack(rows))


@pytest.fixture
def make_gaussians():
    return random_gaussians


@pytest.fixture
def make_camera():
    return camera


@pytest.fixture(scope="session")
def half_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("half")
    cams = [camera(x) for x in EYES_X]
    pts, col = plane_points()
    extent = float(1.1 * np.abs(np.array(EYES_X) - np.mean(EYES_X)).max())
    truth = plane_expert("deformation", col, extent)
    with torch.no_grad():
        gt = np.stack([[(rasterize(truth.gaussians_at(t), cam).color.clamp(0, 1).numpy() * 255).round()
                        for t in (0.0, 1.0)] for cam in cams]).astype(np.uint8)
    write_n3v(root / "data", cams, gt)
    wrong = np.clip(1.0 - col[:, ::-1] * 0.8, 0, 1)
    left = pts[:, :1] < 0
    experts = {"deformation": plane_expert("deformation", np.where(left, col, wrong), extent),
               "keyframe": plane_expert("keyframe", np.where(left, wrong, col), extent)}
    run = root / "run"
    cfg = TrainConfig(iterations=1, densify_from=10_000, torch_threads=1)
    for name, e in experts.items():
        (run / name).mkdir(parents=True)
        torch.save({"expert": name, "options": expert_options(e), "num_frames": 2, "extent": extent,
                    "model": e.state_dict(), "optimizer": e.make_optimizer().state_dict(), "step": 1,
                    "elapsed_s": 0.0, "grad_accum": torch.zeros(e.num_gaussians),
                    "count": torch.zeros(e.num_gaussians), "log": {"loss": [], "events": []}},
                   run / name / "checkpoint.pt")
    np.savez(run / "points.npz", points=pts, colors=col, method="grid")
    (run / "run.json").write_text(json.dumps({
        "dataset": str(root / "data"), "experts": list(experts), "options": {}, "train_config": asdict(cfg),
        "points_method": "grid", "cameras": [f"cam{c:02d}" for c in range(len(cams))], "train": [1, 2, 3],
        "test": [0], "frames": 2, "size": [W, H], "fps": 30.0}))
    return run


@pytest.fixture(scope="session")
def trained_half(half_run):
    """(mixture checkpoint, video): MoE-GS's volume-aware pixel router trained 80 steps over the half scene's two
    experts (the default router, slower to move, has its own test: test_router_learns.py)."""
    from backend.moe.router import RouterConfig
    from backend.moe.train import load_run_video
    from backend.moe.train_router import RouterTrainConfig, train_router

    video = load_run_video(half_run)
    cfg = RouterTrainConfig(iterations=80, router=RouterConfig(kind="volume_pixel"), device="cpu")
    return train_router(half_run, video, cfg), video
