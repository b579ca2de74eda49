"""Picture + table: the whole pipeline, untouched, on landscape photos of the kinds testers bring (lake, snow
mountains, city skyline, forest, sunset coast, waterfall; painted by ``backend/world/samples/photos.py`` and
rendered by ``scripts/render_sky_set.py``) and the bundled sample: `new` -> `motion` (the sky/water fallback, no
artist input) -> `expand` (camera turned 25 degrees, the motion carried to the new view) -> `bake` -> loop
metrics. Built-in providers on the CPU at a small working size.

Prints per photo: the segmentation's sky and water share, the moving Gaussians, and the loop metrics (every
frame rendered); writes docs/images/world_gallery.jpg, one row per photo: the input, the regions (sky blue, water
cyan), the expanded world's preview, loop frame 0, and where the loop moves (|frame T/2 - frame 0| x 4).

    .venv/bin/python bench/world_gallery.py [--resolution 192] [--frames 24] [--size 128] [--device cpu]
    python3 bench/world_gallery.py --resolution 512 --frames 60 --device cuda --image $OUT/gallery.jpg

``--size`` left out renders the metrics as ``lw world metrics`` does by default: 128 px on a CPU, the world's own
resolution on CUDA. A smaller render than the world's aliases its pixel-sized Gaussians, and the steps of a moving
texture then depend on their sub-pixel phase (docs/bench/world.md, eighth session).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from backend.io.lw4d import gaussians_at, read_sequence
from backend.models.config import ModelConfig
from backend.world.motion.bake import BakeConfig
from backend.world.motion.metrics import measure_world, render_frames
from backend.world.motion.pipeline import MotionUpdate, bake_world, update_motion
from backend.world.pipeline import WorldConfig, expand_world, new_world, read_image, scale_camera, turned_camera
from backend.world.samples.make_landscape import SAMPLE_PATH
from backend.world.samples.photos import SCENES

REPO = Path(__file__).resolve().parents[1]
TILE = 160


def tile(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = TILE / max(h, w)
    small = cv2.resize(np.clip(rgb, 0, 1).astype(np.float32), (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    out = np.zeros((TILE, TILE, 3), np.float32)
    out[: small.shape[0], : small.shape[1]] = small
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=192)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=None,
                    help="long side of the metric renders (default: lw world metrics' own, 128 px on a CPU, the "
                         "world's resolution on CUDA)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (motion, bake and metrics)")
    ap.add_argument("--image", type=Path, default=REPO / "docs" / "images" / "world_gallery.jpg")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="lw-gallery-"))
    photos = {"bundled sample": SAMPLE_PATH}
    for name in SCENES:
        p = SCENES[name](4, 384)
        photos[f"{name} (painted)"] = tmp / f"{name}.png"
        cv2.imwrite(str(photos[f"{name} (painted)"]), cv2.cvtColor((p.image * 255 + 0.5).astype(np.uint8),
                                                                   cv2.COLOR_RGB2BGR))
    for name in ("mountain_lake", "city", "sunset_sea"):
        photos[f"{name} (rendered)"] = REPO / "tests" / "data" / "sky" / f"{name}.jpg"
    cfg = WorldConfig(resolution=args.resolution, models=ModelConfig("builtin", "builtin", "builtin", device="cpu"))
    print(f"load average {os.getloadavg()[0]:.1f} at start; resolution {args.resolution}, {args.frames} frames, "
          f"device {args.device}, metric renders {args.size or 'the default'} px, torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("| photo | sky % | water % | moving Gaussians | flicker (VBench) | smoothness | seam (steps; goal) | uncovered max |"
          " s |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    try:
        for label, path in photos.items():
            t = time.perf_counter()
            root = tmp / label.replace(" ", "_").replace("(", "").replace(")", "")
            w0 = new_world(path, root, config=cfg)
            regions = cv2.imread(str(w0.file("regions.png")), cv2.IMREAD_GRAYSCALE)
            update_motion(root, MotionUpdate(device=args.device))
            w = expand_world(root, turned_camera(w0.current.opencv_camera(), 25))
            seq_path = bake_world(root, tmp / f"{root.name}.lw4d", BakeConfig(frames=args.frames), device=args.device)
            q = measure_world(root, seq_path, size=args.size, pairs=None, device=args.device)
            seq = read_sequence(seq_path)
            moving = seq.dynamic_count // 2
            print(f"| {label} | {100 * (regions == 1).mean():.0f} | {100 * (regions == 2).mean():.0f} | {moving} | "
                  f"{q.temporal_flicker:.4f} | {q.motion_smoothness:.4f} | {q.seam_ratio:.3f} (<= {q.seam_limit:.3f}"
                  f"{'' if q.goals['seam_ratio']['met'] else ' NOT met'}) | "
                  f"{100 * q.uncovered_max:.2f} % | {time.perf_counter() - t:.0f} |", flush=True)
            image = read_image(w0.file("image.png"))
            overlay = image.copy()
            overlay[regions == 1] = 0.5 * overlay[regions == 1] + 0.5 * np.array([0.2, 0.4, 1.0])
            overlay[regions == 2] = 0.5 * overlay[regions == 2] + 0.5 * np.array([0.0, 1.0, 1.0])
            cam = w0.current.opencv_camera()
            s = 128 / max(cam.width, cam.height)
            cam = scale_camera(cam, round(cam.width * s), round(cam.height * s))
            colors, _ = render_frames(functools.partial(gaussians_at, seq), cam, [0, args.frames // 2], args.device)
            rows.append(np.concatenate([tile(image), tile(overlay), tile(read_image(w.file("preview.png"))),
                                        tile(colors[0]), tile(np.abs(colors[1] - colors[0]) * 4)], axis=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    grid = (np.concatenate(rows, axis=0) * 255 + 0.5).astype(np.uint8)
    cv2.imwrite(str(args.image), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(args.image)


if __name__ == "__main__":
    main()
