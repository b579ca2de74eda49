"""Motion alignment + field update per expansion, and the field's fit error on synthetic ground truth.

Synthetic world: water on the ground plane z = 0 moving with v(x) = v0 + omega x (x - c) (metres per frame).
Previous views: 200k aligned samples; the new view: 50k samples overlapping half of them, its raw vectors
flipped, rotated 35 degrees, tilted 10 degrees, scaled 2.5x, with 20% outliers. One expansion = align (numpy /
scipy on the CPU) + warm-started field update (150 Adam steps, batch 65536) on the device. Prints a table.

    python bench/motion_update_gpu.py
"""

import time

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from backend.world.motion.align import align_flow
from backend.world.motion.cues import MATERIAL_CODE
from backend.world.motion.field import MotionFieldConfig, field_fit_error, new_motion_field
from backend.world.motion.lift import SceneFlow


def vel(x):
    return np.array([0.04, 0.02, 0.0]) + np.cross([0, 0, 0.015], x)


def flow(points, view):
    n = len(points)
    return SceneFlow(points, vel(points), np.full(n, MATERIAL_CODE["water"], np.uint8), np.full(n, view, np.int32))


def main():
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    prev_pts = np.c_[rng.uniform(-10, 10, (200_000, 2)), np.zeros(200_000)]
    new_pts = np.c_[rng.uniform(0, 20, (50_000, 1)), rng.uniform(-10, 10, (50_000, 1)), np.zeros(50_000)]
    prev = flow(prev_pts, 0)
    new = flow(new_pts, 1)
    bad = Rotation.from_euler("zx", [215, 10], degrees=True).as_matrix()
    v = 2.5 * new.vectors @ bad.T
    out = rng.random(len(v)) < 0.2
    v[out] = rng.normal(size=(out.sum(), 3)) * 0.1
    new = new.with_vectors(v)
    new.view = np.arange(len(v), dtype=np.int32)  # sample ids, to score the true samples after alignment
    field = new_motion_field(np.r_[prev_pts, new_pts], MotionFieldConfig(), device=dev)
    t = time.perf_counter()
    first = field.fit(prev)
    if dev == "cuda":
        torch.cuda.synchronize()
    t_first = time.perf_counter() - t
    print(f"device {torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}, encoding {field.encoding.name}")
    print("\n| stage | seconds | notes |")
    print("|---|---|---|")
    print(f"| first fit (400 steps, 200k samples) | {t_first:.3f} | rel. error {first.relative_error:.3f} |")
    for rep in range(3):
        t = time.perf_counter()
        res = align_flow(new, prev, np.array([0.0, -10.0, 5.0]))
        t_align = time.perf_counter() - t
        samples = SceneFlow.concatenate([prev, res.flow])
        t = time.perf_counter()
        upd = field.fit(samples)
        if dev == "cuda":
            torch.cuda.synchronize()
        t_fit = time.perf_counter() - t
        good = res.flow.subset(~out[res.flow.view])
        truth = vel(good.points)
        ang = np.degrees(np.arccos(np.clip(np.sum(good.vectors * truth, 1) / (
            np.linalg.norm(good.vectors, axis=1) * np.linalg.norm(truth, axis=1)), -1, 1))).mean()
        print(f"| expansion {rep}: align | {t_align:.3f} | {res.matches} matches, scale {res.scale:.3f} "
              f"(true {1 / 2.5:.3f}), mean angle err {ang:.2f} deg, {res.dropped} outliers dropped "
              f"of {int(out.sum())} |")
        print(f"| expansion {rep}: field update (150 steps) | {t_fit:.3f} | fit rel. error {upd.relative_error:.4f} |")
        print(f"| expansion {rep}: total | {t_align + t_fit:.3f} | |")
    held = np.c_[rng.uniform(-9, 19, (100_000, 1)), rng.uniform(-9, 9, (100_000, 1)), np.zeros(100_000)]
    ang, rel = field_fit_error(field, held, vel(held))
    print(f"\nfield vs ground truth on 100k held-out points: mean angular error {ang:.2f} deg, relative RMS {rel:.4f}")


if __name__ == "__main__":
    main()
