"""Figure: streaming a 300-frame x 1M-Gaussian .lw4d to disk with SequenceWriter, and reading frames back.

    .venv/bin/python bench/io_lw4d.py [--n 1000000] [--frames 300] [--dir DIR]

Channels position, opacity, rotation, scale (44 bytes per Gaussian per frame: 13.2 GB for 1M x 300). Frame
data is generated before timing (4 distinct frames, cycled). Memory is sampled after every frame from
/proc/self/status: RssAnon (the process's own memory) and RssFile (pages of the memory-mapped output the
kernel currently keeps mapped; reclaimable). Then: opening the sequence (memory-mapped) and
``frame_gaussians`` at a fractional time (interpolating two frames), the per-frame cost of playback.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from backend.gaussians import Gaussians
from backend.io.lw4d import SequenceWriter, frame_gaussians, read_sequence


def rss_mb() -> tuple[float, float]:
    """(RssAnon, RssFile) of this process in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            key, value, _ = line.split()
            fields[key[:-1]] = int(value) / 1024
    return fields["RssAnon"], fields["RssFile"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp dir, removed after)")
    args = ap.parse_args()
    n, frames = args.n, args.frames
    rng = np.random.default_rng(1)
    q = rng.normal(size=(4, n, 4)).astype(np.float32)
    pool = {"position": rng.normal(size=(4, n, 3)).astype(np.float32),
            "opacity": rng.uniform(0, 1, (4, n)).astype(np.float32),
            "rotation": q / np.linalg.norm(q, axis=-1, keepdims=True),
            "scale": rng.uniform(0.001, 0.1, (4, n, 3)).astype(np.float32)}
    base = Gaussians(means=pool["position"][0], quats=pool["rotation"][0], log_scales=np.log(pool["scale"][0]),
                     opacity_logits=np.zeros(n, np.float32), sh=np.zeros((n, 1, 3), np.float32))
    index = np.arange(n, dtype=np.int64)
    anon0, _ = rss_mb()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.lw4d"
        peak_anon = peak_file = 0.0
        t0 = time.perf_counter()
        with SequenceWriter(path, base, index, frames, channels=tuple(pool), fps=24, loop=True) as w:
            for t in range(frames):
                w.append(**{name: a[t % 4] for name, a in pool.items()})
                anon, file = rss_mb()
                peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file)
        write_s = time.perf_counter() - t0
        total_bytes = sum(os.path.getsize(p) for p in path.iterdir())
        t0 = time.perf_counter()
        seq = read_sequence(path)
        open_s = time.perf_counter() - t0
        cold, warm = [], []
        for i in range(20):  # times spread over the sequence: most frames come from disk
            t0 = time.perf_counter()
            frame_gaussians(seq, (i * 13.37) % frames)
            cold.append(time.perf_counter() - t0)
        for _ in range(10):  # the same time again: frames in the page cache (playback of a cached range)
            t0 = time.perf_counter()
            frame_gaussians(seq, 1.5)
            warm.append(time.perf_counter() - t0)
        _, file_after = rss_mb()
        del seq
    print(f"N = {n:,} dynamic Gaussians x {frames} frames, channels position+opacity+rotation+scale, "
          f"{os.cpu_count()} CPUs")
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| SequenceWriter total ({total_bytes / 1e9:.1f} GB written) | {write_s:.1f} s |")
    print(f"| throughput | {frames / write_s:.1f} frames/s, {total_bytes / 1e6 / write_s:.0f} MB/s |")
    print(f"| RssAnon before / peak while writing | {anon0:.0f} / {peak_anon:.0f} MB "
          f"(incl. the 4-frame input pool, {sum(a.nbytes for a in pool.values()) / 1e6:.0f} MB) |")
    print(f"| RssFile peak while writing (mapped output, reclaimable) | {peak_file:.0f} MB |")
    print(f"| read_sequence (memory-mapped, base.ply read) | {open_s * 1000:.0f} ms |")
    print(f"| frame_gaussians at fractional t, spread over the sequence (median of 20) | "
          f"{statistics.median(cold) * 1000:.0f} ms |")
    print(f"| frame_gaussians at fractional t, frames cached (median of 10) | {statistics.median(warm) * 1000:.0f} ms |")
    print(f"| RssFile after those reads (mapped input pages, reclaimable) | {file_after:.0f} MB |")


if __name__ == "__main__":
    main()
