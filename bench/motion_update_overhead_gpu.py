"""Where the motion update's time goes beyond its replayed steps (issue 22, the <= 0.1 s goal), on CUDA.

On the H100 (2026-12-07, eighth session) ``bench/motion_update_gpu.py``'s 40-step update took 0.059-0.070 s in its
timed expansions (a new field object each, after the alignment) but 0.043 s in its sweep (the same field object,
no alignment before it). This splits the two: the same fit, four times each, with a new or the same field object,
with or without the host alignment just before it, and the update with three eager steps before its capture
against one (the default after a process's first fit); then the graphed and the eager fit's relative error, three
times each (``tests/gpu``'s graphed-vs-eager test failed on that difference), the prediction gap of 10-step graphed
and eager fits from the same state against two eager ones, and a CPU + CUDA profile of one new-object fit after an
alignment, sorted by host time.

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

    def fits(new_object: bool, align: bool, config=field.config) -> list[float]:
        times = []
        for _ in range(4):
            f = type(field)(config).to(field.device) if new_object else field
            f.load_state_dict(start)
            sync(dev)
            if align:
                align_flow(new, prev, np.array([0.0, -10.0, 5.0]), index=index)
            t = time.perf_counter()
            f.fit(samples)
            sync(dev)
            times.append(time.perf_counter() - t)
        return times

    print(f"device {result['device']}\n\n| field object | alignment before | eager steps before the capture "
          "| update s (4 fits, twice) |\n|---|---|---|---|")
    for new_object, align, warmup in ((False, False, None), (False, True, None), (True, False, None),
                                      (True, True, None), (True, True, 3), (True, True, 1)):
        config = replace(field.config, graph_warmup=warmup)
        times = fits(new_object, align, config) + fits(new_object, align, config)
        key = f"{'new' if new_object else 'same'}_{'align' if align else 'no_align'}_warmup_{warmup or 'default'}"
        result["fits"][key] = times
        print(f"| {'new' if new_object else 'same'} | {'yes' if align else 'no'} | {warmup or 'default (1 after the first fit)'} | "
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

    result["graph_vs_eager_short"] = short_fits(cfg, pts, small, dev)

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


def prediction_gap(a, b, points) -> float:
    """RMS of the two fields' velocity difference at ``points`` over the RMS of ``b``'s velocity."""
    va, vb = a.velocity(points), b.velocity(points)
    return float(np.sqrt(np.square(va - vb).sum(1).mean() / np.square(vb).sum(1).mean()))


def short_fits(cfg, pts, samples, dev) -> list[dict]:
    """tests/gpu's graphed-vs-eager comparison: 10-step fits from the same initial field, and 10-step updates from
    the same fitted state; the prediction gap of graphed vs eager and of eager vs eager (the rounding of the atomic
    adds alone)."""
    small = replace(cfg, steps=120, update_steps=10, batch_size=8192)

    def make(graph: bool):
        return new_motion_field(pts, replace(small, cuda_graph=graph), device=dev)

    ref = make(False)
    ref.fit(samples)  # the state the updates start from (120 eager steps)
    fitted = {k: v.clone() for k, v in ref.state_dict().items()}
    out = []
    print("\n| 10 steps from the same state | graphed vs eager | eager vs eager |\n|---|---|---|")
    for stage in ("first fit", "update"):
        fields = {}
        for name, graph in (("graphed", True), ("eager", False), ("eager2", False)):
            fields[name] = make(graph)
            if stage == "update":
                fields[name].load_state_dict(fitted)
            fields[name].fit(samples, steps=10)
        row = {"stage": stage, "graphed_vs_eager": prediction_gap(fields["graphed"], fields["eager"], pts),
               "eager_vs_eager": prediction_gap(fields["eager2"], fields["eager"], pts)}
        out.append(row)
        print(f"| {stage} | {row['graphed_vs_eager']:.2e} | {row['eager_vs_eager']:.2e} |", flush=True)
    return out


if __name__ == "__main__":
    main()
