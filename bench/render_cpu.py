"""Cost of the pure-torch reference rasterizer on this CPU (what tests and CPU-only users pay).

Scenes of bench/render_gpu.py ("ball": random Gaussians in a ball, "world": ground + backdrop discs), float32,
``--threads`` torch threads (default 1: on a loaded 2-core machine 2 OpenMP threads were 10-20x slower than 1); forward under no_grad and forward + backward of sum(colour) + sum(alpha); median of 3 runs (after one
warm-up) in seconds. Prints a table and the 1-minute load average (the machine is shared: a loaded CPU inflates
the figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from render_gpu import PARAMS, SCENES

from backend.gaussians import Gaussians
from backend.render.rasterize import rasterize


def median_s(fn, runs: int = 3) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    torch.set_num_threads(ap.parse_args().threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print("scene | n | size | forward_s | forward_backward_s")
    for scene, n, size in [("ball", 1_000, 128), ("ball", 10_000, 128), ("ball", 100_000, 128),
                           ("ball", 10_000, 256), ("ball", 200_000, 256), ("world", 200_000, 256)]:
        build, make_cam = SCENES[scene]
        g = build(n, 0, "cpu")
        cam = make_cam(size, size)

        def forward(g=g, cam=cam):
            with torch.no_grad():
                rasterize(g, cam)

        def forward_backward(g=g, cam=cam):
            leaves = {p: getattr(g, p).clone().requires_grad_() for p in PARAMS}
            out = rasterize(Gaussians(**leaves), cam)
            (out.color.sum() + out.alpha.sum()).backward()

        print(f"{scene} | {n} | {size}x{size} | {median_s(forward):.3f} | {median_s(forward_backward):.3f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
