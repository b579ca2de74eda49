"""Figure: reading and writing a 1M-Gaussian SH-degree-3 PLY (248 MB), and the decoded folder.

    .venv/bin/python bench/io_ply.py [--n 1000000] [--repeat 5] [--dir DIR]

Prints one table row per operation: best and median wall time of ``--repeat`` runs in one process (the file
stays in the page cache: these are warm-cache figures).
Baselines for the read: plyfile's own ``PlyData.read`` (memory-mapped) with one property at a time, and our
reader on a ``np.memmap`` instead of ``np.fromfile`` (why ``read_ply`` uses ``np.fromfile``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from plyfile import PlyData

from backend.gaussians import Gaussians
from backend.io.decoded import read_decoded, write_decoded
from backend.io.ply import read_ply, sh_property_index, sh_rest_names, write_ply


def random_gaussians(n: int, degree: int = 3, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    return Gaussians(rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 4)).astype(np.float32),
                     rng.uniform(-5, 0, (n, 3)).astype(np.float32), rng.uniform(-4, 4, n).astype(np.float32),
                     rng.normal(scale=0.5, size=(n, k, 3)).astype(np.float32))


def plyfile_per_property(path: Path) -> np.ndarray:
    """Baseline: plyfile's memory-mapped read, then one property at a time (what most tools do)."""
    v = PlyData.read(str(path), mmap="r")["vertex"]
    names = ["f_dc_0", "f_dc_1", "f_dc_2", *sh_rest_names(16)]
    sh = np.stack([v[names[i]] for i in sh_property_index(16).ravel()], axis=1).astype(np.float32)
    rest = [np.stack([v[p] for p in group], axis=1).astype(np.float32) for group in
            (("x", "y", "z"), ("scale_0", "scale_1", "scale_2"), ("rot_0", "rot_1", "rot_2", "rot_3"), ("opacity",))]
    return sh, rest


def memmap_take(path: Path) -> list[np.ndarray]:
    """Variant: the same column gathers as read_ply, on an np.memmap of the body instead of np.fromfile."""
    with open(path, "rb") as f:
        header = PlyData._parse_header(f)
        offset = f.tell()
    v = header["vertex"]
    names = [p.name for p in v.properties]
    mm = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(v.count, len(names)))
    col = {n: i for i, n in enumerate(names)}
    sh_names = ["f_dc_0", "f_dc_1", "f_dc_2", *sh_rest_names(16)]
    groups = [("x", "y", "z"), ("scale_0", "scale_1", "scale_2"), ("rot_0", "rot_1", "rot_2", "rot_3"), ("opacity",),
              [sh_names[i] for i in sh_property_index(16).ravel()]]
    return [np.take(mm, [col[n] for n in g], axis=1) for g in groups]


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp dir, removed after)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        g = random_gaussians(args.n)
        ply = tmp / "scene.ply"
        rows = [("write_ply (atomic)", timed(lambda: write_ply(ply, g), args.repeat))]
        size = os.path.getsize(ply)
        rows.append(("read_ply (np.fromfile + np.take)", timed(lambda: read_ply(ply), args.repeat)))
        rows.append(("  variant: np.memmap + np.take", timed(lambda: memmap_take(ply), args.repeat)))
        rows.append(("  baseline: plyfile mmap, per property", timed(lambda: plyfile_per_property(ply), args.repeat)))
        rows.append(("write_decoded (6 .npy, atomic folder)",
                     timed(lambda: write_decoded(tmp / "decoded", g, source=ply, replace=True), args.repeat)))
        rows.append(("read_decoded (-> raw Gaussians)", timed(lambda: read_decoded(tmp / "decoded"), args.repeat)))
        rows.append(("PLY -> decoded (import job body)",
                     timed(lambda: write_decoded(tmp / "decoded", read_ply(ply), source=ply, replace=True),
                           args.repeat)))
    print(f"N = {args.n:,} Gaussians, SH degree 3, PLY {size / 1e6:.0f} MB, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}")
    print(f"| operation | best (s) | median of {args.repeat} (s) |")
    print("| --- | ---: | ---: |")
    for name, (best, med) in rows:
        print(f"| {name} | {best:.3f} | {med:.3f} |")


if __name__ == "__main__":
    main()
