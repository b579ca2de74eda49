"""Figure: a world on a CPU, as a new user makes it (issue 23, goal 1): `lw world new`, `lw world motion`, `lw world
bake --frames 60` on a 512-px landscape photo with the built-in providers, in under 60 s in total; progress that
moves every few seconds; cancel that answers within a second.

Part 1 runs the three commands as a user types them (each a fresh process: its start and imports count) and
prints their wall times and the backend's own stage timings. Part 2 runs the same work as jobs (what the Blender
sidebar starts) and records the longest gap between two progress reports of each job, then cancels each job a
few seconds in and records how long it took to stop. The box is shared: the load average is printed before and
after each part, and a figure is only as good as the load it was taken under.

    .venv/bin/python bench/world_cpu_pipeline.py [--photo PNG] [--frames 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from backend.errors import JobCancelled
from backend.jobs import JobContext, registry, run_job
from backend.world.samples.make_landscape import SAMPLE_PATH

BUILTIN = ["--depth-model", "builtin", "--segmentation-model", "builtin", "--outpaint-model", "builtin"]


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def lw(*args: str, env: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "backend.cli", "world", *args], capture_output=True, text=True,
                       check=False, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"lw world {args[0]} failed: {r.stderr.strip()[-500:]}")
    return dt, json.loads(r.stdout.strip().splitlines()[-1])


def job(kind: str, params: dict, workspace: Path, job_id: str, cancel_after: float | None = None) -> dict:
    """Run a job kind in this process like the server does; the longest gap between progress reports, and with
    ``cancel_after`` the seconds from the cancel request to the job's stop."""
    spec = registry()[kind]
    marks: list[tuple[float, float, str]] = []
    ctx = JobContext(workspace=workspace, job_dir=workspace / "jobs" / job_id, job_id=job_id,
                     on_progress=lambda f, m: marks.append((time.perf_counter(), f, m)))
    cancelled_at: list[float] = []
    if cancel_after is not None:
        def cancel():
            cancelled_at.append(time.perf_counter())
            ctx.cancel_event.set()

        threading.Timer(cancel_after, cancel).start()
    t0 = time.perf_counter()
    outcome = "done"
    try:
        run_job(spec.fn, ctx, spec.params.model_validate(params))
    except JobCancelled:
        outcome = "cancelled"
    end = time.perf_counter()
    times = [t0] + [m[0] for m in marks] + [end]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    after = marks[worst][2] if worst < len(marks) else "(the end)"
    return {"seconds": end - t0, "outcome": outcome, "reports": len(marks), "max_gap_s": gaps[worst],
            "max_gap_before": after,
            "cancel_latency_s": (end - cancelled_at[0]) if cancelled_at and outcome == "cancelled" else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo", type=Path, default=SAMPLE_PATH)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-jobs", action="store_true", help="part 1 only")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="lw-bench-cpu-"))
    try:
        print(f"{os.cpu_count()} cores, torch {torch.__version__}, CUDA {torch.cuda.is_available()}; photo "
              f"{args.photo.name}; load average (1/5/15 min) {load()} before part 1")
        world = tmp / "world"
        t_new, new = lw("new", str(args.photo), "--out", str(world), "--resolution", "512", "--device", "cpu",
                        *BUILTIN, env=env)
        t_motion, motion = lw("motion", str(world), "--device", "cpu", env=env)
        t_bake, _ = lw("bake", str(world), "--frames", str(args.frames), "--out", str(tmp / "loop.lw4d"),
                          "--device", "cpu", env=env)
        total = t_new + t_motion + t_bake
        print("\n| command | wall s | inside |\n|---|---|---|")
        stages = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in new["timings"].items() if k != "total_s")
        print(f"| lw world new (512 px, {new['gaussians']} Gaussians) | {t_new:.1f} | {stages} |")
        m = motion["timings"]
        print(f"| lw world motion (fallback cue, {motion['samples']} samples, {motion['fit']['steps']} fit steps, "
              f"rel. error {motion['fit']['relative_error']:.3f}) | {t_motion:.1f} | "
              f"cue {m['cue_s']:.1f}, align {m['align_s']:.1f}, fit {m['fit_s']:.1f} |")
        print(f"| lw world bake --frames {args.frames} | {t_bake:.1f} | |")
        print(f"| **total** | **{total:.1f}** | goal < 60 s: {'met' if total < 60 else 'NOT met'} |")
        print(f"load average {load()} after part 1")
        if args.skip_jobs:
            return
        ws = tmp / "ws"
        image = str(args.photo.resolve())
        models = {"depth": "builtin", "segmentation": "builtin", "outpaint": "builtin", "device": "cpu"}
        rows = [("world_new", job("world_new", {"image": image, "out": "worlds/a", "resolution": 512,
                                                "models": models}, ws, "n1"))]
        rows.append(("motion_update", job("motion_update", {"world": "worlds/a", "device": "cpu"}, ws, "m1")))
        rows.append(("world_bake", job("world_bake", {"world": "worlds/a", "frames": args.frames, "device": "cpu"},
                                       ws, "b1")))
        rows.append(("world_new, cancelled at 2 s", job("world_new", {"image": image, "out": "worlds/b",
                                                                     "resolution": 512, "models": models}, ws, "n2",
                                                        cancel_after=2.0)))
        rows.append(("motion_update, cancelled at 1.5 s", job("motion_update", {"world": "worlds/a", "device": "cpu"},
                                                              ws, "m2", cancel_after=1.5)))
        rows.append(("world_bake, cancelled at 3 s", job("world_bake", {"world": "worlds/a", "frames": args.frames,
                                                                       "device": "cpu"}, ws, "b2",
                                                         cancel_after=3.0)))
        print("\n| job | s | outcome | progress reports | longest gap s (before) | cancel answered in s |")
        print("|---|---|---|---|---|---|")
        for name, r in rows:
            lat = f"{r['cancel_latency_s']:.2f}" if r["cancel_latency_s"] is not None else "-"
            print(f"| {name} | {r['seconds']:.1f} | {r['outcome']} | {r['reports']} | {r['max_gap_s']:.1f} "
                  f"({r['max_gap_before']}) | {lat} |")
        print(f"load average {load()} after part 2")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
