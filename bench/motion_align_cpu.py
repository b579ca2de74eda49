"""Host alignment speed on the case of ``bench/motion_update_gpu.py`` (``synthetic_case``: 200k previous samples,
50k new ones overlapping half of them, vectors rotated 215 / 10 degrees and scaled 2.5x, 20 % outliers): median of
seven ``align_flow`` calls, with the solved scale and the outliers dropped; then the same with the previous
samples' ``match_index`` built ahead (its build timed apart); then the k-d tree query alone by worker count. LW_CODE picks the code tree measured
(``bench/gpu_common.py``), e.g. a git worktree of an older commit:

    .venv/bin/python bench/motion_align_cpu.py
    git worktree add /tmp/old COMMIT && LW_CODE=/tmp/old .venv/bin/python bench/motion_align_cpu.py
"""

import statistics
import time

import numpy as np
from motion_update_gpu import synthetic_case  # puts the LW_CODE tree on the path first

from backend.world.motion.align import align_flow


def main():
    prev, new, out, _ = synthetic_case(200_000, 50_000)
    times = []
    for _ in range(7):
        t = time.perf_counter()
        res = align_flow(new, prev, np.array([0.0, -10.0, 5.0]))
        times.append(time.perf_counter() - t)
    print(f"align median {statistics.median(times):.3f} s (min {min(times):.3f}); scale {res.scale:.4f} (true 0.4); "
          f"matches {res.matches}; {res.dropped} of {int(out.sum())} outliers dropped; inliers {res.inlier_fraction:.3f}")
    try:
        from backend.world.motion.align import match_index
    except ImportError:  # a tree before the index could be built ahead
        return
    builds, aligns = [], []
    for _ in range(7):
        t = time.perf_counter()
        index = match_index(prev)
        builds.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = align_flow(new, prev, np.array([0.0, -10.0, 5.0]), index=index)
        aligns.append(time.perf_counter() - t)
    print(f"with the previous samples' index built ahead (as an expansion does while it outpaints): build median "
          f"{statistics.median(builds):.3f} s, align median {statistics.median(aligns):.3f} s; scale {res.scale:.4f}, "
          f"{res.dropped} outliers dropped")
    # the alignment's k-d tree query (``align._query``, workers=-1: scipy starts one thread per core each call) with
    # other worker counts, on the same queries: on a many-core host the thread starts may cost more than they save
    (_, tree, radius), = index.materials.values()
    q = new.points[np.all((new.points >= tree.mins - radius) & (new.points <= tree.maxes + radius), axis=1)]
    cells = []
    for workers in (1, 2, 4, 8, -1):
        times = []
        for _ in range(15):
            t = time.perf_counter()
            tree.query(q, k=1, distance_upper_bound=radius, workers=workers)
            times.append(time.perf_counter() - t)
        cells.append(f"{workers}: {1e3 * statistics.median(times):.1f} ms")
    print(f"k-d tree query of the {len(q)} new samples near the previous ones, median of 15, by workers: "
          + ", ".join(cells))


if __name__ == "__main__":
    main()
