"""Figure: sky IoU of the built-in segmentation on the labelled sets (issue 23, goal 6).

Three sets whose terrain reaches the top edge in most images: the painted scenes of
``backend/world/samples/photos.py`` with the seeds the heuristic was tuned on (1, 2) and with unseen seeds (3-8),
both at ``--size``, and the held-out set rendered with Blender (``tests/data/sky``, ``scripts/render_sky_set.py``:
Cycles, physical sky, 256 x 192). Prints one row per image
(sky IoU, water IoU where the set knows water, seconds) and the mean and minimum per set; writes the overlays
(red: found sky, yellow: the true sky's outline) to docs/images/world_sky_iou.jpg.

    .venv/bin/python bench/world_sky_iou.py [--size 512]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from backend.models.segmentation import HeuristicSegmentation
from backend.world.samples.photos import labelled_set

REPO = Path(__file__).resolve().parents[1]
SKY_SET = REPO / "tests" / "data" / "sky"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def _overlay(image: np.ndarray, found: np.ndarray, truth: np.ndarray, size: int = 160) -> np.ndarray:
    h, w = image.shape[:2]
    s = size / max(h, w)
    dims = (round(w * s), round(h * s))
    v = (cv2.resize(image, dims, interpolation=cv2.INTER_AREA) * 255).astype(np.uint8)
    m = cv2.resize(found.astype(np.uint8), dims, interpolation=cv2.INTER_NEAREST) > 0
    v[m] = (0.55 * v[m] + [115, 0, 0]).astype(np.uint8)
    edge = cv2.Canny(cv2.resize(truth.astype(np.uint8) * 255, dims, interpolation=cv2.INTER_NEAREST), 50, 150) > 0
    v[edge] = [255, 230, 0]
    out = np.zeros((size, size, 3), np.uint8)
    out[: v.shape[0], : v.shape[1]] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    print(f"device: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    sets = {"painted, tuned seeds": [(p.name, p.image, p.sky, p.water) for p in labelled_set((1, 2), args.size)],
            "painted, unseen seeds": [(p.name, p.image, p.sky, p.water) for p in
                                      labelled_set((3, 4, 5, 6, 7, 8), args.size)],
            "rendered": []}
    for mask in sorted(SKY_SET.glob("*_sky.png")):
        name = mask.name[: -len("_sky.png")]
        image = cv2.cvtColor(cv2.imread(str(SKY_SET / f"{name}.jpg")), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
        sets["rendered"].append((name, image, cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 127, None))
    print("| set | image | size | sky IoU | water IoU | s |\n|---|---|---|---|---|---|")
    tiles, summary = [], []
    for set_name, items in sets.items():
        ious = []
        for name, image, sky, water in items:
            t = time.perf_counter()
            masks = HeuristicSegmentation().segment(image)
            dt = time.perf_counter() - t
            ious.append(_iou(masks.sky, sky))
            w_iou = f"{_iou(masks.water, water):.3f}" if water is not None and water.any() else "-"
            print(f"| {set_name} | {name} | {image.shape[1]}x{image.shape[0]} | {ious[-1]:.3f} | {w_iou} | {dt:.2f} |")
            if set_name != "painted, unseen seeds" or name.endswith("_3"):
                tiles.append(_overlay(image, masks.sky, sky))
        summary.append(f"{set_name}: mean sky IoU {np.mean(ious):.3f}, min {np.min(ious):.3f} over {len(ious)} images")
    print("\n".join(summary))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    cols = 6
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    grid = np.concatenate([np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)], 0)
    out = REPO / "docs" / "images" / "world_sky_iou.jpg"
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(out)


if __name__ == "__main__":
    main()
