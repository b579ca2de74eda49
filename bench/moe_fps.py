"""Render speed of a MoE-GS run at N3V's resolution: every expert, the mixture and the pruned mixture.

    python3 bench/moe_fps.py --run RUN --mixture RUN/ablation/volume_s0/mixture.pt [MORE.pt ...] \
        [--pruned RUN/ablation/pruned.pt] [--size 1352x1014] [--reps 3] [--device cuda] [--out FPS.json]

The held-out camera of RUN with its intrinsics scaled to ``--size`` (the aspect ratio must stay: 320x240 and
1352x1014 are both 4:3), every frame of the clip, after a warm-up pass; a model's FPS is frames / seconds of the
median pass over ``--reps`` passes, synchronised on CUDA. A frame is what the viewer pays: ``gaussians_at(t)`` of
every expert, then one rasterization (an expert), or the single-pass render of all experts with the router's
features, the router's per-pixel weights and the blend (a mixture). Prints a table; ``--out`` writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backend.moe.mixture import render_mixture
from backend.moe.train import TrainConfig, load_run_video, read_run, resolve_device
from backend.moe.train_router import load_mixture
from backend.render.rasterize import RasterConfig, rasterize

PAPER_FPS = 68.0  # MoE-GS n=3 with pruning and single-pass rendering (N3V, 1352x1014)


def timed(render, frames: int, reps: int, device) -> float:
    """Frames per second of ``render(frame)`` over every frame: the median of ``reps`` passes after a warm-up."""
    def one_pass():
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for f in range(frames):
            render(f)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    one_pass()
    return frames / statistics.median(one_pass() for _ in range(reps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--mixture", required=True, type=Path, nargs="+", help="one or more mixture checkpoints")
    ap.add_argument("--pruned", type=Path)
    ap.add_argument("--size", default="1352x1014")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    dev = resolve_device(a.device)
    video = load_run_video(a.run)
    raster = RasterConfig(background=TrainConfig.from_dict(read_run(a.run)["train_config"]).background)
    cam = video.cameras[video.test[0]]
    sx, sy = w / cam.width, h / cam.height
    if abs(sx - sy) > 1e-3 * sx:
        raise SystemExit(f"{a.size} changes the aspect ratio of the {cam.width}x{cam.height} camera")
    K = np.asarray(cam.K, np.float64).copy()
    K[0] *= sx
    K[1] *= sy
    big = replace(cam, K=K, width=w, height=h)
    times = [float(t) for t in video.times]
    rows = []
    mixture, _ = load_mixture(a.mixture[0], dev)
    with torch.no_grad():
        for name, expert in zip(mixture.names, mixture.experts):
            fps = timed(lambda f, e=expert: rasterize(e.gaussians_at(times[f]), big, raster).color, len(times),
                        a.reps, dev)
            rows.append({"model": name, "fps": fps, "num_gaussians": expert.num_gaussians})
        for label, path in [("mixture", p) for p in a.mixture] + [("pruned mixture", a.pruned)]:
            if path is None:
                continue
            m, _ = load_mixture(path, dev)
            fps = timed(lambda f, m=m: render_mixture(m.gaussians_at(times[f]), m.router, big, times[f], raster).color,
                        len(times), a.reps, dev)
            rows.append({"model": f"{label} ({m.router.config.kind})", "fps": fps, "num_gaussians": m.num_gaussians()})
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"run {a.run}: {len(times)} frames of {video.names[video.test[0]]} at {w}x{h} on {gpu}, median of {a.reps}")
    print("| model | FPS | Gaussians | vs the paper's 68 FPS |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['fps']:.1f} | {r['num_gaussians']} | {r['fps'] / PAPER_FPS:.2f}x |")
    if a.out:
        a.out.write_text(json.dumps({"run": str(a.run), "size": [w, h], "gpu": gpu, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
