"""The inpainting UNet's acceleration modes on the full-size SD-2 inpainting architecture: time and image.

For each ``--modes`` entry (``off``: eager, ``graphs``: CUDA-graph replay, ``inductor``: torch.compile with CUDA
graphs, ``auto``: graphs, then the background compile waited for and adopted: its image and times are the
compiled kernels') a fresh ``DiffusersInpaint`` (fp16, 512 px, ``--steps`` DDIM steps, classifier-free guidance) fills the
right third of the bundled sample, seed 0: the first call (load excluded; capture / compile included) and the
median of ``--reps`` more. Every mode's image is compared with the eager one (max and mean absolute difference,
PSNR over the hole, values in [0, 1]); ``--png`` saves eager | mode | 8 x difference side by side.

    python3 bench/outpaint_gpu.py [--modes off,graphs,inductor] [--steps 30] [--reps 5] [--json f] [--png f]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from gpu_common import dump, use_code_tree

use_code_tree()

import cv2
import numpy as np
import torch
from world_step_gpu import build_models

from backend.models.outpaint import DiffusersInpaint
from backend.world.pipeline import read_image
from backend.world.samples.make_landscape import SAMPLE_PATH


def timed_call(provider, image, hole):
    """(filled image, seconds) of one ``outpaint`` with seed 0, the device idle before and after."""
    cuda = provider.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = provider.outpaint(image, hole, "a landscape photograph", seed=0)
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="off,graphs,inductor")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--models", default="/tmp/lw-full-models")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None)
    ap.add_argument("--dry", action="store_true", help="the tiny model on the CPU, eager (checks the script)")
    args = ap.parse_args()
    device = "cpu" if args.dry else "cuda"
    folder = build_models(Path(args.models), args.dry)["outpaint"]
    size = 64 if args.dry else 512
    image = cv2.resize(read_image(SAMPLE_PATH), (size, size), interpolation=cv2.INTER_AREA)
    hole = np.zeros((size, size), bool)
    hole[:, size * 2 // 3:] = True
    rows, images = [], {}
    for mode in args.modes.split(","):
        t = time.perf_counter()
        provider = DiffusersInpaint(folder, device, steps=args.steps, size=size, accel=mode)
        load = time.perf_counter() - t

        img, first = timed_call(provider, image, hole)
        compiled = {}
        if getattr(provider, "accel", "") == "auto":  # graphs at once; wait for the background compile, adopt it
            state = provider.wait_compiled(900)
            compiled = {"compile_state": state, "background_compile_s": provider._compile.compile_s,
                        "kernels": provider.kernels}
            img, compiled["first_compiled_call_s"] = timed_call(provider, image, hole)  # captures the new graph
        runs = [timed_call(provider, image, hole) for _ in range(args.reps)]
        times = [r[1] for r in runs]
        images[mode] = img
        row = {"mode": mode, "load_s": load, "first_call_s": first, "setup_s": provider.setup_s,
               "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
               "repeatable": bool(all(np.array_equal(r[0], img) for r in runs)), **compiled}
        if mode != "off" and "off" in images:
            d = np.abs(img[hole] - images["off"][hole])
            mse = float(np.mean(d.astype(np.float64) ** 2))
            row.update(max_abs_vs_eager=float(d.max()), mean_abs_vs_eager=float(d.mean()),
                       psnr_vs_eager_db=float(10 * np.log10(1.0 / max(mse, 1e-20))))
        rows.append(row)
        print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        dump(args.json, {"bench": "outpaint_gpu", "steps": args.steps, "rows": rows})  # kept if a later mode stalls
        del provider
        if device == "cuda":
            torch.cuda.empty_cache()
    print("\n| UNet | load s | first call s (capture / compile s) | call median s | min-max s | same every call | "
          "max abs vs eager | mean abs | PSNR vs eager dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['load_s']:.1f} | {r['first_call_s']:.2f} ({r['setup_s']:.1f}) | {r['median_s']:.3f} | "
              f"{r['min_s']:.3f}-{r['max_s']:.3f} | {r['repeatable']} | {r.get('max_abs_vs_eager', 0):.2e} | "
              f"{r.get('mean_abs_vs_eager', 0):.2e} | {r.get('psnr_vs_eager_db', float('inf')):.1f} |")
    if args.png and "off" in images:
        strips = [images["off"]]
        for mode, img in images.items():
            if mode != "off":
                strips += [img, np.clip(8 * np.abs(img - images["off"]), 0, 1)]
        cv2.imwrite(args.png, cv2.cvtColor((np.concatenate(strips, 1) * 255 + 0.5).astype(np.uint8),
                                           cv2.COLOR_RGB2BGR))
    dump(args.json, {"bench": "outpaint_gpu", "steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
