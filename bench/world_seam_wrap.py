"""Is a loop's wrap a seam, or an ordinary step of the motion? (issue 23's seam criterion, on a CPU)

For each painted photo, a world is made as ``bench/world_gallery.py`` makes it (built-in providers, new ->
motion -> one expansion turned 25 deg), its loop is baked on the field itself (``BakeConfig(lattice=0)``, as on
CUDA) and every frame rendered at ``--size`` px. Three things are measured:

- the loop: the wrap against its two neighbouring steps (``seam_ratio``) and the limit from the loop's own
  ordinary steps (``LoopQuality.seam_limit``);
- the motion without the loop: ONE copy of the moving Gaussians, opaque, no cross-fade, at the positions of its
  trajectory through x0 (the backward copy's x_b(N-K..N-1), x0, the forward copy's x_f(1..K)). Its step into x0,
  against its neighbours, is the step the motion itself makes where the loop wraps; the other steps of the same
  trajectory give its spread (mean, sd, rank);
- sharpness of each loop frame (RMS of frame - 3x3 box blur over the moving region): whether frame 0, the photo's
  own Gaussians, stands out from the frames beside it (a once-per-loop pulse).

If the wrap equals the motion's own step into x0, the loop adds nothing at the wrap and a wrap above 1 is that
photo's content at that point of the motion.

    .venv/bin/python bench/world_seam_wrap.py [--photos forest_edge,sunset_coast] [--field cpu|cuda]
        [--resolution 384] [--frames 60] [--size 256,384] [--k 20]

``--size`` takes a comma list: each size is measured on the same fitted world (a fit is not the same run to run).
``lw world metrics`` renders at the world's resolution on CUDA (its default), 128 px on a CPU.

``--field cuda`` fits the motion field with the CUDA default size (16 levels, 2^19 table, 400 steps) on the CPU
(minutes per photo); ``cpu`` is the CPU default.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from backend.models.config import ModelConfig
from backend.render.rasterize import RasterConfig, rasterize
from backend.world import store
from backend.world.motion.bake import BakeConfig
from backend.world.motion.field import FieldSize
from backend.world.motion.metrics import loop_quality, mean_abs_diff, render_frames, to_u8
from backend.world.motion.pipeline import MotionUpdate, baked_world, update_motion
from backend.world.pipeline import WorldConfig, expand_world, new_world, scale_camera, turned_camera
from backend.world.samples.photos import SCENES


def make_world(name: str, root: Path, resolution: int, field: str) -> None:
    photo = SCENES[name](4, 384)
    path = root.parent / f"{name}.png"
    cv2.imwrite(str(path), cv2.cvtColor((photo.image * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
    cfg = WorldConfig(resolution=resolution, models=ModelConfig("builtin", "builtin", "builtin", device="cpu"))
    w0 = new_world(path, root, config=cfg)
    size = FieldSize(levels=16, table_log2=19, steps=400, update_steps=40) if field == "cuda" else None
    update_motion(root, MotionUpdate(device="cpu", **({"field": size} if size else {})))
    expand_world(root, turned_camera(w0.current.opencv_camera(), 25))


def sharpness(colors: np.ndarray, region: np.ndarray) -> np.ndarray:
    """RMS of (frame - 3x3 box blur) over ``region``, per frame, in 8-bit levels."""
    return np.array([np.sqrt(((c - cv2.blur(c, (3, 3))) ** 2).mean(-1)[region].mean()) * 255 for c in colors])


def step_ratios(u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps |I_k - I_k+1| and each interior step against the mean of its two neighbours."""
    steps = np.array([mean_abs_diff(u8[k], u8[k + 1]) for k in range(len(u8) - 1)])
    return steps, np.array([steps[k] / ((steps[k - 1] + steps[k + 1]) / 2) for k in range(1, len(steps) - 1)])


