"""Wall-clock of MoE-GS expert training: one after the other in this process (the local worker's way) vs one Ray
task per expert on a local Ray cluster of N CPU workers (or N GPUs), then optionally the router.

    .venv/bin/python bench/cluster_local.py --dataset DIR [--experts deformation trajectory] [--iterations 200]
        [--downsample 2] [--device cpu --workers 2 | --device cuda --gpus 2] [--router-iterations 0] [--json F]

Rows: "local" (``backend.moe.train.train_run``), "ray cold" (first ``train_run_on_ray``: Ray starts its worker
processes, which import torch), "ray warm" (the same again into a new run folder: workers reused). Start-up of
the Ray cluster itself (``ray.init``) is printed apart; on CUDA so is a warm-up (a 2-step local run: CUDA
start-up and gsplat's JIT build or load), done before any timed run. Each run starts from the same seeds, so
the last column checks that Ray trained the same parameters as the local run.

Per task (second table): the training loop of each expert (``log.json``'s ``train_time_s``; the router's
``elapsed_s``) in every mode, and for the Ray runs the span of each task: an expert's from its first progress
report ("NAME: starting", polled every 0.2 s) to its ``log.json`` being written; the router's from the last
expert's end to the call's return. What the task spans leave of a Ray run's wall-clock (the dataset load and
initial cloud of ``prepare_run``, task start latency) is "serial": wall - makespan of the spans on the workers
used. The third table predicts the wall-clock on G GPUs from the measured spans: serial + the makespan of Ray's
FIFO list scheduling of the expert tasks, then the router (``bench/cluster_estimate.simulate``); on the number
of workers actually used it gives back the measured wall-clock.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster_estimate import Task, simulate

from backend.moe.train import TrainConfig, load_run_video, train_run
from backend.moe.train_router import RouterTrainConfig, train_router


class TaskClock:
    """Wall-clock (``time.time``) start of every expert task of one ``train_run_on_ray`` call, from the progress
    it passes on (the latest message of each task, joined by " | "): a task starts at its first message."""

    def __init__(self, experts: list[str]):
        self.experts = set(experts)
        self.start: dict[str, float] = {}

    def __call__(self, fraction: float, message: str) -> None:
        now = time.time()
        for part in message.split(" | "):
            name = part.split(":", 1)[0]
            if name in self.experts:
                self.start.setdefault(name, now)


def loop_seconds(run: Path, experts: list[str]) -> dict[str, float]:
    """Seconds of each expert's training loop (its log.json) and of the router's (mixture checkpoint), if any."""
    out = {e: float(json.loads((run / e / "log.json").read_text())["train_time_s"]) for e in experts}
    mixture = run / "mixture" / "mixture.pt"
    if mixture.is_file():
        out["router"] = float(torch.load(mixture, map_location="cpu", weights_only=True)["elapsed_s"])
    return out


def task_spans(run: Path, experts: list[str], clock: TaskClock, t_end: float, router: bool) -> dict[str, float]:
    """Seconds each task of a Ray run held its worker (see the module docstring)."""
    ends = {e: (run / e / "log.json").stat().st_mtime for e in experts}
    spans = {e: ends[e] - clock.start[e] for e in experts}
    if router:
        spans["router"] = t_end - max(ends.values())
    return spans


def tasks_of(spans: dict[str, float], experts: list[str]) -> list[Task]:
    tasks = [Task(0, e, spans[e]) for e in experts]
    if "router" in spans:
        tasks.append(Task(0, "router", spans["router"], tuple(experts)))
    return tasks


def max_param_diff(a: Path, b: Path, experts: list[str]) -> float:
    """Largest parameter difference between two runs' experts; NaN when their Gaussian counts differ (on CUDA the
    gradients' atomic adds are not bit-reproducible, so densification can split different Gaussians)."""
    diff = 0.0
    for e in experts:
        ma = torch.load(a / e / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
        mb = torch.load(b / e / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
        if any(ma[k].shape != mb[k].shape for k in ma):
            return float("nan")
        diff = max(diff, *((ma[k].float() - mb[k].float()).abs().max().item() for k in ma))
    return diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="N3V- or Technicolor-layout folder")
    ap.add_argument("--experts", nargs="+", default=["deformation", "trajectory"])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--downsample", type=float, default=2.0)
    ap.add_argument("--points", type=int, default=2000, help="initial points of every expert")
    ap.add_argument("--densify-from", type=int, default=TrainConfig.densify_from,
                    help="first densification step (>= --iterations: densification off)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--workers", type=int, default=2, help="CPU workers of the Ray cluster (--device cpu)")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs of the Ray cluster (--device cuda)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    ap.add_argument("--router-iterations", type=int, default=0, help="then train the router (0: no)")
    ap.add_argument("--predict", default="1,2,3", help="GPU counts to predict the wall-clock for")
    ap.add_argument("--init-points", default=None, help="points.npz to start every run from (bench/cluster_pack.py "
                    "writes one); default: each run computes its own (the same)")
    ap.add_argument("--work", default=None, help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file (after every run)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.work or tempfile.mkdtemp(prefix="lw-cluster-bench-"))
    cfg = TrainConfig(iterations=a.iterations, downsample=a.downsample, min_points=a.points, max_points=a.points,
                      checkpoint_every=max(a.iterations // 4, 1), densify_from=a.densify_from, device=a.device,
                      torch_threads=a.threads)
    router = RouterTrainConfig(iterations=a.router_iterations, device=a.device, torch_threads=a.threads) \
        if a.router_iterations and len(a.experts) >= 2 else None
    gpu = torch.cuda.get_device_name(0) if a.device == "cuda" else "CPU"
    report = {"args": vars(a), "device": gpu, "rows": []}
    rows = report["rows"]

    def fresh(name: str) -> Path:
        """A new run folder, holding the given initial cloud (``prepare_run`` keeps a points.npz it finds)."""
        run = work / name
        run.mkdir(parents=True)
        if a.init_points:
            shutil.copyfile(a.init_points, run / "points.npz")
        return run

    def save() -> None:
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=1))

    if a.device == "cuda":  # CUDA context and gsplat's kernels, once, outside every timed run
        t0 = time.perf_counter()
        train_run(a.dataset, fresh("warmup"), a.experts[:1], replace(cfg, iterations=2, checkpoint_every=1))
        report["warmup_s"] = time.perf_counter() - t0
        print(f"warm-up (CUDA start-up, gsplat build/load, one dataset load): {report['warmup_s']:.1f} s", flush=True)

    t0 = time.perf_counter()
    local = train_run(a.dataset, fresh("local"), a.experts, cfg)
    if router is not None:
        train_router(local, load_run_video(local), router)
    rows.append({"mode": "local (one after the other)", "workers": 1, "wall_s": time.perf_counter() - t0,
                 "max_param_diff": 0.0, "loops": loop_seconds(local, a.experts)})
    print(f"local: {rows[-1]['wall_s']:.1f} s, loops {rows[-1]['loops']}", flush=True)
    save()

    import ray

    from backend.cluster.moe import train_run_on_ray

    t0 = time.perf_counter()
    if a.device == "cuda":
        ray.init(num_gpus=a.gpus, num_cpus=a.gpus + 1, include_dashboard=False, log_to_driver=False)
        workers = a.gpus
    else:
        ray.init(num_cpus=a.workers, num_gpus=0, include_dashboard=False, log_to_driver=False)
        workers = a.workers
    report["ray_init_s"] = time.perf_counter() - t0
    for label in ("ray cold", "ray warm"):
        out = fresh(label.replace(" ", "-"))
        clock = TaskClock(a.experts)
        t0 = time.perf_counter()
        train_run_on_ray(a.dataset, out, a.experts, cfg, router=router, progress=clock)
        wall, t_end = time.perf_counter() - t0, time.time()
        spans = task_spans(out, a.experts, clock, t_end, router is not None)
        rows.append({"mode": f"{label} ({workers} {'GPU' if a.device == 'cuda' else 'CPU'} workers)",
                     "workers": workers, "wall_s": wall, "max_param_diff": max_param_diff(local, out, a.experts),
                     "loops": loop_seconds(out, a.experts), "spans": spans,
                     "serial_s": wall - simulate(tasks_of(spans, a.experts), workers)})
        print(f"{label}: {wall:.1f} s, spans {spans}", flush=True)
        save()
    ray.shutdown()

    npts = len(np.load(a.init_points)["points"]) if a.init_points else a.points
    print()
    print(f"{len(a.experts)} experts ({', '.join(a.experts)}) x {a.iterations} it, downsample {a.downsample}, "
          f"{npts} initial points, {a.threads} torch thread(s) per process, device {gpu}"
          f"{f', router {a.router_iterations} it' if router else ''}; ray.init took {report['ray_init_s']:.1f} s"
          + (f"; warm-up {report['warmup_s']:.1f} s" if "warmup_s" in report else ""))
    print()
    print("| mode | wall-clock (s) | speed-up vs local | max abs param diff vs local |")
    print("|---|---|---|---|")
    base = rows[0]["wall_s"]
    for r in rows:
        print(f"| {r['mode']} | {r['wall_s']:.1f} | {base / r['wall_s']:.2f}x | {r['max_param_diff']:.2e} |")

    keys = a.experts + (["router"] if router is not None else [])
    print()
    print("| task | " + " | ".join(f"{r['mode'].split(' (')[0]} loop (s)" for r in rows) + " | "
          + " | ".join(f"{r['mode'].split(' (')[0]} task (s)" for r in rows[1:]) + " |")
    print("|---|" + "---|" * (2 * len(rows) - 1))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{r['loops'][k]:.1f}" for r in rows) + " | "
              + " | ".join(f"{r['spans'][k]:.1f}" for r in rows[1:]) + " |")
    print("| serial rest | " + " | ".join("" for _ in rows) + " | "
          + " | ".join(f"{r['serial_s']:.1f}" for r in rows[1:]) + " |")

    print()
    print("Predicted wall-clock from the measured task spans (s; speed-up vs the local row):")
    print()
    gpus = [int(g) for g in a.predict.split(",")]
    unit = "GPU" if a.device == "cuda" else "worker"
    print("| from | " + " | ".join(f"{g} {unit}{'s' if g > 1 else ''}" for g in gpus) + " |")
    print("|---|" + "---|" * len(gpus))
    report["predicted_s"] = {}
    for r in rows[1:]:
        tasks = tasks_of(r["spans"], a.experts)
        pred = {g: r["serial_s"] + simulate(tasks, g) for g in gpus}
        report["predicted_s"][r["mode"]] = pred
        print(f"| {r['mode']} | " + " | ".join(f"{pred[g]:.1f} ({base / pred[g]:.2f}x)" for g in gpus) + " |")
    save()


if __name__ == "__main__":
    main()
