"""The motion field's fit through each optimiser path on CUDA, to find which one changes the result.

On the H100 (2026-12-07, ninth session) the graphed fit of ``tests/gpu``'s case (50k samples of a rotating plane,
120 steps, batch 8192) ended at a relative error of 0.0109-0.0113 in three runs and the eager fit at 0.0067-0.0076,
while 10 steps of each from one state agree to 1e-6. The graphed path differs from the eager one in two ways: the
optimisers (the table's Adam in one Triton kernel, ``TableAdam``, and torch's fused Adam for the MLP, against
torch's foreach Adam for both) and the replay of a captured step. This fits the case through each combination,
three times, after 20 / 40 / 80 / 120 steps from the initial field; then one Adam step of ``TableAdam`` and of
torch's Adam on gradients from 1e-30 to 1 (flush-to-zero of tiny squares); then 120 steps of one gradient sequence
and the graphed fit with this tree's ``TableAdam`` and with the one before the ninth session (Triton's default
division and sqrt, exp2 / log2 bias corrections), which the first run of this script found guilty.

    python bench/motion_fit_paths_gpu.py [--json out.json] [--dry] [--paths-only]
"""

from __future__ import annotations

import argparse
import math
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


try:  # the CUDA image has Triton; the CPU environment does not (--dry needs none of this)
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:
    @triton.jit
    def _adam_before(p_ptr, g_ptr, m_ptr, v_ptr, step_ptr, N, lr, beta1, beta2, eps, BLOCK: tl.constexpr):
        """TableAdam's kernel before the ninth session: Triton's default division and sqrt, the bias corrections
        from exp2 / log2 of the step count."""
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = i < N
        t = tl.load(step_ptr)
        g = tl.load(g_ptr + i, mask=ok, other=0.0)
        m = beta1 * tl.load(m_ptr + i, mask=ok, other=0.0) + (1.0 - beta1) * g
        v = beta2 * tl.load(v_ptr + i, mask=ok, other=0.0) + (1.0 - beta2) * g * g
        bc1 = 1.0 - tl.exp2(t * tl.log2(beta1))
        bc2 = 1.0 - tl.exp2(t * tl.log2(beta2))
        p = tl.load(p_ptr + i, mask=ok, other=0.0) - (lr / bc1) * m / (tl.sqrt(v) / tl.sqrt(bc2) + eps)
        tl.store(m_ptr + i, m, mask=ok)
        tl.store(v_ptr + i, v, mask=ok)
        tl.store(p_ptr + i, p, mask=ok)


class TableAdamBefore:
    """``hashgrid_triton.TableAdam`` as it was before the ninth session (its kernel above)."""

    def __init__(self, param, lr, betas=(0.9, 0.999), eps=1e-8, block=2048):
        self.param, self.lr, self.betas, self.eps, self.block = param, float(lr), betas, float(eps), block
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.step_count = torch.zeros((), dtype=torch.float32, device=param.device)

    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        self.step_count += 1
        n = self.param.numel()
        _adam_before[(triton.cdiv(n, self.block),)](
            self.param.detach(), grad.contiguous(), self.exp_avg, self.exp_avg_sq, self.step_count, n, self.lr,
            self.betas[0], self.betas[1], self.eps, BLOCK=self.block, num_warps=8)
        torch.autograd.graph.increment_version(self.param)


def adam_on_gradient_sequences(dev, classes: dict, n: int = 1 << 20) -> list[dict]:
    """120 steps of the same random gradients (log-uniform 1e-12 .. 1e-3, half of them 0 each step) through each
    TableAdam and torch's Adam: max and mean |difference| of the parameters over max |parameter|."""
    gen = torch.Generator(device=dev).manual_seed(0)
    init = torch.randn(n, device=dev, generator=gen) * 1e-4
    grads = []
    for _ in range(120):
        g = torch.randn(n, device=dev, generator=gen) * torch.exp(torch.empty(n, device=dev).uniform_(
            math.log(1e-12), math.log(1e-3), generator=gen))
        grads.append(torch.where(torch.rand(n, device=dev, generator=gen) < 0.5, 0.0, g))
    ref = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    for g in grads:
        ref.grad = g.clone()
        opt.step()
    out = []
    print("\n| TableAdam | 120 steps vs torch Adam: max abs diff / max abs param | mean |\n|---|---|---|")
    for name, cls in classes.items():
        p = init.clone().requires_grad_(True)
        mine = cls(p, lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
        for g in grads:
            p.grad = g.clone()
            mine.step()
        d = (p.detach() - ref.detach()).abs()
        scale = float(ref.detach().abs().max())
        out.append({"table_adam": name, "max": float(d.max()) / scale, "mean": float(d.mean()) / scale})
        print(f"| {name} | {out[-1]['max']:.2e} | {out[-1]['mean']:.2e} |", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--dry", action="store_true", help="CPU, a small field, 2 runs (checks the script)")
    ap.add_argument("--paths-only", action="store_true", help="the paths' table alone (e.g. under CUDA_LAUNCH_BLOCKING=1)")
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
    if not args.dry and not args.paths_only:
        import backend.fields.hashgrid_triton as ht

        result["tiny_gradients"] = adam_on_tiny_gradients(dev)
        classes = {"this tree (IEEE division and sqrt, float64 bias corrections)": ht.TableAdam,
                   "before (Triton's default division and sqrt, exp2 / log2)": TableAdamBefore}
        result["gradient_sequences"] = adam_on_gradient_sequences(dev, classes)
        # the default graphed fit with each TableAdam (field._train imports it from hashgrid_triton at each fit)
        print("\n| TableAdam in the graphed fit | rel. error after 120 steps (3 runs) |\n|---|---|")
        original = ht.TableAdam
        try:
            for name, cls in classes.items():
                ht.TableAdam = cls
                errs = [fit_once(pts, samples, cfg, True, None, "table", 120, dev) for _ in range(3)]
                result.setdefault("graphed_by_table_adam", {})[name] = errs
                print(f"| {name} | {' '.join(f'{e:.4f}' for e in errs)} |", flush=True)
        finally:
            ht.TableAdam = original
    dump(args.json, {"bench": "motion_fit_paths_gpu", **result})


if __name__ == "__main__":
    main()