def measure(root: Path, frames: int, size: int, k: int) -> dict:
    world = store.load_world(root)
    baked = baked_world(world, BakeConfig(frames=frames, lattice=0), torch.device("cpu"))
    T, M = baked.frame_count, len(baked.dynamic)
    cam0 = world.steps[0].opencv_camera()
    s = size / max(cam0.width, cam0.height)
    cam = scale_camera(cam0, max(round(cam0.width * s), 8), max(round(cam0.height * s), 8))
    with torch.no_grad():
        region = rasterize(baked.dynamic.to_torch("cpu"), cam, RasterConfig(tile_size=4, depth=False)).alpha.numpy()
    region = region >= 0.5
    colors, alphas = render_frames(baked.gaussians_at, cam, list(range(T)), "cpu")
    q = loop_quality(colors, alphas, list(range(T)), T)
    hp = sharpness(colors, region)
    # one copy, opaque, along its trajectory through x0 (index k), the other copy hidden
    pos = baked.positions
    trajectory = [pos[T - j, M:] for j in range(k, 0, -1)] + [pos[0, :M]] + [pos[j, :M] for j in range(1, k + 1)]
    idx = baked.dynamic_index
    opacity = np.clip(baked.dynamic.opacities().astype(np.float64), 1e-7, 1 - 1e-7)

    def one_copy(i: int):
        g = baked.gaussians_at(0)
        means, logits = g.means.copy(), g.opacity_logits.copy()
        means[idx[:M]] = trajectory[i]
        logits[idx[:M]] = np.log(opacity / (1 - opacity))
        logits[idx[M:]] = -30.0
        return g.with_(means=means, opacity_logits=logits.astype(np.float32))

    single, _ = render_frames(one_copy, cam, list(range(2 * k + 1)), "cpu")
    steps, ratios = step_ratios(to_u8(single))  # ratios[j] is step j + 1 (step j: position j -> j + 1)
    into = float(ratios[k - 2])  # step k - 1: x_b(N - 1) -> x0
    others = np.delete(ratios, [k - 2, k - 1])
    return {"photo": root.name, "moving": M, "seam": q.seam_ratio, "limit": q.seam_limit,
            "motion_into_x0": into, "motion_mean": float(others.mean()), "motion_sd": float(others.std()),
            "motion_rank": int((ratios < into).sum() + 1), "motion_n": len(ratios),
            # the one copy's steps x_(-3)->x_(-2) .. x_1->x_2 against its median step: do both steps that touch x0
            # (into and out of the photo's own layout) stand out, or only the one into it?
            "steps_near_x0": [float(v) for v in steps[k - 3:k + 2] / np.median(steps)],
            "out_of_x0": float(ratios[k - 1]),
            "sharp_f0_vs_beside": float(hp[0] / ((hp[1] + hp[-1]) / 2)),
            "sharp_f0_z": float((hp[0] - hp.mean()) / max(hp.std(), 1e-12))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default="forest_edge,sunset_coast,mountain_lake")
    ap.add_argument("--field", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--resolution", type=int, default=384)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", default="256", help="render sizes (long side, px), comma-separated")
    ap.add_argument("--k", type=int, default=20, help="positions each side of x0 for the one-copy trajectory")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sizes = [int(v) for v in args.size.split(",")]
    print(f"field {args.field}, world {args.resolution} px, {args.frames} frames, renders {args.size} px, one copy "
          f"over {2 * args.k + 1} positions through x0")
    print("| photo | render px | seam (loop) | limit | the motion's own step into x0 | its other steps: mean +- sd | rank | "
          "frame 0 sharpness / beside | z among frames | s |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory(prefix="lw-seam-wrap-") as tmp:
        for name in args.photos.split(","):
            t = time.perf_counter()
            root = Path(tmp) / name
            make_world(name, root, args.resolution, args.field)
            for size in sizes:
                report(measure(root, args.frames, size, args.k), size, time.perf_counter() - t)
                t = time.perf_counter()


def report(r: dict, size: int, seconds: float) -> None:
    z = (r["motion_into_x0"] - r["motion_mean"]) / max(r["motion_sd"], 1e-12)
    print(f"| {r['photo']} | {size} | {r['seam']:.3f} | {r['limit']:.3f} | {r['motion_into_x0']:.3f} ({z:+.1f} sd) | "
          f"{r['motion_mean']:.3f} +- {r['motion_sd']:.3f} | {r['motion_rank']}/{r['motion_n']} | "
          f"{r['sharp_f0_vs_beside']:.3f} | {r['sharp_f0_z']:+.1f} | {seconds:.0f} |", flush=True)
    print(f"  {r['photo']}: one copy's steps x-3->x-2 .. x1->x2 / median step "
          f"{' '.join(f'{v:.3f}' for v in r['steps_near_x0'])}; step out of x0 against its neighbours "
          f"{r['out_of_x0']:.3f}", flush=True)


if __name__ == "__main__":
    main()
