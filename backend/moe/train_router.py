"""Stage 2 of MoE-GS: train the pixel router over trained experts, and evaluate mixtures on held-out cameras.

One step (our loss, MOEGS.md): draw a router camera and a frame from a generator seeded by (seed, step), render
the K experts at t in one pass (``mixture.render_mixture``), blend with the router's pixel weights and take
loss = (1 - lambda) L1 + lambda (1 - SSIM), lambda = 0.2, against the ground truth; the router's own optimiser
(``Router.make_optimizer``: RAdam for the volume-aware pixel router, Adam for the volume router). Experts are frozen (their Gaussians at each frame are computed once and cached), as the paper's
stage 2 does; ``joint=True`` also fine-tunes the experts with their own learning rates times
``expert_lr_scale`` (no densification).

Router cameras: when the run set training cameras aside (``TrainConfig.router_views``), the router trains on
those, which no expert has seen: there each expert's error is the error it makes on a new view, so the router
learns which expert generalises where, and where blending beats either expert. On the experts' own training views
every expert fits, and the router cannot tell them apart. Without set-aside cameras (or ``views="train"``) the
router trains on the training cameras.

A mixture checkpoint (``<run>/mixture/mixture.pt``, torch.save) is self-contained:
``{"experts": [name], "models": {name: {"expert", "options", "num_frames", "extent", "model"}},
"router": Router.checkpoint(), "config": RouterTrainConfig as dict, "step", "log", "optimizer": [state dicts]}``
(plain data, read back with ``weights_only=True``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import InvalidInput, JobCancelled
from ..io.atomic import atomic_file
from ..io.checkpoint import load_checkpoint_file, plain
from ..render.rasterize import RasterConfig
from .data import MultiViewVideo
from .experts import Expert, expert_options, make_expert
from .losses import photometric_loss, psnr, ssim
from .mixture import Mode, render_mixture
from .router import Router, RouterConfig
from .train import TrainConfig, load_checkpoint, read_run, resolve_device, router_views

Progress = Callable[[float, str], None]


@dataclass
class RouterTrainConfig:
    """Stage-2 schedule (the paper trains its router for 2,000 or 5,000 iterations)."""

    iterations: int = 2000
    router: RouterConfig = field(default_factory=RouterConfig)
    joint: bool = False
    expert_lr_scale: float = 0.1
    ssim_weight: float = 0.2
    mode: Mode = "single"
    views: Literal["auto", "train"] = "auto"  # auto: the run's router views when it set some aside, else "train"
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 0
    checkpoint_every: int = 500

    @staticmethod
    def from_dict(d: dict) -> RouterTrainConfig:
        d = dict(d)
        d["router"] = RouterConfig(**d.get("router", {}))
        return RouterTrainConfig(**d)


@dataclass
class Mixture:
    """Trained experts and their router. ``names[k]`` is ``experts[k]``'s family."""

    names: list[str]
    experts: list[Expert]
    router: Router

    def gaussians_at(self, t: float) -> list:
        return [e.gaussians_at(t) for e in self.experts]

    def num_gaussians(self) -> int:
        return sum(e.num_gaussians for e in self.experts)

    def num_bytes(self) -> int:
        return sum(e.num_bytes() for e in self.experts) + sum(
            t.numel() * t.element_size() for t in list(self.router.parameters()) + list(self.router.buffers()))


def expert_payload(expert: Expert) -> dict:
    """What rebuilds ``expert`` (``expert_from_payload``): family, options, frames, extent, state."""
    return {"expert": expert.name, "options": expert_options(expert), "num_frames": expert.num_frames,
            "extent": expert.extent, "model": {k: v.detach().cpu() for k, v in expert.state_dict().items()}}


def expert_from_payload(p: dict, device="cpu") -> Expert:
    expert = make_expert(p["expert"], p["num_frames"], p["extent"], p["options"])
    expert.load_state_dict(p["model"])
    return expert.to(device)


