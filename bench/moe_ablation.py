"""MoE-GS III on one trained run: the router ablation, pruning and distillation next to the paper's, the baked cloud.

    python3 bench/moe_ablation.py --run RUN [--kinds volume_pixel volume pixel] [--seeds 0 1] [--iterations 2000]
        [--prune-fractions 0.3 0.5 0.6 0.7] [--distill-iterations 500] [--student best] [--device cuda]
        [--deadline EPOCH_S] [--out RESULT.json] [--picture PNG]

RUN: a MoE-GS run folder whose experts are trained (``bench/moe_mixture_results.py --experts-only``, one process per
expert, as ``bench/moe_ablation_device.sh`` does). On RUN's held-out camera(s), every frame:

1. each expert alone (PSNR, SSIM, FPS, size; LPIPS when ``evaluate`` can load it offline, else why not);
2. the router ablation: for every seed and kind (``router.RouterConfig.kind``: volume_pixel = the paper's
   volume-aware pixel router with its recipe; volume = our splatted per-Gaussian gate, Adam, expert bias;
   pixel = the decoder on ray and time only), ``train_router`` for ``--iterations`` steps on the training
   views, experts frozen, then the mixture's scores and its margin over the best expert;
3. pruning of the first seed's default-kind mixture by both scores (``prune``: our peak contribution, the paper's
   gate gradient): the Gaussians removed and the PSNR lost at each fraction of ``--prune-fractions`` (the lowest
   scores go first) and at each method's default threshold, right after the removal and after ``--prune-finetune``
   router steps on what is left (``run_mixture``'s recipe), against the unpruned mixture given the same steps
   (``--prune-joint``: also with the experts fine-tuned in those steps, at the 50 % and default peak cuts);
   the default-threshold peak-pruned mixture is saved as RUN/ablation/pruned.pt for ``bench/moe_fps.py``;
4. distillation into ``--student`` (``best``: the best expert) with both losses (``distill``: "renders", "gated")
   against the same expert given the same steps on the truth;
5. the mixture baked into one cloud (``mixture.bake_mixture``: what the add-on imports for "MoE") and scored.

Every part writes its rows into ``--out`` as soon as it is done, and a part that would start after ``--deadline``
(seconds since the epoch) is skipped and named in the JSON: a device call cut short still returns what it measured.
Prints one markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backend.errors import InvalidInput
from backend.moe.distill import DistillConfig, distill, finetune_on_truth
from backend.moe.evaluate import _lpips_model, checkpointed_experts, render_expert, write_grid
from backend.moe.mixture import bake_mixture, render_mixture
from backend.moe.prune import gate_gradient_scores, gate_scores, prune_mixture, quantile_cut
from backend.moe.router import RouterConfig
from backend.moe.run_mixture import score_sequence
from backend.moe.train import TrainConfig, load_checkpoint, load_run_video, read_run, resolve_device
from backend.moe.train_router import (
    RouterTrainConfig,
    evaluate_mixture,
    load_mixture,
    save_mixture,
    score_renders,
    train_router,
)
from backend.render.rasterize import RasterConfig

KIND_OPTIONS = {"volume_pixel": {}, "volume": {"gate": "param"}, "pixel": {}}  # volume: the gate of our H100 runs


def _row(scores: dict, **extra) -> dict:
    return {k: v for k, v in {**scores, **extra}.items() if k != "renders"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--kinds", nargs="+", default=list(KIND_OPTIONS), choices=list(KIND_OPTIONS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--prune-fractions", type=float, nargs="*", default=[0.3, 0.5, 0.6, 0.7])
    ap.add_argument("--prune-threshold", type=float, default=0.05, help="the default threshold of both methods")
    ap.add_argument("--prune-finetune", type=int, default=200, help="router steps after each pruning")
    ap.add_argument("--prune-joint", action="store_true",
                    help="also fine-tune the experts with the router after the 50 %% and default-threshold peak cuts "
                         "(``joint``, expert learning rates x 0.1), against the unpruned mixture given the same")
    ap.add_argument("--distill-iterations", type=int, default=500)
    ap.add_argument("--student", default="best", help="expert to distil into; best: the best expert alone")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds since the epoch")
    ap.add_argument("--parts", nargs="*", default=["pruning", "distillation", "bake"],
                    choices=["pruning", "distillation", "bake"], help="what follows the routers")
    ap.add_argument("--out", type=Path, default=None, help="default RUN/ablation/result.json")
    ap.add_argument("--picture", default="", help="held-out view: truth, best expert, each kind, its weights")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = a.out or a.run / "ablation" / "result.json"
    try:
        meta = read_run(a.run)
        names = checkpointed_experts(a.run)
        if len(names) < 2:
            raise InvalidInput(f"{a.run} has {len(names)} trained expert(s); a mixture needs at least two")
        if sorted(meta["experts"]) != names:  # one process per expert rewrote run.json with its own name
            tmp = a.run / "run.json.tmp"
            tmp.write_text(json.dumps({**meta, "experts": names}, indent=1))
            os.replace(tmp, a.run / "run.json")
        video = load_run_video(a.run)
    except InvalidInput as exc:
        raise SystemExit(str(exc)) from None
    dev = resolve_device(a.device)
    raster = RasterConfig(background=TrainConfig.from_dict(meta["train_config"]).background)
    w, h = video.size
    result = {"run": str(a.run), "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda"
              else "cpu", "held_out": [video.names[c] for c in video.test], "frames": video.num_frames,
              "size": [w, h], "router_iterations": a.iterations, "lpips": _lpips_model(dev)[1] or "AlexNet",
              "experts": {}, "ablation": [], "pruning": [], "distillation": [], "skipped": []}
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out)

    def due(part: str) -> bool:
        if time.time() < a.deadline:
            return True
        result["skipped"].append(part)
        save()
        print(f"skipped (deadline): {part}", flush=True)
        return False

    renders = {}
    for name in names:
        expert, ckpt = load_checkpoint(a.run / name / "checkpoint.pt", dev)
        expert.eval()
        scores = score_renders(lambda c, f, e=expert: render_expert(e, video, c, f, raster), video, dev)
        renders[name] = scores["renders"]
        result["experts"][name] = _row(scores, num_gaussians=expert.num_gaussians, size_bytes=expert.num_bytes(),
                                       steps=int(ckpt["step"]))
    best = max(names, key=lambda n: result["experts"][n]["psnr"])
    best_psnr = result["experts"][best]["psnr"]
    result["best_expert"] = best
    save()

    mixtures = {}
    for seed in a.seeds:
        for kind in a.kinds:
            if not due(f"router {kind} seed {seed}"):
                continue
            cfg = RouterTrainConfig(iterations=a.iterations, router=RouterConfig(kind=kind, **KIND_OPTIONS[kind]),
                                    views="train", seed=seed, device=str(dev), torch_threads=a.threads)
            t0 = time.perf_counter()
            path = train_router(a.run, video, cfg, out=a.run / "ablation" / f"{kind}_s{seed}" / "mixture.pt")
            train_s = time.perf_counter() - t0
            mixture = load_mixture(path, dev)[0]
            scores = evaluate_mixture(mixture, video, raster)
            mixtures[(kind, seed)] = (path, scores["renders"])
            result["ablation"].append(_row(scores, kind=kind, seed=seed, train_s=train_s,
                                           minus_best=scores["psnr"] - best_psnr))
            save()
            print(f"{kind} seed {seed}: {scores['psnr']:.2f} dB ({scores['psnr'] - best_psnr:+.2f} vs {best})",
                  flush=True)

    default = (RouterConfig().kind, a.seeds[0])  # pruning, distillation and the bake follow the default router
    main_key = default if default in mixtures else next(iter(mixtures), None)
    if main_key is not None and "pruning" in a.parts and due("pruning"):
        path = mixtures[main_key][0]
        mixture = load_mixture(path, dev)[0]
        before = mixture.num_gaussians()
        ours = gate_scores(mixture, video, raster)
        values = {"peak": ours.peak, "gate_gradient": gate_gradient_scores(mixture, video, raster)}
        mean_q = float(torch.cat(values["gate_gradient"]).mean())
        cases = [(m, f"fraction {f:g}", quantile_cut(values[m], f)) for m in values for f in a.prune_fractions]
        cases += [("peak", f"threshold {a.prune_threshold:g} px", a.prune_threshold),
                  ("gate_gradient", f"threshold {a.prune_threshold:g} x mean", a.prune_threshold * mean_q)]
        tune = RouterTrainConfig(iterations=a.prune_finetune, router=RouterConfig(kind=main_key[0],
                                 **KIND_OPTIONS[main_key[0]]), views="train", seed=main_key[1], device=str(dev),
                                 torch_threads=a.threads)

        def finetuned(m, name, joint=False):  # the router's recipe after pruning: more steps on the mixture as it is
            if not a.prune_finetune:
                return m
            cfg = replace(tune, joint=joint)
            return load_mixture(train_router(a.run, video, cfg, out=a.run / "ablation" / name, mixture=m), dev)[0]

        base_psnr = evaluate_mixture(finetuned(load_mixture(path, dev)[0], "unpruned_ft.pt"), video, raster)["psnr"]
        result["pruning_baseline"] = {"psnr": base_psnr, "finetune": a.prune_finetune, "router": main_key[0]}
        if a.prune_joint and a.prune_finetune and due("pruning joint baseline"):
            joint_psnr = evaluate_mixture(finetuned(load_mixture(path, dev)[0], "unpruned_joint.pt", True), video,
                                          raster)["psnr"]
            result["pruning_baseline"]["joint_psnr"] = joint_psnr
            cases += [(m, label + ", joint", t) for m, label, t in cases
                      if m == "peak" and label in ("fraction 0.5", f"threshold {a.prune_threshold:g} px")]
        for method, label, threshold in cases:
            if not due(f"pruning {method} {label}"):
                break
            joint = label.endswith(", joint")
            base = result["pruning_baseline"]["joint_psnr" if joint else "psnr"]
            m = load_mixture(path, dev)[0]
            stats, _ = prune_mixture(m, values[method], threshold)
            removed_only = evaluate_mixture(m, video, raster)["psnr"]
            m = finetuned(m, "pruned_ft.pt", joint)
            scores = evaluate_mixture(m, video, raster)
            if method == "peak" and label == f"threshold {a.prune_threshold:g} px":
                save_mixture(a.run / "ablation" / "pruned.pt", m)
            result["pruning"].append(_row(scores, method=method, case=label, removed=before - stats["after"],
                                          before=before, lost_db=base - scores["psnr"], router=main_key[0],
                                          psnr_before_finetune=removed_only, finetune=a.prune_finetune, joint=joint))
            save()
            print(f"pruned {method} {label}: removed {before - stats['after']} of {before}, "
                  f"{base - scores['psnr']:+.2f} dB lost ({base - removed_only:+.2f} before the fine-tune)",
                  flush=True)

    student = best if a.student == "best" else a.student
    if main_key is not None and "distillation" in a.parts and a.distill_iterations > 0:
        mixture = load_mixture(mixtures[main_key][0], dev)[0]
        for method in ("truth", "renders", "gated"):
            if not due(f"distillation {method}"):
                break
            dest = a.run / "ablation" / f"distill_{method}" / student
            t0 = time.perf_counter()
            if method == "truth":
                ckpt = finetune_on_truth(a.run, video, student, a.distill_iterations, out=dest)
            else:
                ckpt = distill(a.run, mixture, video, DistillConfig(student, a.distill_iterations, method=method),
                               out=dest, raster=raster)
            expert = load_checkpoint(ckpt, dev)[0].eval()
            scores = score_renders(lambda c, f, e=expert: render_expert(e, video, c, f, raster), video, dev)
            result["distillation"].append(_row(scores, method=method, student=student, steps=a.distill_iterations,
                                               seconds=time.perf_counter() - t0, num_gaussians=expert.num_gaussians,
                                               size_bytes=expert.num_bytes()))
            save()
            print(f"{student} + {a.distill_iterations} steps ({method}): {scores['psnr']:.2f} dB", flush=True)

    if main_key is not None and "bake" in a.parts and due("bake"):
        mixture = load_mixture(mixtures[main_key][0], dev)[0]
        weights = gate_scores(mixture, video, raster).mean_weight()
        seq = bake_mixture(mixture.experts, weights, a.run / "ablation" / "mixture.lw4d", np.asarray(video.times),
                           video.fps, replace=True)
        result["baked"] = _row(score_sequence(seq, video, raster, dev), router=main_key[0])
        save()

    print(f"\nrun {a.run} on {result['gpu']}: held-out {result['held_out']}, {video.num_frames} frames at {w}x{h}; "
          f"router {a.iterations} steps; LPIPS: {result['lpips']}")
    print("| model | seed | PSNR (dB) | - best expert | SSIM | FPS | Gaussians | size (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(f"{n} ({r['steps']} steps)", "", r) for n, r in result["experts"].items()]
    rows += [(f"MoE {r['kind']}", r["seed"], r) for r in result["ablation"]]
    rows += [(f"pruned ({r['method']}, {r['case']}, -{r['removed']})", "", r) for r in result["pruning"]]
    rows += [(f"{r['student']} + {r['steps']} steps ({r['method']})", "", r) for r in result["distillation"]]
    rows += [("baked mixture (one cloud)", "", result["baked"])] if "baked" in result else []
    for label, seed, r in rows:
        print(f"| {label} | {seed} | {r['psnr']:.2f} | {r['psnr'] - best_psnr:+.2f} | {r['ssim']:.4f} | "
              f"{r['fps']:.1f} | {r['num_gaussians']} | {r['size_bytes'] / 1e6:.2f} |")
    if result["skipped"]:
        print(f"skipped for the deadline: {', '.join(result['skipped'])}")

    if a.picture and mixtures:
        frames = sorted({0, video.num_frames // 2, video.num_frames - 1})
        cam = video.cameras[video.test[0]]
        palette = torch.tensor([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)], dtype=torch.float32)[:len(names)]

        def u8(x):
            return (x.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)

        columns = [[video.images[video.test[0], f] for f in frames], [u8(renders[best][f]) for f in frames]]
        titles = ["truth", best[:6]]
        for kind in a.kinds:
            key = (kind, a.seeds[0])
            if key not in mixtures:
                continue
            mixture = load_mixture(mixtures[key][0], dev)[0]
            with torch.no_grad():
                outs = [render_mixture(mixture.gaussians_at(float(video.times[f])), mixture.router, cam,
                                       float(video.times[f]), raster) for f in frames]
            columns += [[u8(o.color) for o in outs],
                        [u8(torch.einsum("khw,kc->hwc", o.weights.cpu(), palette)) for o in outs]]
            titles += [kind, f"w {kind}"]
        legend = " ".join(f"{'RGBY'[k]}={n[:5]}" for k, n in enumerate(names))
        write_grid(Path(a.picture), columns, titles[:-1] + [f"{titles[-1]} {legend}"],
                   [f"t={video.times[f]:.2f}" for f in frames])
        print(f"picture: {a.picture}")


if __name__ == "__main__":
    main()
