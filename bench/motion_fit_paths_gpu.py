"""The motion field's fit through each optimiser path on CUDA, to find which one changes the result.

On the H100 (2026-12-07, ninth session) the graphed fit of ``tests/gpu``'s case (50k samples of a rotating plane,
120 steps, batch 8192) ended at a relative error of 0.0109-0.0113 in three runs and the eager fit at 0.0067-0.0076,
while 10 steps of each from one state agree to 1e-6. The graphed path differs from the eager one in two ways: the
optimisers (the table's Adam in one Triton kernel, ``TableAdam``, and torch's fused Adam for the MLP, against
torch's foreach Adam for both) and the replay of a captured step. This fits the case through each combination,
three times, after 20 / 40 / 80 / 120 steps from the initial field; then one Adam step of ``TableAdam`` and of
torch's Adam on gradients from 1e-30 to 1 (flush-to-zero of tiny squares, rounding of the update).

    python bench/motion_fit_paths_gpu.py [--json out.json] [--dry]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from gpu_common import dump, use_code_tree

use_code_tree()

import numpy as np
import torch

from backend.world.motion.field import MotionFieldConfig, new_motion_field
from backend.world.motion.lift import SceneFlow

# (name, cuda_graph, eager steps before the capture (None: the default), the table's Adam: "table" (TableAdam) or
# "torch" (torch's fused Adam, as for an encoding that is not Triton's))
PATHS = (("eager: torch foreach Adam", False, None, "torch"),
         ("eager steps, TableAdam + fused Adam", True, 10_000, "table"),
         ("eager steps, fused Adam for the table too", True, 10_000, "torch"),
         ("graphed (default): TableAdam + fused Adam", True, None, "table"),
         ("graphed, fused Adam for the table too", True, None, "torch"))


def case(n: int = 50_000):
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-5, 5, (n, 2)), np.zeros(n)]
    vel = np.array([0.04, 0.02, 0.0]) + np.cross([0, 0, 0.015], pts)
    return pts, SceneFlow(pts, vel, np.zeros(n, np.uint8), np.zeros(n, np.int32))


def fit_once(pts, samples, cfg, graph, warmup, table_adam, steps, dev) -> float:
    f = new_motion_field(pts, replace(cfg, cuda_graph=graph, graph_warmup=warmup), device=dev)
    if table_adam == "torch":  # the fit uses TableAdam only for the Triton encoding (field._train)
        f.encoding.name = "triton (TableAdam off)"
    return f.fit(samples, steps=steps).relative_error


def adam_on_tiny_gradients(dev) -> list[dict]:
    """One step of TableAdam and of torch's Adam (same lr, betas, eps as the field) on gradients 1e-30 .. 1."""
    from backend.fields.hashgrid_triton import TableAdam

    g = torch.logspace(-30, 0, 31, dtype=torch.float64).float().to(dev)
    out = []
    for sign in (1.0, -1.0):
        a = torch.zeros(len(g), device=dev, requires_grad=True)
        b = torch.zeros(len(g), device=dev, requires_grad=True)
        a.grad, b.grad = sign * g.clone(), sign * g.clone()
        TableAdam(a, lr=1e-2, betas=(0.9, 0.99), eps=1e-15).step()
        torch.optim.Adam([b], lr=1e-2, betas=(0.9, 0.99), eps=1e-15).step()
        for gi, da, db in zip(g.tolist(), a.detach().tolist(), b.detach().tolist()):
            out.append({"grad": sign * gi, "table_adam": da, "torch_adam": db})
    print("\n| gradient | TableAdam step | torch Adam step |\n|---|---|---|")
    for row in out[::3]:
        print(f"| {row['grad']:.0e} | {row['table_adam']:.3e} | {row['torch_adam']:.3e} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--dry", action="store_true", help="CPU, a small field, 2 runs (checks the script)")
    args = ap.parse_args()
    dev = "cpu" if args.dry else "cuda"
    cfg = MotionFieldConfig(steps=120, update_steps=40, batch_size=8192)
    if args.dry:
        cfg = replace(cfg, encoding=replace(cfg.encoding, n_levels=4, log2_table_size=14, backend="torch"))
    pts, samples = case(5_000 if args.dry else 50_000)
    fit_once(pts, samples, cfg, True, None, "table", 20, dev)  # compiles, autotunes; the device's first fit
    steps = (20, 40) if args.dry else (20, 40, 80, 120)
    runs = 2 if args.dry else 3
    result = {"device": "cpu" if args.dry else torch.cuda.get_device_name(), "paths": []}
    print(f"device {result['device']}\n\n| path | " + " | ".join(f"rel. error after {s} steps ({runs} runs)" for s in steps)
          + " |\n|---|" + "---|" * len(steps))
    for name, graph, warmup, table_adam in PATHS:
        if args.dry and table_adam == "table" and graph:
            continue  # TableAdam is CUDA only
        errs = {s: [fit_once(pts, samples, cfg, graph, warmup, table_adam, s, dev) for _ in range(runs)]
                for s in steps}
        result["paths"].append({"path": name, "errors": {str(s): v for s, v in errs.items()}})
        print(f"| {name} | " + " | ".join(" ".join(f"{e:.4f}" for e in errs[s]) for s in steps) + " |", flush=True)
    if not args.dry:
        result["tiny_gradients"] = adam_on_tiny_gradients(dev)
    dump(args.json, {"bench": "motion_fit_paths_gpu", **result})


if __name__ == "__main__":
    main()