def save_mixture(path: Path, mixture: Mixture, extra: dict | None = None) -> None:
    payload = {"experts": mixture.names, "models": {n: expert_payload(e) for n, e in zip(mixture.names,
                                                                                      mixture.experts)},
               "router": mixture.router.checkpoint(), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(plain(payload), f)


def load_mixture(path: str | Path, device="cpu") -> tuple[Mixture, dict]:
    """Rebuild a mixture from its checkpoint; returns (mixture on ``device``, the raw checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no mixture checkpoint at {path}; train the router first (moe_router job)")
    ckpt = load_checkpoint_file(path, "mixture checkpoint")
    experts = [expert_from_payload(ckpt["models"][n], device) for n in ckpt["experts"]]
    return Mixture(list(ckpt["experts"]), experts, Router.from_checkpoint(ckpt["router"], device)), ckpt


def trained_experts(run: Path) -> list[str]:
    meta = read_run(run)
    names = [n for n in meta["experts"] if (run / n / "checkpoint.pt").is_file()]
    if len(names) < 2:
        raise InvalidInput(f"{run} has {len(names)} trained expert(s) ({names}); a mixture needs at least two")
    return names


class FrameCache:
    """Frozen experts' Gaussians per frame, computed once (stage 2 with fixed experts)."""

    def __init__(self, mixture: Mixture, times: np.ndarray, frozen: bool):
        self.mixture, self.times, self.frozen, self._cache = mixture, times, frozen, {}

    def __call__(self, frame: int) -> list:
        if not self.frozen:
            return self.mixture.gaussians_at(float(self.times[frame]))
        if frame not in self._cache:
            with torch.no_grad():
                self._cache[frame] = self.mixture.gaussians_at(float(self.times[frame]))
        return self._cache[frame]


_RESUME_FREE = ("iterations", "device", "torch_threads", "checkpoint_every")  # may change between resumes


def _stale_reason(saved: dict, out: Path, run: Path, config: RouterTrainConfig) -> str:
    """Why the mixture checkpoint ``saved`` (read from ``out``) cannot be resumed with ``config`` ('' when it can):
    it was trained with other options (gate, joint, learning rates, views...), over other experts, or before an
    expert trained again. Resuming it would mix two trainings (or, frozen -> joint, fail on the optimizer's groups)."""
    old, new = dict(saved.get("config", {})), asdict(config)
    changed = sorted(k for k in new if k not in _RESUME_FREE and old.get(k) != new[k])
    if changed:
        return "it was trained with other " + ", ".join(changed)
    names = trained_experts(run)
    if list(saved["experts"]) != names:
        return f"it mixes {list(saved['experts'])}, the run now has {names}"
    newer = [n for n in names if (run / n / "checkpoint.pt").stat().st_mtime > out.stat().st_mtime]
    if newer:
        return f"{', '.join(newer)} trained again after it"
    return ""


def train_router(run: str | Path, video: MultiViewVideo, config: RouterTrainConfig | None = None,
                 out: str | Path | None = None, progress: Progress | None = None,
                 cancel: threading.Event | None = None, resume: bool = True, mixture: Mixture | None = None) -> Path:
    """Train a router over the trained experts of ``run`` (stage 1 checkpoints); returns the mixture checkpoint
    (default ``<run>/mixture/mixture.pt``). Resumes from that file when it exists and ``resume``, unless it was
    trained with other options (``iterations`` aside), over other experts or before an expert trained again: then
    it starts over (``_stale_reason``). ``cancel`` set: the checkpoint is written and ``JobCancelled`` raised.
    ``mixture``: train this mixture's router further instead (a pruned mixture: ``config.iterations`` more steps
    from its router as it is, with a fresh optimiser; nothing is resumed)."""
    config = config or RouterTrainConfig()
    run = Path(run)
    out = Path(out) if out else run / "mixture" / "mixture.pt"
    device = resolve_device(config.device)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    train_cfg = TrainConfig.from_dict(read_run(run)["train_config"])
    raster = RasterConfig(background=train_cfg.background)
    if config.views not in ("auto", "train"):
        raise InvalidInput(f"router views must be 'auto' or 'train', got {config.views!r}")
    views = router_views(video, train_cfg.router_views)[1] if config.views == "auto" else list(video.train)
    ckpt, step, elapsed, log = None, 0, 0.0, {"loss": []}
    if mixture is None and resume and out.is_file():
        mixture, ckpt = load_mixture(out, device)
        stale = _stale_reason(ckpt, out, run, config)
        if stale:
            mixture = None
            if progress is not None:
                progress(0.0, f"router: starting over ({stale})")
        else:
            step, elapsed, log = ckpt["step"], ckpt["elapsed_s"], ckpt["log"]
    if mixture is None:
        names = trained_experts(run)
        experts = [load_checkpoint(run / n / "checkpoint.pt", device)[0] for n in names]
        mixture = Mixture(names, experts, Router.for_experts(experts, config.router, config.seed))
        ckpt, step, elapsed, log = None, 0, 0.0, {"loss": []}
    for e in mixture.experts:
        e.requires_grad_(config.joint)
    optimizers = [mixture.router.make_optimizer()]
    if config.joint:
        groups = [{**g, "name": f"{k}/{g['name']}", "lr": g["lr"] * config.expert_lr_scale}
                  for k, e in enumerate(mixture.experts) for g in e.param_groups()]
        optimizers.append(torch.optim.Adam(groups, eps=1e-15))
    for opt, state in zip(optimizers, ckpt.get("optimizer", []) if ckpt is not None else []):
        opt.load_state_dict(state)
    frames = FrameCache(mixture, video.times, frozen=not config.joint)

    def checkpoint():
        save_mixture(out, mixture, {"config": asdict(config), "step": step, "elapsed_s": elapsed, "log": log,
                                    "optimizer": [opt.state_dict() for opt in optimizers]})

    t_start = time.perf_counter() - elapsed
    while step < config.iterations:
        if cancel is not None and cancel.is_set():
            elapsed = time.perf_counter() - t_start
            checkpoint()
            raise JobCancelled(f"router training cancelled at step {step}; run again to resume")
        rng = np.random.default_rng([config.seed, step])
        cam = int(rng.choice(views))
        frame = int(rng.integers(video.num_frames))
        gt = torch.from_numpy(video.frame(cam, frame)).to(device)
        pred = render_mixture(frames(frame), mixture.router, video.cameras[cam], float(video.times[frame]), raster,
                              config.mode)
        loss = photometric_loss(pred.color, gt, config.ssim_weight) + mixture.router.penalty()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
        step += 1
        log["loss"].append(round(loss.item(), 6))
        if step % config.checkpoint_every == 0 or step == config.iterations:
            elapsed = time.perf_counter() - t_start
            checkpoint()
        if progress is not None and (step % 10 == 0 or step == config.iterations):
            progress(step / config.iterations, f"router: step {step}/{config.iterations}, loss {loss.item():.4f}")
    return out


@torch.no_grad()
def score_renders(render: Callable[[int, int], torch.Tensor], video: MultiViewVideo, device,
                  cameras: list[int] | None = None) -> dict:
    """PSNR / SSIM (``losses``) and FPS of ``render(cam, frame) -> (H, W, 3)`` over every frame of ``cameras``
    (default: the held-out ones), timed after one warm-up render. Also returns the renders of the first camera."""
    cams = video.test if cameras is None else cameras
    pairs = [(c, f) for c in cams for f in range(video.num_frames)]
    render(*pairs[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    imgs = [render(c, f).clamp(0, 1) for c, f in pairs]
    if device.type == "cuda":
        torch.cuda.synchronize()
    fps = len(pairs) / (time.perf_counter() - t0)
    gts = [torch.from_numpy(video.frame(c, f)).to(device) for c, f in pairs]
    return {"psnr": float(np.mean([psnr(i, g) for i, g in zip(imgs, gts)])),
            "ssim": float(np.mean([float(ssim(i, g)) for i, g in zip(imgs, gts)])), "fps": fps,
            "renders": [i.cpu() for (c, _), i in zip(pairs, imgs) if c == cams[0]]}


def evaluate_mixture(mixture: Mixture, video: MultiViewVideo, raster: RasterConfig, mode: Mode = "single",
                     cameras: list[int] | None = None) -> dict:
    """Held-out metrics of the blended image (``score_renders``) plus Gaussian count and size in bytes."""
    device = mixture.experts[0].means.device

    def render(c, f):
        t = float(video.times[f])
        return render_mixture(mixture.gaussians_at(t), mixture.router, video.cameras[c], t, raster, mode).color

    scores = score_renders(render, video, device, cameras)
    return {**scores, "num_gaussians": mixture.num_gaussians(), "size_bytes": mixture.num_bytes()}


def write_report(path: Path, report: dict) -> None:
    """``report`` as JSON without its "renders" (image tensors)."""
    def strip(v):
        return {k: strip(x) for k, x in v.items() if k != "renders"} if isinstance(v, dict) else v

    path.write_text(json.dumps(strip(report), indent=1))
