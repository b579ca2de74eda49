"""Stage 2 of MoE-GS end to end: router training, held-out scores of every expert and of the mixture, then
pruning, distillation and the .lw4d bake (the body of the ``moe_router`` job in ``jobs_mixture.py``)."""


from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInput
from ..render.rasterize import RasterConfig, rasterize
from .data import MultiViewVideo
from .train import Progress, TrainConfig, load_checkpoint, load_run_video, read_run, resolve_device


@dataclass
class MixtureRunConfig:
    """Stage 2 end to end (``run_mixture``); fields as in ``MoeRouterParams``."""

    iterations: int = 2000
    router: str = "volume"  # router.RouterConfig.kind: volume (the best on the H100 ablation), volume_pixel, pixel
    gate: str = "param"  # the volume router's gate
    router_lr: float | None = None  # None: the kind's (router.RouterConfig)
    temperature: float | None = None  # None: the kind's
    expert_bias: bool | None = None  # a learned per-expert logit in every pixel; None: the kind's
    gate_decay: float = 0.0  # router.RouterConfig: L2 of the per-Gaussian gates ("param" gate)
    seed: int = 0  # the router's camera draws and decoder initialisation
    joint: bool = False
    expert_lr_scale: float = 0.1  # joint: the experts' own learning rates times this
    prune: bool = False
    prune_method: str = "peak"  # prune.PruneConfig: "peak" (ours) or "gate_gradient" (the paper's)
    prune_threshold: float = 0.05
    prune_fraction: float = 0.5  # prune.PruneConfig.fraction: at least this share of the Gaussians goes
    prune_finetune: int | None = None  # steps on the pruned mixture (its experts lost Gaussians the gates read);
    # None: a tenth of the router's iterations (at least 1)
    prune_joint: bool = True  # those steps also fine-tune the experts (learning rates x expert_lr_scale): on the
    # H100 ablation half the Gaussians then cost 0.00 / -0.02 dB against 0.09 / 0.02 with the router alone
    distill: str = ""
    distill_iterations: int = 1000
    distill_method: str = "gated"  # distill.DistillConfig: "gated" (the paper's loss: beat the truth alone on the
    # H100 ablation) or "renders" (ours)
    distill_lambda: float = 0.5
    refit_iterations: int = 0  # router views: after the router, experts resume on every training camera (distill.refit)
    bake: bool = True
    mode: str = "single"  # multi-expert rendering: "single" pass or "multipass" (same images; mixture.py)
    device: str = "auto"
    torch_threads: int = 0


def _expert_scores(expert, video: MultiViewVideo, raster: RasterConfig, device) -> dict:
    from .train_router import score_renders

    def render(c, f):
        return rasterize(expert.gaussians_at(float(video.times[f])), video.cameras[c], raster).color

    return {**score_renders(render, video, device), "num_gaussians": expert.num_gaussians,
            "size_bytes": expert.num_bytes()}


def score_sequence(path: Path, video: MultiViewVideo, raster: RasterConfig, device) -> dict:
    """Held-out scores (``score_renders``) of the ``.lw4d`` sequence at ``path`` as the add-on imports it: its frame f
    rendered at the dataset's frame f. The sequence must have the dataset's frame count."""
    from ..io.lw4d import gaussians_at, read_sequence
    from .train_router import score_renders

    seq = read_sequence(path)
    if seq.frame_count != video.num_frames:
        raise InvalidInput(f"{path} has {seq.frame_count} frames, the dataset {video.num_frames}: not comparable")

    def render(c, f):
        return rasterize(gaussians_at(seq, f).to_torch(device), video.cameras[c], raster).color

    return {**score_renders(render, video, device), "num_gaussians": seq.count,
            "size_bytes": sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())}


