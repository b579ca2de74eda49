"""Stage 2's router alone over a run's trained experts, then its held-out PSNR: compare router options fast.

    python3 bench/moe_router_only.py --run RUN [--iterations 300] [--gate param] [--no-expert-bias]
        [--gate-decay 0] [--out DIR] [--device cpu] [--threads 2]

RUN: a MoE-GS run folder with two or more trained experts (bench/moe_mixture_results.py --experts-only, or
bench/moe_device_runs.sh phase 1: run.json lists one expert per process, so every expert folder with a checkpoint
is used). Trains ``train_router`` (experts frozen, the training views) into DIR (default RUN/router_only/LABEL,
never the run's own mixture/), then prints the mixture's PSNR on the held-out camera over all frames, each expert's
on the same images (the best one's margin), and the learned per-expert bias as blend weights. No pruning, distillation or bake: the figures of
docs/bench/moe_mixture.md "Router prior" came from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backend.errors import InvalidInput
from backend.moe.evaluate import checkpointed_experts, render_expert
from backend.moe.router import RouterConfig
from backend.moe.train import TrainConfig, load_run_video, read_run
from backend.moe.train_router import RouterTrainConfig, evaluate_mixture, load_mixture, score_renders, train_router
from backend.render.rasterize import RasterConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--gate", default="param", choices=["field", "param"])
    ap.add_argument("--expert-bias", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--gate-decay", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    label = f"{a.gate}_{'bias' if a.expert_bias else 'nobias'}_decay{a.gate_decay:g}_{a.iterations}"
    out = a.out or a.run / "router_only" / label
    try:
        meta = read_run(a.run)
        names = checkpointed_experts(a.run)
        if len(names) < 2:
            raise InvalidInput(f"{a.run} has {len(names)} trained expert(s); a mixture needs at least two")
        if sorted(meta["experts"]) != names:  # one process per expert rewrote run.json with its own name
            tmp = a.run / "run.json.tmp"  # train_router reads the list from run.json: replaced whole, never half-written
            tmp.write_text(json.dumps({**meta, "experts": names}, indent=1))
            os.replace(tmp, a.run / "run.json")
        router = RouterConfig(gate=a.gate, lr=a.lr, expert_bias=a.expert_bias, gate_decay=a.gate_decay)
        cfg = RouterTrainConfig(iterations=a.iterations, router=router, views="train", device=a.device,
                                torch_threads=a.threads)
        video = load_run_video(a.run)
        t0 = time.perf_counter()
        path = train_router(a.run, video, cfg, out=out / "mixture.pt")
    except InvalidInput as exc:
        raise SystemExit(str(exc)) from None
    t_router = time.perf_counter() - t0
    mixture, _ = load_mixture(path, a.device)
    raster = RasterConfig(background=TrainConfig.from_dict(meta["train_config"]).background)
    moe = evaluate_mixture(mixture, video, raster)
    experts = {}
    for name, e in zip(mixture.names, mixture.experts):  # each expert alone, on the same held-out images
        experts[name] = score_renders(lambda c, f, e=e: render_expert(e, video, c, f, raster), video,
                                      torch.device(a.device))["psnr"]
    best = max(experts, key=experts.get)
    line = (f"{a.run.name} {label}: MoE {moe['psnr']:.2f} dB on the held-out view ({moe['psnr'] - experts[best]:+.2f} "
            f"vs {best} {experts[best]:.2f})")
    if mixture.router.config.expert_bias:
        blend = mixture.router.bias.detach().softmax(0).tolist()
        line += "; bias blend " + ", ".join(f"{n} {w:.2f}" for n, w in zip(mixture.names, blend))
    print(f"{line}; router {t_router:.0f} s ({cfg.iterations} steps)")


if __name__ == "__main__":
    main()
