"""Figure: one LivingWorld expansion step on the GPU with the full-size architectures of the real models.

Writes randomly initialised Depth Anything V2 Large, SegFormer-B0 (ADE20k, 150 classes) and Stable Diffusion 2
inpainting folders (``backend.models.random_init``: the real architectures and sizes, random values; timing
needs no trained weights), loads them through the providers exactly like downloaded weights
(``ModelConfig(depth=FOLDER, ...)``), makes a new world from the bundled sample at 512 px and times expansion
steps from turned cameras: render the world (gsplat), outpaint the missing region (SD-2 inpainting at 512 px,
fp16, classifier-free guidance, ``--steps`` denoising steps), depth of the new view and its alignment, new
Gaussians, their brief refinement, the atomic write of the new version. The first expansion loads the pipeline
and warms CUDA up (and captures / compiles the UNet, ``--accel``): the table reports it apart and gives the
median of the rest, per stage too. With ``--accel auto`` (the default) the first expansion also starts the
background compile: the second expansion runs while it compiles (reported apart), then the script waits for the
compile (its wall time is reported) and the median is of the expansions after it.

    python3 bench/world_step_gpu.py [--steps 30,50] [--turns 30,-30,45,-45,60] [--models /tmp/lw-full-models]
                                    [--accel auto|off|graphs|inductor] [--json out.json] [--dry]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from gpu_common import dump, use_code_tree

use_code_tree()

import numpy as np
import torch

from backend.models.config import ModelConfig
from backend.models.random_init import save_depth_anything, save_sd2_inpainting, save_segformer
from backend.world.pipeline import WorldConfig, expand_world, new_world

try:
    from backend.world.pipeline import turned_camera
except ImportError:  # the baseline tree (LW_CODE=.baseline) predates turned_camera: the same turn, by hand
    from backend.render.cameras import look_at

    def turned_camera(camera, degrees):
        eye, fwd, a = camera.center, camera.cam_to_world[:3, 2], np.radians(degrees)
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        return look_at(eye, eye + rot @ fwd, K=camera.K, width=camera.width, height=camera.height,
                       near=camera.near, far=camera.far)
from backend.world.samples.make_landscape import SAMPLE_PATH

STAGES = ["render_s", "outpaint_s", "depth_s", "lift_s", "refine_s", "preview_s", "motion_s", "write_s"]


def build_models(root: Path, dry: bool = False) -> dict[str, str]:
    made = {}
    sizes = {"depth": "tiny", "segmentation": "tiny", "outpaint": "tiny"} if dry else \
        {"depth": "large", "segmentation": "b0", "outpaint": "full"}
    for name, save in (("depth", save_depth_anything), ("segmentation", save_segformer),
                       ("outpaint", save_sd2_inpainting)):
        folder = root / f"{name}-{sizes[name]}"
        if not (folder / ".complete").exists():
            t = time.perf_counter()
            shutil.rmtree(folder, ignore_errors=True)
            save(folder, sizes[name])
            (folder / ".complete").touch()
            print(f"wrote random {name} model ({sizes[name]}) in {time.perf_counter() - t:.1f} s", flush=True)
        made[name] = str(folder)
    return made


def model_config(folders: dict, steps: int, accel: str, device: str) -> ModelConfig:
    kw = {"depth": folders["depth"], "segmentation": folders["segmentation"], "outpaint": folders["outpaint"],
          "device": device, "outpaint_steps": steps}
    if "outpaint_accel" in {f.name for f in dataclasses.fields(ModelConfig)}:  # the code before had no choice
        kw["outpaint_accel"] = accel
    elif accel not in ("auto", "off"):
        raise SystemExit(f"--accel {accel}: this code tree has no outpaint acceleration")
    return ModelConfig(**kw)


def profile_expansion(root: Path, base, dry: bool) -> None:
    """One expansion under torch.profiler: prints the wall time, the summed GPU kernel time (how much of the wall
    the GPU is busy), and the top operators by self CUDA time and by self CPU time; then one more under cProfile
    (the host's time by Python function)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([] if dry else [ProfilerActivity.CUDA])
    with profile(activities=acts) as prof:
        t = time.perf_counter()
        expand_world(root, turned_camera(base, 75.0))
        if not dry:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    events = prof.key_averages()
    gpu_us = sum(getattr(e, "self_device_time_total", 0.0) for e in events)
    print(f"\nprofiled expansion: wall {wall:.3f} s (profiler on), GPU kernels {gpu_us / 1e6:.3f} s "
          f"({gpu_us / 1e6 / wall:.0%} of the wall)")
    if not dry:
        print(events.table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()  # one more expansion: where the host's time goes, by Python function
    prof.enable()
    t = time.perf_counter()
    expand_world(root, turned_camera(base, 90.0))
    if not dry:
        torch.cuda.synchronize()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
    print(f"\nhost profile of one expansion (cProfile, wall {time.perf_counter() - t:.3f} s):")
    print(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="30,50", help="denoising steps to time, comma-separated")
    ap.add_argument("--turns", default="30,-30,45,-45,60,-60",
                    help="yaw of each expansion (degrees); the first warms up (with auto, the second runs while "
                         "the UNet compiles)")
    ap.add_argument("--models", default="/tmp/lw-full-models")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--accel", default="auto", help="outpaint UNet: auto | off | graphs | inductor")
    ap.add_argument("--json", default=None)
    ap.add_argument("--dry", action="store_true", help="tiny models on the CPU at 64 px (checks the script)")
    ap.add_argument("--profile", action="store_true",
                    help="one more expansion under torch.profiler: GPU-busy time against the wall, top kernels and "
                         "host operators (where the step waits)")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.dry:
        raise SystemExit("this benchmark needs CUDA (--dry checks it on the CPU)")
    device = "cpu" if args.dry else "cuda"
    resolution = 64 if args.dry else args.resolution
    folders = build_models(Path(args.models), args.dry)
    n_params = {name: sum(f.stat().st_size for f in Path(folder).rglob("*.safetensors")) / 4 / 1e6
                for name, folder in folders.items()}
    print("parameters (M, from float32 file sizes): " + ", ".join(f"{k} {v:.0f}" for k, v in n_params.items()))
    print(f"device: {torch.cuda.get_device_name() if not args.dry else 'cpu'}, torch {torch.__version__}")
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        cfg = WorldConfig(resolution=resolution, models=model_config(folders, steps, args.accel, device))
        tmp = Path(tempfile.mkdtemp(prefix="lw-bench-world-gpu-"))
        try:
            t = time.perf_counter()
            world = new_world(SAMPLE_PATH, tmp / "w", config=cfg)
            t_new = time.perf_counter() - t
            base = world.current.opencv_camera()
            times, stage_rows, kernels = [], [], []
            from backend.world import pipeline

            compile_wait = None
            for k, deg in enumerate(float(d) for d in args.turns.split(",")):
                # asked for only after the first expansion, which loads it (the load stays in that timing)
                outpainter = pipeline._outpaint(cfg.models) if k == 2 else None
                if k == 2 and getattr(outpainter, "accel", "") == "auto" and hasattr(outpainter, "wait_compiled"):
                    t = time.perf_counter()
                    state = outpainter.wait_compiled(900)
                    compile_wait = {"state": state, "waited_s": time.perf_counter() - t,
                                    "compile_s": outpainter._compile.compile_s if outpainter._compile else 0.0}
                    print(f"background compile: {state} in {compile_wait['compile_s']:.1f} s (waited "
                          f"{compile_wait['waited_s']:.1f} s more)", flush=True)
                if not args.dry:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                world = expand_world(tmp / "w", turned_camera(base, deg))
                if not args.dry:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
                stage_rows.append(world.current.stats)
                kernels.append(world.current.stats.get("outpaint_kernels", "?"))
                print(f"expansion {deg:+.0f} deg: {times[-1]:.3f} s " + " ".join(
                    f"{s[:-2]} {world.current.stats['timings'].get(s, 0.0):.3f}" for s in STAGES)
                    + f" [{kernels[-1]}]", flush=True)
            providers = world.current.providers
            if args.profile:
                profile_expansion(tmp / "w", base, args.dry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        outpainter = pipeline._outpaint(cfg.models)
        first_warm = 2 if compile_wait is not None else 1
        warm = times[first_warm:]
        row = {"steps": steps, "accel": getattr(outpainter, "accel", "off"), "new_world_s": t_new,
               "first_expansion_s": times[0], "setup_s": getattr(outpainter, "setup_s", 0.0),
               "during_compile_s": times[1] if compile_wait is not None else None, "compile": compile_wait,
               "median_s": statistics.median(warm), "min_s": min(warm), "max_s": max(warm),
               "stages": {s: statistics.median([st["timings"].get(s, 0.0) for st in stage_rows[first_warm:]])
                          for s in STAGES},
               "refine_l1": statistics.median([st.get("refine_l1", float("nan")) for st in stage_rows[first_warm:]]),
               "missing": statistics.median([st["missing_fraction"] for st in stage_rows]),
               "providers": providers, "kernels": kernels, "all_s": times}
        rows.append(row)
        pipeline._outpaint.cache_clear()  # the next step count loads its own pipeline
        print(f"providers: {providers}")
    print("\n| diffusion steps | UNet | new world s | first expansion s (loads SD-2, capture/compile s) | "
          "expansion median s | min-max s | " + " | ".join(s[:-2] for s in STAGES) + " | refine L1 | missing |")
    print("|---" * (len(STAGES) + 8) + "|")
    for r in rows:
        if r["compile"] is not None:
            print(f"(accel auto, {r['steps']} steps: expansion while the UNet compiles {r['during_compile_s']:.3f} s; "
                  f"background compile {r['compile']['state']} in {r['compile']['compile_s']:.1f} s; the median is "
                  f"of the expansions after it: {r['kernels'][-1]})")
    for r in rows:
        print(f"| {r['steps']} | {r['accel']} | {r['new_world_s']:.2f} | {r['first_expansion_s']:.2f} "
              f"({r['setup_s']:.1f}) | {r['median_s']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} | "
              + " | ".join(f"{r['stages'][s]:.3f}" for s in STAGES) + f" | {r['refine_l1']:.4f} | {r['missing']:.0%} |")
    dump(args.json, {"bench": "world_step_gpu", "rows": rows, "n_params_M": n_params})


if __name__ == "__main__":
    main()
