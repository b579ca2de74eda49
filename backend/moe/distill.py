"""Distil a mixture into one expert: the mixture renders targets, a single expert is fine-tuned on them.

Teacher data: every training camera at every dataset time t_f and at ``extra_times`` evenly spaced times
between consecutive frames (t_f + j (t_{f+1} - t_f) / (extra_times + 1), j = 1..extra_times), rendered by the
mixture (``render_mixture``, quantised to 8 bits like the videos). They form a ``MultiViewVideo`` with the
same cameras and the denser time axis (held-out cameras carry no teacher image and are never drawn), so the
student is trained by the ordinary expert trainer (``train.train_expert``): its stage-1 checkpoint is copied
and training resumes for ``iterations`` more steps with the same recipe. The baseline for the comparison is
the same expert resumed for the same number of steps on the ground truth (``finetune_on_truth``), so both
have seen the same number of steps.

Two losses (``DistillConfig.method``):

    "renders" (ours): the student is trained on the teacher's renders as if they were the video (above).
    "gated" (the paper's): on the training cameras at the dataset frames, with w_s(p) the mixture's pixel weight of
        the student's own expert and M the mixture's image,
            L = lambda L_p(w_s S, w_s G) + (1 - lambda) L_p((1 - w_s) S, (1 - w_s) M),
        L_p = 0.8 L1 + 0.2 (1 - SSIM), S the student's render, G the truth: the truth where the router chose the
        student, the mixture where it chose the others. w_s and M are rendered once, quantised to 8 bits.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import InvalidInput
from ..io.checkpoint import load_checkpoint_file
from ..render.rasterize import RasterConfig
from .data import MultiViewVideo
from .losses import photometric_loss
from .mixture import Mode, render_mixture
from .train import LossFn, Progress, TrainConfig, read_run, train_expert
from .train_router import Mixture

METHODS = ("renders", "gated")


@dataclass
class DistillConfig:
    student: str = "trajectory"  # expert family of the run to fine-tune
    iterations: int = 1000  # extra steps on the teacher
    extra_times: int = 1  # "renders": teacher times between consecutive dataset frames
    method: Literal["renders", "gated"] = "gated"  # the loss (module docstring); gated won on the H100 ablation
    gated_lambda: float = 0.5  # "gated": the weight of the student's own region (on the truth)

    def __post_init__(self):
        if self.method not in METHODS or not 0.0 <= self.gated_lambda <= 1.0:
            raise InvalidInput(f"distillation method must be one of {METHODS} and its lambda in [0, 1], got "
                               f"{self.method!r}, {self.gated_lambda}")


def teacher_times(times: np.ndarray, extra: int) -> np.ndarray:
    """The dataset times with ``extra`` evenly spaced times inserted between consecutive ones."""
    if len(times) < 2 or extra <= 0:
        return np.asarray(times, dtype=np.float64)
    steps = np.linspace(0.0, 1.0, extra + 2)[:-1]
    inner = (times[:-1, None] + steps[None, :] * np.diff(times)[:, None]).reshape(-1)
    return np.concatenate([inner, times[-1:]])


@torch.no_grad()
def teacher_video(mixture: Mixture, video: MultiViewVideo, extra_times: int, raster: RasterConfig,
                  mode: Mode = "single", progress: Progress | None = None) -> MultiViewVideo:
    """The mixture's renders of every training camera at ``teacher_times`` as a MultiViewVideo."""
    times = teacher_times(video.times, extra_times)
    w, h = video.size
    images = np.zeros((len(video.cameras), len(times), h, w, 3), np.uint8)
    for i, t in enumerate(times):
        gs = mixture.gaussians_at(float(t))
        for c in video.train:
            img = render_mixture(gs, mixture.router, video.cameras[c], float(t), raster, mode).color
            images[c, i] = (img.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        if progress is not None:
            progress((i + 1) / len(times), f"teacher renders: time {i + 1}/{len(times)}")
    return replace(video, images=images, times=times, frame_numbers=np.arange(len(times)))


@torch.no_grad()
def gated_targets(mixture: Mixture, video: MultiViewVideo, student: int, raster: RasterConfig, mode: Mode = "single",
                  progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What the gated loss reads: the mixture's images M (C, T, H, W, 3) uint8 and the pixel weight w_s of expert
    ``student`` (C, T, H, W) uint8 (255 = 1), for every training camera at every dataset frame (others stay 0)."""
    w, h = video.size
    cams, frames = len(video.cameras), video.num_frames
    images, weights = np.zeros((cams, frames, h, w, 3), np.uint8), np.zeros((cams, frames, h, w), np.uint8)
    for f in range(frames):
        t = float(video.times[f])
        gs = mixture.gaussians_at(t)
        for c in video.train:
            out = render_mixture(gs, mixture.router, video.cameras[c], t, raster, mode)
            images[c, f] = (out.color.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            weights[c, f] = (out.weights[student].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        if progress is not None:
            progress((f + 1) / frames, f"gated targets: frame {f + 1}/{frames}")
    return images, weights


def gated_loss(images: np.ndarray, weights: np.ndarray, gated_lambda: float, ssim_weight: float = 0.2) -> LossFn:
    """The paper's distillation loss (module docstring) over ``gated_targets``' arrays, for ``train_expert``."""
    def loss(color: torch.Tensor, truth: torch.Tensor, cam: int, frame: int) -> torch.Tensor:
        ws = torch.from_numpy(weights[cam, frame]).to(color.device, color.dtype)[..., None] / 255.0
        m = torch.from_numpy(images[cam, frame]).to(color.device, color.dtype) / 255.0
        return (gated_lambda * photometric_loss(ws * color, ws * truth, ssim_weight)
                + (1.0 - gated_lambda) * photometric_loss((1 - ws) * color, (1 - ws) * m, ssim_weight))

    return loss


def _resume_from(run: Path, name: str, out: Path, source: Path | None = None) -> dict:
    src = Path(source) if source else run / name / "checkpoint.pt"
    if not src.is_file():
        raise InvalidInput(f"expert {name!r} is not trained in {run} (no {src}); trained experts can be students")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "checkpoint.pt").is_file():
        shutil.copyfile(src, out / "checkpoint.pt")
    return load_checkpoint_file(src, "expert checkpoint")


def _fine_tune(run: Path, video: MultiViewVideo, name: str, out: Path, iterations: int, progress, cancel,
               source: Path | None = None, all_views: bool = False, loss_fn: LossFn | None = None) -> Path:
    """Resume expert ``name`` (its stage-1 checkpoint, or ``source``) in ``out`` for ``iterations`` more steps.
    ``all_views``: on every training camera, the run's router views included, without densification (the
    expert keeps its Gaussians, so a router trained over them still fits)."""
    ckpt = _resume_from(run, name, out, source)
    cfg = TrainConfig.from_dict(read_run(run)["train_config"])
    cfg = replace(cfg, iterations=int(ckpt["step"]) + int(iterations))
    if all_views:
        cfg = replace(cfg, router_views=0, densify_from=cfg.iterations + 1, opacity_reset_every=0)
    z = np.load(run / "points.npz")
    return train_expert(video, name, out, z["points"], z["colors"], cfg, None, progress, cancel, resume=True,
                        loss_fn=loss_fn)


def distill(run: str | Path, mixture: Mixture, video: MultiViewVideo, config: DistillConfig,
            out: str | Path | None = None, raster: RasterConfig | None = None, mode: Mode = "single",
            progress: Progress | None = None, cancel: threading.Event | None = None, source: Path | None = None,
            all_views: bool = False) -> Path:
    """Fine-tune expert ``config.student`` of ``run`` on the mixture's renders; returns its checkpoint
    (default ``<run>/mixture/distilled/<student>/checkpoint.pt``). ``source``, ``all_views``: as ``refit``."""
    raster = raster or RasterConfig()
    run = Path(run)
    out = Path(out) if out else run / "mixture" / "distilled" / config.student

    def sub(lo, hi):
        return None if progress is None else (lambda f, msg: progress(lo + (hi - lo) * f, msg))

    if config.method == "gated":
        if config.student not in mixture.names:
            raise InvalidInput(f"the gated loss weighs the student by its own gate: {config.student!r} is not one of "
                               f"the mixture's experts {mixture.names}")
        images, weights = gated_targets(mixture, video, mixture.names.index(config.student), raster, mode,
                                        sub(0.0, 0.3))
        cfg = TrainConfig.from_dict(read_run(run)["train_config"])
        return _fine_tune(run, video, config.student, out, config.iterations, sub(0.3, 1.0), cancel, source,
                          all_views, gated_loss(images, weights, config.gated_lambda, cfg.ssim_weight))
    teacher = teacher_video(mixture, video, config.extra_times, raster, mode, sub(0.0, 0.3))
    return _fine_tune(run, teacher, config.student, out, config.iterations, sub(0.3, 1.0), cancel, source, all_views)


def finetune_on_truth(run: str | Path, video: MultiViewVideo, name: str, iterations: int,
                      out: str | Path | None = None, progress: Progress | None = None,
                      cancel: threading.Event | None = None, source: Path | None = None,
                      all_views: bool = False) -> Path:
    """The distillation's baseline: expert ``name`` resumed for ``iterations`` steps on the ground truth."""
    run = Path(run)
    out = Path(out) if out else run / "mixture" / "finetuned" / name
    return _fine_tune(run, video, name, out, iterations, progress, cancel, source, all_views)


def refit(run: str | Path, video: MultiViewVideo, name: str, iterations: int, out: str | Path | None = None,
          progress: Progress | None = None, cancel: threading.Event | None = None) -> Path:
    """Give the views kept back for the router (``TrainConfig.router_views``) back to expert ``name``: its
    stage-1 checkpoint resumed for ``iterations`` steps on every training camera, without densification, so the
    router trained over its Gaussians still applies; the experts of the mixture then have seen every training
    camera, like an expert trained alone. Returns the checkpoint (default ``<run>/mixture/refit/<name>/``)."""
    run = Path(run)
    out = Path(out) if out else run / "mixture" / "refit" / name
    return _fine_tune(run, video, name, out, iterations, progress, cancel, all_views=True)
