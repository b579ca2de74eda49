"""MoE-GS stage 2 results on a generated multi-view scene: every expert, the mixture, the pruned mixture and the
distilled expert on the held-out camera (cam00): PSNR, SSIM, FPS, Gaussians, size.

Steps: the Blender synthetic dataset (``scripts/make_synthetic_dataset.py``, made when missing), the three
experts trained with ``train.train_run`` (resumed when present), then ``run_mixture.run_mixture``: router
(experts frozen), gate-aware pruning, distillation into ``--student`` (with its fine-tuned-on-truth baseline
for the same number of extra steps), bake. With ``--joint`` the experts are fine-tuned with the router (stage 2
unfrozen) and the best expert, trained on the truth for as many extra steps, is reported as the fair baseline.
Prints a markdown table and writes a picture of the held-out view (ground truth | experts | MoE | pixel weights
coloured per expert: R deformation, G trajectory, B keyframe, Y embedding).

    .venv/bin/python bench/moe_mixture_results.py --dataset /tmp/moemix/small16 --run /tmp/moemix/run
        [--downsample 4] [--expert-iterations 500] [--router-iterations 300] [--gate field|param]
        [--router-lr 5e-3] [--joint [--expert-lr-scale 0.1]] [--student EXPERT]
        [--distill-iterations 300] [--prune-threshold 0.05] [--router-views 1 [--refit-iterations 2000]]
        [--seed 0] [--experts deformation trajectory keyframe [embedding]] [--device cpu] [--picture PATH]
        [--save-video V.npz | --video V.npz]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from backend.moe.data import MultiViewVideo
from backend.moe.evaluate import write_grid
from backend.moe.mixture import render_mixture
from backend.moe.router import RouterConfig
from backend.moe.run_mixture import MixtureRunConfig, run_mixture
from backend.moe.train import TrainConfig, prepare_run, train_expert
from backend.moe.train_router import RouterTrainConfig, evaluate_mixture, load_mixture, train_router
from backend.render.cameras import Camera
from backend.render.rasterize import RasterConfig

EXPERTS = ["deformation", "trajectory", "keyframe"]
PALETTE = {"deformation": ("R", (1, 0, 0)), "trajectory": ("G", (0, 1, 0)), "keyframe": ("B", (0, 0, 1)),
           "embedding": ("Y", (1, 1, 0))}  # pixel-weight picture: colour of each expert
SHORT = {"deformation": "deform", "trajectory": "traj", "keyframe": "keyfr", "embedding": "embed"}



def save_video(video: MultiViewVideo, path: Path) -> None:
    """The decoded video as plain arrays plus a JSON string (``load_video`` reads it with ``allow_pickle=False``)."""
    cams = video.cameras
    meta = {"names": video.names, "fps": video.fps, "source": video.source, "train": video.train, "test": video.test}
    extras = {f"extra_{k}": np.asarray(v) for k, v in video.extras.items()}
    np.savez(path, images=video.images, times=video.times, bounds=video.bounds, frame_numbers=video.frame_numbers,
             K=np.stack([c.K for c in cams]), world_to_cam=np.stack([c.world_to_cam for c in cams]),
             size=np.array([[c.width, c.height] for c in cams]), near_far=np.array([[c.near, c.far] for c in cams]),
             meta=np.array(json.dumps(meta)), **extras)


def load_video(path: Path) -> MultiViewVideo:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        cams = [Camera(K=K, world_to_cam=w2c, width=int(wh[0]), height=int(wh[1]), near=float(nf[0]), far=float(nf[1]))
                for K, w2c, wh, nf in zip(z["K"], z["world_to_cam"], z["size"], z["near_far"])]
        return MultiViewVideo(cameras=cams, names=meta["names"], images=z["images"], times=z["times"], fps=meta["fps"],
                              train=meta["train"], test=meta["test"], bounds=z["bounds"],
                              frame_numbers=z["frame_numbers"], source=meta["source"],
                              extras={k[6:]: z[k] for k in z.files if k.startswith("extra_")})

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="/tmp/moemix/small16", help="made (16 cameras) when missing")
    ap.add_argument("--run", default="/tmp/moemix/run")
    ap.add_argument("--downsample", type=float, default=4.0)
    ap.add_argument("--expert-iterations", type=int, default=500)
    ap.add_argument("--router-iterations", type=int, default=300)
    ap.add_argument("--gate", default="field", choices=["field", "param"])
    ap.add_argument("--router-lr", type=float, default=5e-3)
    ap.add_argument("--expert-bias", action=argparse.BooleanOptionalAction, default=True,
                    help="router: a learned logit per expert in every pixel (--no-expert-bias: the router before it)")
    ap.add_argument("--gate-decay", type=float, default=0.0, help="router: L2 of the per-Gaussian gates")
    ap.add_argument("--joint", action="store_true", help="fine-tune the experts with the router (stage 2)")
    ap.add_argument("--expert-lr-scale", type=float, default=0.1)
    ap.add_argument("--student", help="expert to distil the mixture into (default: deformation if it is one of "
                                      "--experts, else the first of them)")
    ap.add_argument("--distill-iterations", type=int, default=300)
    ap.add_argument("--prune-threshold", type=float, default=0.05)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--densify-from", type=int, default=50, help="a value above the iterations: no densification")
    ap.add_argument("--opacity-reset-every", type=int, default=0,
                    help="3DGS's opacity reset (and large-Gaussian pruning after it) every N expert steps (0: off)")
    ap.add_argument("--router-views", type=int, default=0,
                    help="training cameras the experts never see, for the router (0: router on the training views)")
    ap.add_argument("--refit-iterations", type=int, default=0,
                    help="with --router-views: after the router, the experts resume this many steps on every "
                         "training camera (the router's too) and the mixture keeps the router")
    ap.add_argument("--seed", type=int, default=0, help="the experts' training seed (camera/frame draws, noise)")
    ap.add_argument("--experts", nargs="+", default=EXPERTS, choices=list(PALETTE),
                    help="expert families of the mixture (add embedding for MoE-GS(n=4))")
    ap.add_argument("--mode", default="single", choices=["single", "multipass"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--experts-only", action="store_true",
                    help="train (or resume) the experts and stop: several processes can train one run's experts "
                         "side by side, then one run without this flag does stage 2 (bench/moe_device_runs.sh)")
    ap.add_argument("--picture", default="docs/images/moe_mixture_results.png", help="empty: no picture")
    ap.add_argument("--video", default="", help="a decoded MultiViewVideo (.npz written by --save-video, plain "
                                                 "arrays, never unpickled) to use instead of decoding the dataset "
                                                 "(machines without ffmpeg; the run folder must be prepared)")
    ap.add_argument("--save-video", default="", help="write the decoded MultiViewVideo here (.npz)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dataset, run = Path(args.dataset), Path(args.run)
    if not args.video and not dataset.exists():
        subprocess.run([".venv-blender/bin/python", "scripts/make_synthetic_dataset.py", "--out", str(dataset),
                        "--preset", "small", "--cameras", "16"], check=True)  # N3V's density (moe_mixture.md)
    t0 = time.perf_counter()
    cfg = TrainConfig(iterations=args.expert_iterations, downsample=args.downsample, densify_from=args.densify_from,
                      densify_every=50, device=args.device, torch_threads=args.threads,
                      router_views=args.router_views, opacity_reset_every=args.opacity_reset_every, seed=args.seed)
    if args.video:
        video = load_video(Path(args.video))
    else:
        run, video = prepare_run(dataset, run, args.experts, cfg)
    if args.save_video:
        save_video(video, Path(args.save_video))
    z = np.load(run / "points.npz")
    for name in args.experts:
        train_expert(video, name, run / name, z["points"], z["colors"], cfg,
                     progress=lambda f, m: print(f"  {m}", flush=True) if round(f * cfg.iterations) % 1000 == 0 else None)
    t_experts = time.perf_counter() - t0
    if args.experts_only:
        print(f"experts {args.experts} trained in {t_experts:.0f} s (incl. resume)")
        return
    t0 = time.perf_counter()
    if args.student is None:
        args.student = "deformation" if "deformation" in args.experts else args.experts[0]
    report = run_mixture(run, MixtureRunConfig(iterations=args.router_iterations, gate=args.gate,
                                               router_lr=args.router_lr, expert_bias=args.expert_bias,
                                               gate_decay=args.gate_decay, joint=args.joint,
                                               expert_lr_scale=args.expert_lr_scale, prune=True,
                                               prune_threshold=args.prune_threshold, distill=args.student,
                                               distill_iterations=args.distill_iterations,
                                               refit_iterations=args.refit_iterations, device=args.device, mode=args.mode,
                                               torch_threads=args.threads), video,
                         progress=lambda f, m: print(f"  {f:.2f} {m}", flush=True) if "step" not in m else None)
    t_stage2 = time.perf_counter() - t0
    if args.router_views and not args.refit_iterations:  # the same experts, router on their training views
        router = RouterConfig(gate=args.gate, lr=args.router_lr, expert_bias=args.expert_bias,
                              gate_decay=args.gate_decay)
        rcfg = RouterTrainConfig(iterations=args.router_iterations, router=router, mode=args.mode, views="train",
                                 device=args.device, torch_threads=args.threads)
        path = train_router(run, video, rcfg, out=run / "mixture_train_views" / "mixture.pt")
        report["moe_train_views"] = evaluate_mixture(load_mixture(path, report["device"])[0], video,
                                                     RasterConfig(background=cfg.background), args.mode)
    w, h = video.size
    print(f"\ndataset {dataset} ({len(video.cameras)} cameras, {video.num_frames} frames, {w}x{h}), held-out "
          f"{[video.names[c] for c in video.test]}, device {report['device']}; experts {args.expert_iterations} "
          f"steps each ({t_experts:.0f} s incl. resume), stage 2 {t_stage2:.0f} s")
    print("| model | PSNR (dB) | SSIM | FPS | Gaussians | size (MB) |")
    print("|---|---|---|---|---|---|")
    rows = [(n + (f" (stage 1 + {args.refit_iterations} steps on every training camera)" if args.refit_iterations
                  else ""), report["experts"][n]) for n in args.experts]
    rows += [(f"{n} before the refit (stage 1)", report["experts_before_refit"][n]) for n in args.experts
             if args.refit_iterations]
    moe_name = f"MoE ({args.gate} router{', joint' if args.joint else ''}, {args.router_iterations} steps)"
    if args.joint:
        jb = report["joint_baseline"]
        rows += [(f"{jb['expert']} + {args.router_iterations} steps on truth (joint's baseline)", jb)]
    if args.router_views:
        meta = json.loads((run / "run.json").read_text())
        moe_name += (f", router on {', '.join(meta['router_views'])} (unseen by the stage-1 experts"
                     f"{', then refit' if args.refit_iterations else ''})")
    if args.router_views and not args.refit_iterations:
        rows += [(f"MoE ({args.gate} router, {args.router_iterations} steps on the experts' training views)",
                  report["moe_train_views"])]
    rows += [(moe_name, report["moe"]), (f"MoE pruned (s < {args.prune_threshold} px)",
                                                             report["pruned"]),
             (f"{args.student} + {args.distill_iterations} steps on truth", report["finetuned"]),
             (f"{args.student} distilled ({args.distill_iterations} steps on MoE)", report["distilled"])]
    for name, r in rows:
        print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['fps']:.1f} | {r['num_gaussians']} | "
              f"{r['size_bytes'] / 1e6:.2f} |")
    best = max(report["experts"][n]["psnr"] for n in args.experts)
    if args.joint:
        print(f"MoE - best expert trained as long: {report['moe']['psnr'] - report['joint_baseline']['psnr']:+.2f} dB")
    print(f"MoE - best stage-1 expert: {report['moe']['psnr'] - best:+.2f} dB; pruned removed "
          f"{report['pruned']['before'] - report['pruned']['after']} of {report['pruned']['before']} Gaussians "
          f"({report['pruned']['removed']})")

    if not args.picture:
        return
    mixture, _ = load_mixture(run / "mixture" / "mixture.pt", report["device"])
    frames = sorted({0, video.num_frames // 2, video.num_frames - 1})
    cam = video.cameras[video.test[0]]
    weights = []
    with torch.no_grad():
        for f in frames:
            t = float(video.times[f])
            out = render_mixture(mixture.gaussians_at(t), mixture.router, cam, t, RasterConfig())
            colours = torch.tensor([PALETTE[n][1] for n in mixture.names], dtype=out.weights.dtype)
            wk = torch.einsum("khw,kc->hwc", out.weights.cpu(), colours).clamp(0, 1).numpy()
            weights.append((wk * 255).round().astype(np.uint8))

    def col(r):
        return [(r["renders"][f].numpy() * 255).round().astype(np.uint8) for f in frames]

    columns = [[video.images[video.test[0], f] for f in frames]] + [col(report["experts"][n]) for n in args.experts]
    columns += [col(report["moe"]), weights]
    Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
    legend = "w: " + " ".join(f"{PALETTE[n][0]}={SHORT[n]}" for n in mixture.names)
    write_grid(Path(args.picture), columns, ["truth", *(SHORT[n] for n in args.experts), "MoE", legend],
               [f"t={video.times[f]:.2f}" for f in frames])
    print(f"picture: {args.picture}")


if __name__ == "__main__":
    sys.exit(main())
