"""Held-out quality of each MoE-GS expert on a Blender-generated scene (CPU, small).

    .venv/bin/python bench/moe_quality.py [--preset small] [--iterations 500] [--experts ...] [--work DIR]

Generates the dataset with scripts/make_synthetic_dataset.py (.venv-blender) unless --work already holds it,
trains every expert with the same initial cloud, evaluates on cam00 and prints a table (PSNR, SSIM, FPS,
Gaussians, size, training time). The picture grid is copied to docs/images/moe_grid_<preset>.png.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.moe.evaluate import evaluate_run
from backend.moe.train import TrainConfig, train_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--experts", nargs="+", default=["deformation", "trajectory", "keyframe"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lw_moe_bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-points", type=int, default=4000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = a.work / f"data_{a.preset}"
    if not (data / "poses_bounds.npy").is_file():
        subprocess.run([str(ROOT / ".venv-blender/bin/python"), str(ROOT / "scripts/make_synthetic_dataset.py"),
                        "--out", str(data), "--preset", a.preset], check=True, capture_output=True)
    run = a.work / f"run_{a.preset}_{a.iterations}"
    cfg = TrainConfig(iterations=a.iterations, densify_from=100, densify_every=100, checkpoint_every=a.iterations,
                      max_points=a.max_points)
    t0 = time.perf_counter()
    train_run(data, run, a.experts, cfg)
    print(f"trained in {time.perf_counter() - t0:.0f} s")
    report = evaluate_run(run, a.experts)
    print(f"scene: {a.preset} {report['size'][0]}x{report['size'][1]}, {report['frames']} frames, held out "
          f"{report['test_cameras']}, {a.iterations} iterations per expert, device {report['device']}")
    print("| expert | PSNR (dB) | SSIM | LPIPS | render FPS | Gaussians | size (MB) | train (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in report["experts"].items():
        lp = f"{r['lpips']:.4f}" if r["lpips"] is not None else "n/a"
        print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {lp} | {r['fps']:.1f} | {r['num_gaussians']} | "
              f"{r['size_bytes'] / 1e6:.2f} | {r['train_time_s']:.0f} |")
    print(f"LPIPS: {report['lpips']}")
    dst = ROOT / "docs" / "images" / f"moe_grid_{a.preset}.png"
    shutil.copy(run / "grid.png", dst)
    print(f"grid: {dst}")


if __name__ == "__main__":
    main()
