"""Where the motion update's time goes beyond its replayed steps (issue 22, the <= 0.1 s goal), on CUDA.

On the H100 (2026-12-07, eighth session) ``bench/motion_update_gpu.py``'s 40-step update took 0.059-0.070 s in its
timed expansions (a new field object each, after the alignment) but 0.043 s in its sweep (the same field object,
no alignment before it). This splits the two: the same fit, four times each, with a new or the same field object,
with or without the host alignment just before it; then the graphed and the eager fit's relative error, three
times each (``tests/gpu``'s graphed-vs-eager test failed on that difference), and a CPU + CUDA profile of one
new-object fit after an alignment, sorted by host time.

    python bench/motion_update_overhead_gpu.py [--json out.json] [--dry]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from gpu_common import dump, use_code_tree

use_code_tree()

import numpy as np
import torch
from motion_update_gpu import sync, synthetic_case

from backend.world.motion.align import align_flow, match_index
from backend.world.motion.field import MotionFieldConfig, new_motion_field
from backend.world.motion.lift import SceneFlow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--dry", action="store_true", help="CPU, a small field (checks the script)")
    args = ap.parse_args()
    dev = "cpu" if args.dry else "cuda"
    cfg = MotionFieldConfig()
    if args.dry:
        cfg = replace(cfg, steps=20, update_steps=10, batch_size=4096,
                      encoding=replace(cfg.encoding, n_levels=4, log2_table_size=14, backend="torch"))
    prev, new, _, _ = synthetic_case(*((20_000, 5_000) if args.dry else (200_000, 50_000)))
    field = new_motion_field(np.r_[prev.points, new.points], cfg, device=dev)
    field.fit(prev)
    sync(dev)
    start = {k: v.clone() for k, v in field.state_dict().items()}
    samples = SceneFlow.concatenate([prev, align_flow(new, prev, np.array([0.0, -10.0, 5.0])).flow])
    index = match_index(prev)
    result = {"device": "cpu" if args.dry else torch.cuda.get_device_name(), "fits": {}, "graph_vs_eager": []}

    def fits(new_object: bool, align: bool) -> list[float]:
        times = []
        for _ in range(4):
            f = type(field)(field.config).to(field.device) if new_object else field
            f.load_state_dict(start)
            sync(dev)
            if align:
                align_flow(new, prev, np.array([0.0, -10.0, 5.0]), index=index)
            t = time.perf_counter()
            f.fit(samples)
            sync(dev)
            times.append(time.perf_counter() - t)
        return times

    print(f"device {result['device']}\n\n| field object | alignment before | update s (4 fits, twice) |\n|---|---|---|")
    for new_object in (False, True):
        for align in (False, True):
            times = fits(new_object, align) + fits(new_object, align)
            result["fits"][f"{'new' if new_object else 'same'}_{'align' if align else 'no_align'}"] = times
            print(f"| {'new' if new_object else 'same'} | {'yes' if align else 'no'} | "
                  f"{' '.join(f'{v:.4f}' for v in times)} |", flush=True)

    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-5, 5, (50_000, 2)), np.zeros(50_000)]
    vel = np.array([0.04, 0.02, 0.0]) + np.cross([0, 0, 0.015], pts)
    small = SceneFlow(pts, vel, np.zeros(len(pts), np.uint8), np.zeros(len(pts), np.int32))
    print("\n| fit (tests/gpu's case) | first fit rel. error | update rel. error |\n|---|---|---|")
    for graph in (False, True) * 3:
        f = new_motion_field(pts, replace(cfg, cuda_graph=graph, steps=120, update_steps=40, batch_size=8192),
                             device=dev)
        first, update = f.fit(small).relative_error, f.fit(small).relative_error
        result["graph_vs_eager"].append({"graph": graph, "first": first, "update": update})
        print(f"| {'graphed' if graph else 'eager'} | {first:.4f} | {update:.4f} |", flush=True)

    f = type(field)(field.config).to(field.device)
    f.load_state_dict(start)
    align_flow(new, prev, np.array([0.0, -10.0, 5.0]), index=index)
    sync(dev)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([] if args.dry else [torch.profiler.ProfilerActivity.CUDA])
    with torch.profiler.profile(activities=activities) as prof:
        f.fit(samples)
        sync(dev)
    result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    print(result["profile"])
    dump(args.json, {"bench": "motion_update_overhead_gpu", **result})


if __name__ == "__main__":
    main()
