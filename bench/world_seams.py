"""Figure: seams of an expansion (issue 23, goal 3): does the old view survive, does the new view match its
outpainted target, is there a doubled layer along the seam?

For each photo (the bundled sample and two painted landscapes of ``backend/world/samples/photos.py`` at the same
size), with the built-in providers: a world is made, then expanded from the camera turned by ``--turn`` degrees.
Measured (PSNR in dB on 8-bit-equivalent images in [0, 1]):
- view 0 before / after: the re-render of the input view against the input image, before and after the
  expansion (the old view must not degrade);
- view 1 vs target: the re-render of the new view against the step's outpainted image (image.png), on the whole
  view and on the seam band (new pixels within 4 px of old ones);
- doubled px: pixels of the new view where the old render was already opaque (alpha >= 0.98) and the expansion
  still added a surfel (a second layer on the old one).
Writes docs/images/world_seams.jpg: per photo, view 1 rendered and its seam band error (x4).

    .venv/bin/python bench/world_seams.py [--resolution 256] [--turn 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from backend.io.ply import read_ply
from backend.models.config import ModelConfig
from backend.render.rasterize import RasterConfig, rasterize
from backend.world.pipeline import WorldConfig, expand_world, new_world, read_image, turned_camera
from backend.world.samples.make_landscape import SAMPLE_PATH
from backend.world.samples.photos import SCENES

REPO = Path(__file__).resolve().parents[1]


def render(ply: Path, camera):
    with torch.no_grad():
        out = rasterize(read_ply(ply).to_torch(), camera, RasterConfig(tile_size=4))
    return out.color.numpy(), out.alpha.numpy()


def psnr(a, b, mask=None):
    d = (np.asarray(a, np.float64) - b) ** 2
    mse = float(d[mask].mean() if mask is not None else d.mean())
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--turn", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; resolution {args.resolution}, "
          f"turn {args.turn:+.0f} deg")
    tmp = Path(tempfile.mkdtemp(prefix="lw-bench-seams-"))
    cfg = WorldConfig(resolution=args.resolution, models=ModelConfig("builtin", "builtin", "builtin", device="cpu"))
    photos = {"bundled sample": SAMPLE_PATH}
    for name in ("mountain_lake", "city_skyline"):
        p = SCENES[name](3, 512)
        photos[f"{name} 3"] = tmp / f"{name}.png"
        cv2.imwrite(str(photos[f"{name} 3"]), cv2.cvtColor((p.image * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
    print("| photo | view 0 before | view 0 after | view 1 vs target | seam band vs target | doubled px | s |")
    print("|---|---|---|---|---|---|---|")
    tiles = []
    try:
        for label, path in photos.items():
            t = time.perf_counter()
            w0 = new_world(path, tmp / label.replace(" ", "_"), config=cfg)
            cam0 = w0.current.opencv_camera()
            image0 = read_image(w0.file("image.png"))
            before, _ = render(w0.file("gaussians.ply"), cam0)
            cam1 = turned_camera(cam0, args.turn)
            _, a_old = render(w0.file("gaussians.ply"), cam1)
            w1 = expand_world(w0.root, cam1)
            after, _ = render(w1.file("gaussians.ply"), cam0)
            view1, _ = render(w1.file("gaussians.ply"), cam1)
            target = read_image(w1.file("image.png"))
            added = cv2.imread(str(w1.file("mask.png")), cv2.IMREAD_GRAYSCALE) > 0
            new = a_old < 0.5
            band = new & (cv2.dilate((~new).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0)
            doubled = int((added & (a_old >= 0.98)).sum())
            print(f"| {label} | {psnr(before, image0):.2f} | {psnr(after, image0):.2f} | {psnr(view1, target):.2f} | "
                  f"{psnr(view1, target, band):.2f} | {doubled} | {time.perf_counter() - t:.1f} |", flush=True)
            err = np.clip(np.abs(view1 - target) * 4, 0, 1) * band[..., None]
            tiles.append(np.concatenate([view1, err], 1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    grid = (np.clip(np.concatenate(tiles, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
    s = 256 / grid.shape[1] * 2
    grid = cv2.resize(grid, (round(grid.shape[1] * s), round(grid.shape[0] * s)), interpolation=cv2.INTER_AREA)
    out = REPO / "docs" / "images" / "world_seams.jpg"
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(out)


if __name__ == "__main__":
    main()
