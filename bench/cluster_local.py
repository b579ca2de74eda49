"""Wall-clock of MoE-GS expert training: one after the other in this process (the local worker's way) vs one Ray
task per expert on a local Ray cluster of N CPU workers (or N GPUs), then optionally the router.

    .venv/bin/python bench/cluster_local.py --dataset DIR [--experts deformation trajectory] [--iterations 200]
        [--downsample 2] [--device cpu --workers 2 | --device cuda --gpus 2] [--router-iterations 0] [--json F]

Rows: "local" (``backend.moe.train.train_run``), "ray cold" (first ``train_run_on_ray``: Ray starts its worker
processes, which import torch), "ray warm" (the same again into a new run folder: workers reused). Start-up of
the Ray cluster itself (``ray.init``) is printed apart. Each run starts from the same seeds, so the last column
checks that Ray trained the same parameters as the local run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.moe.train import TrainConfig, load_run_video, train_run
from backend.moe.train_router import RouterTrainConfig, train_router


def max_param_diff(a: Path, b: Path, experts: list[str]) -> float:
    diff = 0.0
    for e in experts:
        ma = torch.load(a / e / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
        mb = torch.load(b / e / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
        diff = max(diff, *((ma[k].float() - mb[k].float()).abs().max().item() for k in ma))
    return diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="N3V-layout folder (scripts/make_synthetic_dataset.py)")
    ap.add_argument("--experts", nargs="+", default=["deformation", "trajectory"])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--downsample", type=float, default=2.0)
    ap.add_argument("--points", type=int, default=2000, help="initial points of every expert")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--workers", type=int, default=2, help="CPU workers of the Ray cluster (--device cpu)")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs of the Ray cluster (--device cuda)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    ap.add_argument("--router-iterations", type=int, default=0, help="then train the router (0: no)")
    ap.add_argument("--work", default=None, help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.work or tempfile.mkdtemp(prefix="lw-cluster-bench-"))
    cfg = TrainConfig(iterations=a.iterations, downsample=a.downsample, min_points=a.points, max_points=a.points,
                      checkpoint_every=max(a.iterations // 4, 1), device=a.device, torch_threads=a.threads)
    router = RouterTrainConfig(iterations=a.router_iterations, device=a.device, torch_threads=a.threads) \
        if a.router_iterations and len(a.experts) >= 2 else None
    rows = []

    t0 = time.perf_counter()
    local = train_run(a.dataset, work / "local", a.experts, cfg)
    if router is not None:
        train_router(local, load_run_video(local), router)
    rows.append({"mode": "local (one after the other)", "workers": 1, "wall_s": time.perf_counter() - t0,
                 "max_param_diff": 0.0})

    import ray

    from backend.cluster.moe import train_run_on_ray

    t0 = time.perf_counter()
    if a.device == "cuda":
        ray.init(num_gpus=a.gpus, num_cpus=a.gpus + 1, include_dashboard=False, log_to_driver=False)
        workers = a.gpus
    else:
        ray.init(num_cpus=a.workers, num_gpus=0, include_dashboard=False, log_to_driver=False)
        workers = a.workers
    ray_start = time.perf_counter() - t0
    for label in ("ray cold", "ray warm"):
        out = work / label.replace(" ", "-")
        t0 = time.perf_counter()
        train_run_on_ray(a.dataset, out, a.experts, cfg, router=router)
        rows.append({"mode": f"{label} ({workers} {'GPU' if a.device == 'cuda' else 'CPU'} workers)",
                     "workers": workers, "wall_s": time.perf_counter() - t0,
                     "max_param_diff": max_param_diff(local, out, a.experts)})
    ray.shutdown()

    gpu = torch.cuda.get_device_name(0) if a.device == "cuda" else "CPU"
    print(f"{len(a.experts)} experts ({', '.join(a.experts)}) x {a.iterations} it, downsample {a.downsample}, "
          f"{a.points} points, {a.threads} torch thread(s) per process, device {gpu}"
          f"{f', router {a.router_iterations} it' if router else ''}; ray.init took {ray_start:.1f} s")
    print()
    print("| mode | wall-clock (s) | speed-up vs local | max abs param diff vs local |")
    print("|---|---|---|---|")
    base = rows[0]["wall_s"]
    for r in rows:
        print(f"| {r['mode']} | {r['wall_s']:.1f} | {base / r['wall_s']:.2f}x | {r['max_param_diff']:.2e} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "device": gpu, "ray_init_s": ray_start, "rows": rows},
                                           indent=1))


if __name__ == "__main__":
    main()
