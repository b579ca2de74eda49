"""GPU speed of each MoE-GS expert at N3V resolution (1352x1014): training iterations/s and render FPS.

    python3 bench/moe_gpu_speed.py [--gaussians 200000] [--iterations 500] [--out DIR]   (on the device machine)

A fixed number of Gaussians (random in a 3 m box, densification off, so every expert is timed at the same N),
8 cameras on an arc at 1352x1014, 30 frames of smooth random target images (content does not change the cost
much; the Gaussian count and resolution do). Training speed: ``train_expert`` for ``--warmup`` steps, then
resumed for ``--iterations`` more, timed end to end (the resume's checkpoint load and final save included).
Render FPS: ``gaussians_at(t)`` + ``rasterize`` of the held-out camera over all frames, synchronised, after a
warm-up. Prints a table; ``--out`` also writes it as JSON.

``--frames host`` keeps the frames on the host and copies one per step (what training does when they would take
more than a quarter of the GPU's free memory, ``train.frames_fit_on_device``); ``--frames both`` times each expert
both ways and checks that the two runs' losses agree (the same steps on the same pixels).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backend.moe import train as moe_train
from backend.moe.data import MultiViewVideo
from backend.moe.evaluate import render_expert
from backend.moe.train import TrainConfig, load_checkpoint, train_expert
from backend.render.cameras import Camera
from backend.render.rasterize import RasterConfig

W, H = 1352, 1014


def arc_cameras(k: int) -> list[Camera]:
    cams = []
    for a in np.linspace(-math.radians(30), math.radians(30), k):
        centre = np.array([4.0 * math.sin(a), -4.0 * math.cos(a), 1.0])
        fwd = -centre / np.linalg.norm(centre)
        right = np.cross(fwd, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        r = np.stack([right, down, fwd])  # rows: camera axes in world (OpenCV)
        w2c = np.eye(4)
        w2c[:3, :3] = r
        w2c[:3, 3] = -r @ centre
        K = np.array([[1.1 * W, 0, W / 2], [0, 1.1 * W, H / 2], [0, 0, 1.0]])
        cams.append(Camera(K=K, world_to_cam=w2c, width=W, height=H, near=0.1, far=100.0))
    return cams


def synthetic_video(cams: int, frames: int, seed: int = 0) -> MultiViewVideo:
    rng = np.random.default_rng(seed)
    import torch.nn.functional as F

    low = torch.from_numpy(rng.random((cams * frames, 3, 12, 16), dtype=np.float32))
    imgs = F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)
    imgs = (imgs.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8).reshape(cams, frames, H, W, 3)
    order = [cams // 2] + [i for i in range(cams) if i != cams // 2]  # cam00 in the middle of the arc
    cameras = [arc_cameras(cams)[i] for i in order]
    return MultiViewVideo(cameras=cameras, names=[f"cam{i:02d}" for i in range(cams)], images=imgs,
                          times=np.linspace(0, 1, frames), fps=30.0, train=list(range(1, cams)), test=[0],
                          bounds=np.tile([1.0, 10.0], (cams, 1)), frame_numbers=np.arange(frames))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaussians", type=int, default=200_000)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--experts", nargs="+", default=["deformation", "trajectory", "keyframe"])
    ap.add_argument("--frames", default="device", choices=["device", "host", "both"],
                    help="where the ground-truth frames live during training (host: one copy per step)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs CUDA")
    video = synthetic_video(8, 30)
    rng = np.random.default_rng(1)
    pts = (rng.random((a.gaussians, 3)) * [3.0, 3.0, 1.5] - [1.5, 1.5, 0.0]).astype(np.float32)
    cols = rng.random((a.gaussians, 3)).astype(np.float32)
    raster = RasterConfig()
    rows = []
    placements = ["device", "host"] if a.frames == "both" else [a.frames]
    fits = moe_train.frames_fit_on_device
    print("| expert | frames | Gaussians | train it/s | render FPS | size (MB) |", flush=True)
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for name, where in [(n, w) for n in a.experts for w in placements]:
        moe_train.frames_fit_on_device = fits if where == "device" else (lambda *args, **kw: False)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(iterations=a.warmup, densify_from=10**9, checkpoint_every=10**9, device="cuda")
            train_expert(video, name, Path(tmp), pts, cols, cfg)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            cfg = TrainConfig(iterations=a.warmup + a.iterations, densify_from=10**9, checkpoint_every=10**9,
                              device="cuda")
            train_expert(video, name, Path(tmp), pts, cols, cfg)
            torch.cuda.synchronize()
            its = a.iterations / (time.perf_counter() - t0)
            model, ckpt = load_checkpoint(Path(tmp) / "checkpoint.pt", "cuda")
        for f in range(3):
            render_expert(model, video, 0, f, raster)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            for f in range(video.num_frames):
                render_expert(model, video, 0, f, raster)
        torch.cuda.synchronize()
        fps = reps * video.num_frames / (time.perf_counter() - t0)
        r = {"expert": name, "frames": where, "gaussians": model.num_gaussians, "train_it_per_s": its,
             "render_fps": fps, "size_mb": model.num_bytes() / 1e6, "loss": ckpt["log"]["loss"]}
        rows.append(r)
        print(f"| {name} | {where} | {r['gaussians']} | {its:.1f} | {fps:.1f} | {r['size_mb']:.1f} |", flush=True)
    moe_train.frames_fit_on_device = fits
    print(f"device: {torch.cuda.get_device_name()}, {W}x{H}, {a.gaussians} Gaussians, SH degree 1, "
          f"{a.iterations} timed iterations after {a.warmup} warm-up")
    for name in a.experts if a.frames == "both" else []:
        dev, host = (np.array(r["loss"]) for r in rows if r["expert"] == name)
        print(f"{name}: frames on the host vs on the device, {len(host)} losses, largest difference "
              f"{np.abs(host - dev).max():.2e}")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "moe_gpu_speed.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
