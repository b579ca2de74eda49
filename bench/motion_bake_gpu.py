"""Bake time: bidirectional RK2 propagation of M dynamic Gaussians over N frames through a fitted MotionField
(default hash grid + 2x64 MLP; Triton encoding on CUDA), trajectories kept on the device; median of 3 bakes.
Prints a table. ``LW_CODE=DIR`` measures the code tree in DIR (``gpu_common.use_code_tree``: before / after).

    python bench/motion_bake_gpu.py
"""

import statistics
import time

import numpy as np
import torch
from gpu_common import use_code_tree

use_code_tree()

from backend.world.motion.bake import integrate_loop
from backend.world.motion.cues import MATERIAL_CODE
from backend.world.motion.field import MotionFieldConfig, new_motion_field
from backend.world.motion.lift import SceneFlow


def main():
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda"
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-10, 10, (100_000, 2)), np.zeros(100_000)]
    vec = np.array([0.04, 0.02, 0.0]) + np.cross([0, 0, 0.015], pts)
    field = new_motion_field(pts, MotionFieldConfig(steps=100), device=dev)
    field.fit(SceneFlow(pts, vec, np.full(len(pts), MATERIAL_CODE["water"], np.uint8), np.zeros(len(pts), np.int32)))
    field.eval()
    print(f"device {torch.cuda.get_device_name()}, encoding {field.encoding.name}")
    print("\n| dynamic Gaussians | frames | field evaluations | seconds | M evals/s |")
    print("|---|---|---|---|---|")
    for m, n in ((100_000, 120), (1_000_000, 120)):
        x0 = torch.as_tensor(np.c_[rng.uniform(-10, 10, (m, 2)), np.zeros(m)], dtype=torch.float32, device=dev)
        integrate_loop(field, x0[:1000], 4)  # warm-up (kernel compilation)
        runs = []
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            traj = integrate_loop(field, x0, n, chunk=1 << 21)
            torch.cuda.synchronize()
            runs.append(time.perf_counter() - t)
            del traj
        s = statistics.median(runs)
        evals = 2 * 2 * m * n  # two directions, two evaluations per RK2 step
        print(f"| {m} | {n} | {evals / 1e6:.0f}M | {s:.3f} | {evals / s / 1e6:.0f} |")


if __name__ == "__main__":
    main()