def render_mixture_frames(run: Path, cameras: list[dict], times: list[float], frames: list[int], out: Path,
                          pruned: bool = False, device: str = "auto", progress: Progress | None = None,
                          cancel: threading.Event | None = None) -> list[Path]:
    """The true per-pixel mixture of ``run`` (``mixture/mixture.pt``, or ``pruned.pt``) seen by Blender camera specs
    ``cameras`` at dataset frames ``times`` (t = f / (T - 1), clamped to the clip), written as
    ``out/frame_NNNN.png`` (8-bit RGB) for ``frames``. Every camera is checked before anything renders."""
    import imageio.v2 as imageio

    from ..errors import JobCancelled
    from ..render.cameras import BlenderCameraSpec, blender_to_opencv
    from ..render.sequence_render import MAX_RENDER_PIXELS
    from .mixture import render_mixture
    from .train_router import load_mixture

    specs = [BlenderCameraSpec.from_dict(c) for c in cameras]
    for spec in specs:
        w, h = spec.image_size
        if w * h > MAX_RENDER_PIXELS:
            raise InvalidInput(f"a camera renders {w}x{h} pixels; at most {MAX_RENDER_PIXELS:,}: lower the resolution")
    meta = read_run(run)
    mixture, _ = load_mixture(run / "mixture" / ("pruned.pt" if pruned else "mixture.pt"), resolve_device(device))
    raster = RasterConfig(background=TrainConfig.from_dict(meta["train_config"]).background)
    last = max(int(meta["frames"]) - 1, 1)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (spec, f, number) in enumerate(zip(specs, times, frames)):
        if cancel is not None and cancel.is_set():
            raise JobCancelled(f"mixture render cancelled after {i} of {len(specs)} frames")
        t = min(max(float(f) / last, 0.0), 1.0)
        with torch.no_grad():
            color = render_mixture(mixture.gaussians_at(t), mixture.router, blender_to_opencv(spec), t, raster).color
        paths.append(out / f"frame_{int(number):04d}.png")
        imageio.imwrite(paths[-1], (color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
        if progress is not None:
            progress((i + 1) / len(specs), f"mixture frame {i + 1}/{len(specs)}")
    return paths


def run_mixture(run: Path, config: MixtureRunConfig, video: MultiViewVideo | None = None,
                progress: Progress | None = None, cancel: threading.Event | None = None) -> dict:
    """Train the router over ``run``'s experts, evaluate every expert and the mixture on the held-out cameras,
    then (as configured) prune, distil and bake. Writes ``<run>/mixture/report.json`` and returns the report
    (``"artifacts"``: the files written). Renders of the held-out view are kept under ``"renders"``."""
    from .distill import DistillConfig, distill, finetune_on_truth, refit
    from .export import coordinate_frame_of
    from .mixture import bake_mixture
    from .prune import PruneConfig, gate_scores, prune_cut, prune_mixture, prune_scores
    from .router import RouterConfig
    from .train_router import (
        RouterTrainConfig,
        evaluate_mixture,
        load_mixture,
        save_mixture,
        train_router,
        trained_experts,
        write_report,
    )

    run = Path(run)
    meta = read_run(run)
    video = video or load_run_video(run)
    device = resolve_device(config.device)
    raster = RasterConfig(background=TrainConfig.from_dict(meta["train_config"]).background)
    out = run / "mixture"
    if config.refit_iterations and not meta.get("router_views"):
        raise InvalidInput(f"refit gives the views kept back for the router back to the experts, but {run} kept "
                           "none back: train the experts with router_views >= 1, or set refit_iterations to 0")
    if config.refit_iterations and config.joint:
        raise InvalidInput("refit and joint fine-tuning both train the experts after stage 1: choose one")
    if config.distill and config.distill not in trained_experts(run):  # before the router, not after it
        raise InvalidInput(f"cannot distil into {config.distill!r}: it is not a trained expert of {run} "
                           f"({', '.join(trained_experts(run))}); choose one of those or no distillation")

    def sub(lo, hi):
        return None if progress is None else (lambda f, msg: progress(lo + (hi - lo) * f, msg))

    router = RouterConfig(gate=config.gate, lr=config.router_lr, expert_bias=config.expert_bias,
                          gate_decay=config.gate_decay, kind=config.router, temperature=config.temperature)
    # bad pruning options fail before any training
    prune_cfg = PruneConfig(config.prune_method, config.prune_threshold, config.prune_fraction)
    distill_cfg = DistillConfig(student=config.distill, iterations=config.distill_iterations,
                                method=config.distill_method, gated_lambda=config.distill_lambda)
    rcfg = RouterTrainConfig(iterations=config.iterations, router=router,
                             joint=config.joint, expert_lr_scale=config.expert_lr_scale, mode=config.mode,
                             seed=config.seed, device=config.device, torch_threads=config.torch_threads)
    path = train_router(run, video, rcfg, progress=sub(0.0, 0.35), cancel=cancel)
    mixture, ckpt = load_mixture(path, device)
    report = {"run": str(run), "router": asdict(rcfg), "device": str(device), "experts": {}, "artifacts": [path]}
    sources = {name: run / name / "checkpoint.pt" for name in mixture.names}
    if config.refit_iterations:  # the experts see the router's views too; the mixture keeps the trained router
        report["experts_before_refit"] = {name: _expert_scores(load_checkpoint(src, device)[0], video, raster, device)
                                          for name, src in sources.items()}
        for k, name in enumerate(mixture.names):
            k_sub = sub(0.35 + 0.05 * k / len(mixture.names), 0.35 + 0.05 * (k + 1) / len(mixture.names))
            sources[name] = refit(run, video, name, config.refit_iterations, out / "refit" / name, k_sub, cancel)
            mixture.experts[k] = load_checkpoint(sources[name], device)[0]
        save_mixture(path, mixture, {**{k: ckpt[k] for k in ("config", "step", "elapsed_s", "log", "optimizer")},
                                     "refit_iterations": config.refit_iterations})
        report["refit_iterations"] = config.refit_iterations
        report["artifacts"] += list(sources.values())
    for name in mixture.names:  # stage-1 experts (refit ones after a refit), scored with the same code as the mixture
        report["experts"][name] = _expert_scores(load_checkpoint(sources[name], device)[0], video, raster, device)
    report["moe"] = evaluate_mixture(mixture, video, raster, config.mode)
    if config.joint:  # the fair single-expert baseline: the best expert trained as many extra steps on the truth
        best = max(report["experts"], key=lambda n: report["experts"][n]["psnr"])
        ckpt = finetune_on_truth(run, video, best, config.iterations, out=out / "joint_baseline" / best,
                                 progress=sub(0.4, 0.45), cancel=cancel)
        report["joint_baseline"] = {**_expert_scores(load_checkpoint(ckpt, device)[0], video, raster, device),
                                    "expert": best, "extra_iterations": config.iterations}
        report["artifacts"].append(ckpt)
    if progress is not None:
        progress(0.45, f"mixture PSNR {report['moe']['psnr']:.2f} dB on the held-out view")
    scores = gate_scores(mixture, video, raster, config.mode, progress=sub(0.45, 0.47), cancel=cancel)
    if config.prune:
        values = prune_scores(mixture, video, prune_cfg, raster, config.mode, scores, sub(0.47, 0.48), cancel)
        cut = prune_cut(values, prune_cfg)
        stats, keeps = prune_mixture(mixture, values, cut)
        tune = max(1, config.iterations // 10) if config.prune_finetune is None else config.prune_finetune
        if tune:  # the router (and the experts, prune_joint) again, on what is left
            path_pruned = train_router(run, video, replace(rcfg, iterations=tune, joint=config.prune_joint),
                                       out=out / "pruned.pt", progress=sub(0.48, 0.49), cancel=cancel, mixture=mixture)
            mixture = load_mixture(path_pruned, device)[0]
        else:
            save_mixture(out / "pruned.pt", mixture)
        scores = (gate_scores(mixture, video, raster, config.mode, progress=sub(0.49, 0.5), cancel=cancel) if tune
                  else scores.select(keeps))
        report["pruned"] = {**evaluate_mixture(mixture, video, raster, config.mode), "method": prune_cfg.method,
                            "threshold": prune_cfg.threshold, "fraction": prune_cfg.fraction, "cut": cut,
                            "finetune": tune, "joint": bool(tune and config.prune_joint), **stats}
        report["artifacts"].append(out / "pruned.pt")
    if config.distill:
        again = {"source": sources[config.distill], "all_views": bool(config.refit_iterations)}
        student = distill(run, mixture, video, distill_cfg, raster=raster, mode=config.mode, progress=sub(0.5, 0.75),
                          cancel=cancel, **again)
        baseline = finetune_on_truth(run, video, config.distill, config.distill_iterations,
                                     progress=sub(0.75, 0.95), cancel=cancel, **again)
        for key, ckpt in (("distilled", student), ("finetuned", baseline)):
            report[key] = {**_expert_scores(load_checkpoint(ckpt, device)[0], video, raster, device),
                           "expert": config.distill, "extra_iterations": config.distill_iterations,
                           **({"method": distill_cfg.method} if key == "distilled" else {})}
            report["artifacts"].append(ckpt)
    if config.bake:
        with torch.no_grad():
            lw4d = bake_mixture(mixture.experts, scores.mean_weight(), out / "mixture.lw4d",
                                np.asarray(video.times), video.fps, coordinate_frame_of(meta["dataset"]),
                                progress=sub(0.95, 1.0), replace=True)  # the run's own bake, from an earlier run
        report["baked"] = score_sequence(lw4d, video, raster, device)  # what Import brings, scored as it is
        report["artifacts"].append(lw4d / "manifest.json")
    report["artifacts"] = [str(p) for p in report["artifacts"]] + [str(out / "report.json")]
    write_report(out / "report.json", report)
    return report
