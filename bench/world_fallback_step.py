"""Figure: one LivingWorld step at 512x512 with the built-in providers on this CPU (new world + expansions).

Prints a table of per-stage seconds for each step, the input-view PSNR of the initial world (the >= 30 dB gate at
full size) and the depth-fit residual of each expansion; writes the previews (256 px) to docs/images/world_step<N>.png.

    .venv/bin/python bench/world_fallback_step.py [--resolution 512] [--turns 30,-30] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import torch

from backend.models.config import ModelConfig
from backend.world.pipeline import WorldConfig, expand_world, new_world, turned_camera
from backend.world.samples.make_landscape import SAMPLE_PATH

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--turns", default="30,-30", help="camera yaw of each expansion relative to the input view")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = WorldConfig(resolution=args.resolution, models=ModelConfig("builtin", "builtin", "builtin", device="cpu"))
    tmp = Path(tempfile.mkdtemp(prefix="lw-bench-world-"))
    rows = []
    try:
        t = time.perf_counter()
        world = new_world(SAMPLE_PATH, tmp / "w", config=cfg)
        rows.append(("new", time.perf_counter() - t, world.current.stats))
        base = world.current.opencv_camera()
        for deg in (float(d) for d in args.turns.split(",")):
            t = time.perf_counter()
            world = expand_world(tmp / "w", turned_camera(base, deg))
            rows.append((f"expand {deg:+.0f} deg", time.perf_counter() - t, world.current.stats))
        IMAGES.mkdir(parents=True, exist_ok=True)
        for s in world.steps:  # 256 px copies keep the repository small
            preview = cv2.imread(str(world.file("preview.png", s)))
            cv2.imwrite(str(IMAGES / f"world_step{s.index}.png"), cv2.resize(preview, (256, 256), interpolation=cv2.INTER_AREA))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"device: CPU {platform.processor() or platform.machine()}, torch threads {args.threads}, "
          f"{args.resolution}x{args.resolution}, built-in providers")
    stages = ["segmentation_s", "depth_s", "render_s", "outpaint_s", "lift_s", "refine_s", "preview_s", "write_s"]
    print("| step | total s | " + " | ".join(s[:-2] for s in stages) + " | Gaussians | notes |")
    print("|---" * (len(stages) + 4) + "|")
    for name, total, st in rows:
        tm = st["timings"]
        cells = [f"{tm[s]:.2f}" if s in tm else "-" for s in stages]
        note = (f"input-view PSNR {st['psnr_input_view']:.2f} dB" if "psnr_input_view" in st else
                f"missing {st['missing_fraction']:.0%}, depth fit median rel. error "
                f"{st['depth_fit']['median_rel_error']:.3f}, filled alpha min {st['filled_alpha_min']:.3f}")
        print(f"| {name} | {total:.1f} | " + " | ".join(cells) + f" | {st['gaussians']} | {note} |")


if __name__ == "__main__":
    main()
