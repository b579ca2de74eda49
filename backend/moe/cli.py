"""``lw moe``: train, evaluate and export MoE-GS experts.

    lw moe train DATASET --out RUN [--experts deformation trajectory keyframe] [--iterations N] [--downsample D]
                 [--frames START END] [--router-views K] [--ray auto|local|ADDRESS]
    lw moe router RUN [--iterations N] [--router volume|volume_pixel|pixel] [--gate param|field] [--seed S]
                  [--prune [--prune-method peak|gate_gradient] [--prune-threshold P] [--prune-fraction F]
                   [--prune-router-only]]
                  [--distill EXPERT [--distill-method gated|renders]] [--refit-iterations N] [--joint]
    lw moe eval RUN [--experts ...]
    lw moe export RUN --out SEQ.lw4d [--expert NAME] [--frames T] [--replace]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _progress(fraction: float, message: str) -> None:
    print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    """Train experts on an N3V / Technicolor folder into a run folder (resumes an existing run)."""
    from .train import TrainConfig, train_run

    cfg = TrainConfig(iterations=args.iterations, downsample=args.downsample, torch_threads=args.threads,
                      router_views=args.router_views, frames=tuple(args.frames) if args.frames else None)
    if args.ray:  # backend/cluster: one Ray task per expert, then the router
        from ..cluster.moe import train_run_with_ray

        run = train_run_with_ray(args.ray, args.dataset, args.out, args.experts, cfg, args.router_iterations,
                                 progress=_progress)
    else:
        run = train_run(args.dataset, args.out, args.experts, cfg, progress=_progress)
    print(json.dumps({"run": str(run), "experts": args.experts}))
    return 0


def cmd_router(args: argparse.Namespace) -> int:
    """Stage 2 over a trained run: the router (then pruning, distillation, refit as asked), the held-out scores of
    every expert and of the mixture, and the bake <run>/mixture/mixture.lw4d; writes <run>/mixture/report.json."""
    from .run_mixture import MixtureRunConfig, run_mixture

    cfg = MixtureRunConfig(iterations=args.iterations, router=args.router, gate=args.gate, seed=args.seed,
                           joint=args.joint, prune=args.prune, prune_method=args.prune_method,
                           prune_threshold=args.prune_threshold, prune_fraction=args.prune_fraction,
                           prune_joint=not args.prune_router_only, distill=args.distill or "",
                           distill_iterations=args.distill_iterations, distill_method=args.distill_method,
                           refit_iterations=args.refit_iterations, bake=not args.no_bake, torch_threads=args.threads)
    report = run_mixture(Path(args.run), cfg, progress=_progress)
    rows = [(name, r) for name, r in report["experts"].items()]
    rows += [(key, report[key]) for key in ("moe", "pruned", "baked", "distilled", "finetuned") if key in report]
    best = max(r["psnr"] for r in report["experts"].values())
    for name, r in rows:
        print(f"{name:12s} PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.4f}  FPS {r['fps']:7.1f}  "
              f"{r['num_gaussians']} Gaussians  {r['size_bytes'] / 1e6:.2f} MB")
    print(f"MoE - best expert: {report['moe']['psnr'] - best:+.2f} dB; report: {args.run}/mixture/report.json")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a run on its held-out camera(s); prints the report and writes report.json + grid.png."""
    from .evaluate import evaluate_run

    report = evaluate_run(args.run, args.experts or None)
    for name, r in report["experts"].items():
        lp = f"{r['lpips']:.4f}" if r["lpips"] is not None else "n/a"
        print(f"{name:12s} PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.4f}  LPIPS {lp}  FPS {r['fps']:7.1f}  "
              f"{r['num_gaussians']} Gaussians  {r['size_bytes'] / 1e6:.2f} MB  train {r['train_time_s']:.0f} s")
    print(f"LPIPS: {report['lpips']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Bake one trained expert to a .lw4d sequence."""
    from .export import export_expert

    path = export_expert(args.run, args.out, args.expert, args.frames, replace=args.replace)
    print(json.dumps({"sequence": str(path)}))
    return 0


def add_parser(subparsers) -> None:
    moe = subparsers.add_parser("moe", help="MoE-GS: dynamic Gaussian experts on multi-view video")
    sub = moe.add_subparsers(dest="moe_command", required=True)
    train = sub.add_parser("train", help="train experts", description=cmd_train.__doc__)
    train.add_argument("dataset")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--experts", nargs="+", default=["deformation", "trajectory", "keyframe"])
    train.add_argument("--iterations", type=int, default=3000)
    train.add_argument("--downsample", type=float, default=1.0)
    train.add_argument("--frames", type=int, nargs=2, metavar=("START", "END"),
                       help="train on frames [START, END) (N3V: video frame indices; Technicolor: file frame numbers)")
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    train.add_argument("--router-views", type=int, default=0,
                       help="training cameras the experts never see, kept for the router (0: none)")
    train.add_argument("--ray", metavar="auto|local|ADDRESS",
                       help="train the experts in parallel on a Ray cluster (docs/SCALING.md), then the router")
    train.add_argument("--router-iterations", type=int, default=2000,
                       help="router steps after the experts, with --ray and two or more experts (0: none)")
    train.set_defaults(func=cmd_train)
    rt = sub.add_parser("router", help="train the pixel router over a trained run (stage 2)",
                        description=cmd_router.__doc__)
    rt.add_argument("run")
    rt.add_argument("--iterations", type=int, default=2000, help="router steps (experts frozen)")
    rt.add_argument("--router", choices=["volume", "volume_pixel", "pixel"], default="volume",
                    help="volume-only gates (the best on the H100 ablation), MoE-GS's volume-aware pixel router, or "
                         "the pixel-only ablation")
    rt.add_argument("--gate", choices=["param", "field"], default="param",
                    help="the volume router's gate: a free per-Gaussian logit, or an MLP on encoded position and time")
    rt.add_argument("--seed", type=int, default=0, help="router seed (camera draws, decoder initialisation)")
    rt.add_argument("--joint", action="store_true", help="also fine-tune the experts (learning rates x 0.1)")
    rt.add_argument("--prune", action="store_true", help="remove the Gaussians that never win the gate")
    rt.add_argument("--prune-method", choices=["peak", "gate_gradient"], default="peak",
                    help="peak: pixels painted into the blend in the best view (ours); gate_gradient: MoE-GS's score")
    rt.add_argument("--prune-threshold", type=float, default=0.05,
                    help="peak: pixels in the best training view; gate_gradient: fraction of the mean score")
    rt.add_argument("--prune-fraction", type=float, default=0.5,
                    help="share of the Gaussians pruned at least, lowest scores first (0: the threshold alone)")
    rt.add_argument("--prune-router-only", action="store_true",
                    help="after pruning, fine-tune the router alone (default: the experts too, learning rates x 0.1)")
    rt.add_argument("--distill", help="expert family to distil the mixture into")
    rt.add_argument("--distill-iterations", type=int, default=1000)
    rt.add_argument("--distill-method", choices=["gated", "renders"], default="gated",
                    help="gated: MoE-GS's gate-weighted loss; renders: learn the mixture's images (ours)")
    rt.add_argument("--refit-iterations", type=int, default=0,
                    help="runs trained with --router-views: the experts then train this many steps on every camera")
    rt.add_argument("--no-bake", action="store_true", help="skip the .lw4d bake of the mixture")
    rt.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    rt.set_defaults(func=cmd_router)
    ev = sub.add_parser("eval", help="evaluate a run on the held-out camera", description=cmd_eval.__doc__)
    ev.add_argument("run")
    ev.add_argument("--experts", nargs="+")
    ev.set_defaults(func=cmd_eval)
    ex = sub.add_parser("export", help="bake an expert to .lw4d", description=cmd_export.__doc__)
    ex.add_argument("run")
    ex.add_argument("--out", required=True)
    ex.add_argument("--replace", action="store_true", help="replace the .lw4d an earlier export wrote at --out")
    ex.add_argument("--expert")
    ex.add_argument("--frames", type=int)
    ex.set_defaults(func=cmd_export)
