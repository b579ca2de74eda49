"""Figure: one LivingWorld expansion step on the GPU with the full-size architectures of the real models.

Writes randomly initialised Depth Anything V2 Large, SegFormer-B0 (ADE20k, 150 classes) and Stable Diffusion 2
inpainting folders (``backend.models.random_init``: the real architectures and sizes, random values; timing
needs no trained weights), loads them through the providers exactly like downloaded weights
(``ModelConfig(depth=FOLDER, ...)``), makes a new world from the bundled sample at 512 px and times expansion
steps from turned cameras: render the world (gsplat), outpaint the missing region (SD-2 inpainting at 512 px,
fp16, classifier-free guidance, ``--steps`` denoising steps), depth of the new view and its alignment, new
Gaussians, the atomic write of the new version. The first expansion loads the pipeline and warms CUDA up; the
table reports it apart and gives the median of the rest.

    python3 bench/world_step_gpu.py [--steps 30,50] [--turns 30,-30,45,-45,60] [--models /tmp/lw-full-models]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.models.config import ModelConfig
from backend.models.random_init import save_depth_anything, save_sd2_inpainting, save_segformer
from backend.world.pipeline import WorldConfig, expand_world, new_world
from backend.world.samples.make_landscape import SAMPLE_PATH
from bench.world_fallback_step import turned

STAGES = ["render_s", "outpaint_s", "depth_s", "lift_s", "refine_s", "preview_s", "write_s"]


def build_models(root: Path) -> dict[str, str]:
    made = {}
    for name, save, size in (("depth", save_depth_anything, "large"), ("segmentation", save_segformer, "b0"),
                             ("outpaint", save_sd2_inpainting, "full")):
        folder = root / f"{name}-{size}"
        if not (folder / ".complete").exists():
            t = time.perf_counter()
            shutil.rmtree(folder, ignore_errors=True)
            save(folder, size)
            (folder / ".complete").touch()
            print(f"wrote random {name} model ({size}) in {time.perf_counter() - t:.1f} s")
        made[name] = str(folder)
    return made


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="30,50", help="denoising steps to time, comma-separated")
    ap.add_argument("--turns", default="30,-30,45,-45,60", help="yaw of each expansion (degrees); the first warms up")
    ap.add_argument("--models", default="/tmp/lw-full-models")
    ap.add_argument("--resolution", type=int, default=512)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs CUDA")
    folders = build_models(Path(args.models))
    n_params = {}
    for name, folder in folders.items():
        n_params[name] = sum(f.stat().st_size for f in Path(folder).rglob("*.safetensors")) / 4 / 1e6
    print("parameters (M, from float32 file sizes): " + ", ".join(f"{k} {v:.0f}" for k, v in n_params.items()))
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        models = ModelConfig(depth=folders["depth"], segmentation=folders["segmentation"],
                             outpaint=folders["outpaint"], device="cuda", outpaint_steps=steps)
        cfg = WorldConfig(resolution=args.resolution, models=models)
        tmp = Path(tempfile.mkdtemp(prefix="lw-bench-world-gpu-"))
        try:
            t = time.perf_counter()
            world = new_world(SAMPLE_PATH, tmp / "w", config=cfg)
            t_new = time.perf_counter() - t
            base = world.current.opencv_camera()
            times, stage_rows = [], []
            for deg in (float(d) for d in args.turns.split(",")):
                torch.cuda.synchronize()
                t = time.perf_counter()
                world = expand_world(tmp / "w", turned(base, deg))
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
                stage_rows.append(world.current.stats)
            providers = world.current.providers
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        warm = times[1:]
        med = statistics.median(warm)
        stages = {s: statistics.median([st["timings"].get(s, 0.0) for st in stage_rows[1:]]) for s in STAGES}
        rows.append((steps, t_new, times[0], med, min(warm), max(warm), stages,
                     statistics.median([st["missing_fraction"] for st in stage_rows])))
        print(f"providers: {providers}")
    print("\n| diffusion steps | new world s (loads depth + segmentation) | first expansion s (loads SD-2) | "
          "expansion median s | min-max s | " + " | ".join(s[:-2] for s in STAGES) + " | missing |")
    print("|---" * (len(STAGES) + 6) + "|")
    for steps, t_new, first, med, lo, hi, stages, missing in rows:
        print(f"| {steps} | {t_new:.2f} | {first:.2f} | {med:.2f} | {lo:.2f}-{hi:.2f} | "
              + " | ".join(f"{stages[s]:.3f}" for s in STAGES) + f" | {missing:.0%} |")


if __name__ == "__main__":
    main()
