"""Host alignment speed on the case of bench/motion_update_gpu.py (200k previous samples, 50k new ones overlapping
half of them, vectors rotated 215 / 10 degrees and scaled 2.5x, 20 % outliers): median of seven ``align_flow``
calls, with the solved scale and the outliers dropped. Compare two trees with PYTHONPATH:

    PYTHONPATH=. .venv/bin/python bench/motion_align_cpu.py
    git worktree add /tmp/old COMMIT && (cd /tmp/old && PYTHONPATH=. /work/main/.venv/bin/python /work/main/bench/motion_align_cpu.py)
"""

import statistics
import time

import numpy as np
from scipy.spatial.transform import Rotation

from backend.world.motion.align import align_flow
from backend.world.motion.cues import MATERIAL_CODE
from backend.world.motion.lift import SceneFlow


def vel(x):
    return np.array([0.04, 0.02, 0.0]) + np.cross([0, 0, 0.015], x)


def flow(points, view):
    n = len(points)
    return SceneFlow(points, vel(points), np.full(n, MATERIAL_CODE["water"], np.uint8), np.full(n, view, np.int32))


def main():
    rng = np.random.default_rng(0)
    prev = flow(np.c_[rng.uniform(-10, 10, (200_000, 2)), np.zeros(200_000)], 0)
    new = flow(np.c_[rng.uniform(0, 20, (50_000, 1)), rng.uniform(-10, 10, (50_000, 1)), np.zeros(50_000)], 1)
    v = 2.5 * new.vectors @ Rotation.from_euler("zx", [215, 10], degrees=True).as_matrix().T
    out = rng.random(len(v)) < 0.2
    v[out] = rng.normal(size=(out.sum(), 3)) * 0.1
    new = new.with_vectors(v)
    times = []
    for _ in range(7):
        t = time.perf_counter()
        res = align_flow(new, prev, np.array([0.0, -10.0, 5.0]))
        times.append(time.perf_counter() - t)
    print(f"align median {statistics.median(times):.3f} s (min {min(times):.3f}); scale {res.scale:.4f} (true 0.4); "
          f"matches {res.matches}; {res.dropped} of {int(out.sum())} outliers dropped; inliers {res.inlier_fraction:.3f}")


if __name__ == "__main__":
    main()
