"""Distil a mixture into one expert: the mixture renders targets, a single expert is fine-tuned on them.

Teacher data: every training camera at every dataset time t_f and at ``extra_times`` evenly spaced times
between consecutive frames (t_f + j (t_{f+1} - t_f) / (extra_times + 1), j = 1..extra_times), rendered by the
mixture (``render_mixture``, quantised to 8 bits like the videos). They form a ``MultiViewVideo`` with the
same cameras and the denser time axis (held-out cameras carry no teacher image and are never drawn), so the
student is trained by the ordinary expert trainer (``train.train_expert``): its stage-1 checkpoint is copied
and training resumes for ``iterations`` more steps with the same recipe. The baseline for the comparison is
the same expert resumed for the same number of steps on the ground truth (``finetune_on_truth``), so both
have seen the same number of steps.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInput
from ..io.checkpoint import load_checkpoint_file
from ..render.rasterize import RasterConfig
from .data import MultiViewVideo
from .mixture import Mode, render_mixture
from .train import Progress, TrainConfig, read_run, train_expert
from .train_router import Mixture


@dataclass
class DistillConfig:
    student: str = "trajectory"  # expert family of the run to fine-tune
    iterations: int = 1000  # extra steps on the teacher's renders
    extra_times: int = 1  # teacher times between consecutive dataset frames


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


def _resume_from(run: Path, name: str, out: Path, source: Path | None = None) -> dict:
    src = Path(source) if source else run / name / "checkpoint.pt"
    if not src.is_file():
        raise InvalidInput(f"expert {name!r} is not trained in {run} (no {src}); trained experts can be students")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "checkpoint.pt").is_file():
        shutil.copyfile(src, out / "checkpoint.pt")
    return load_checkpoint_file(src, "expert checkpoint")


def _fine_tune(run: Path, video: MultiViewVideo, name: str, out: Path, iterations: int, progress, cancel,
               source: Path | None = None, all_views: bool = False) -> Path:
    """Resume expert ``name`` (its stage-1 checkpoint, or ``source``) in ``out`` for ``iterations`` more steps.
    ``all_views``: on every training camera, the run's router views included, without densification (the
    expert keeps its Gaussians, so a router trained over them still fits)."""
    ckpt = _resume_from(run, name, out, source)
    cfg = TrainConfig.from_dict(read_run(run)["train_config"])
    cfg = replace(cfg, iterations=int(ckpt["step"]) + int(iterations))
    if all_views:
        cfg = replace(cfg, router_views=0, densify_from=cfg.iterations + 1, opacity_reset_every=0)
    z = np.load(run / "points.npz")
    return train_expert(video, name, out, z["points"], z["colors"], cfg, None, progress, cancel, resume=True)


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
