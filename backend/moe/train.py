"""Train dynamic Gaussian experts on a multi-view video, one at a time, with checkpoints and resume.

A run folder:

    run.json              dataset path, loading options, training config, experts and their options
    points.npz            the initial cloud (points (P, 3), colors (P, 3)) every expert starts from
    <expert>/checkpoint.pt  {"expert", "options", "num_frames", "extent", "model", "optimizer", "step",
                             "elapsed_s", "grad_accum", "count", "log"} (torch.save), rewritten atomically
    <expert>/log.json     losses, Gaussian counts, densification events, training time

One step (3DGS recipe): draw a training camera and a frame from a generator seeded by (seed, step) (so a
resumed run draws exactly what an uninterrupted one would), render ``expert.gaussians_at(t)`` with
``backend.render.rasterize``, loss = 0.8 L1 + 0.2 (1 - SSIM), Adam step; position-like learning rates decay
exponentially by ``lr_decay`` over the run; screen-space gradients are accumulated for density control every
``densify_every`` steps in [densify_from, densify_until).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInput, JobCancelled
from ..io.atomic import atomic_file
from ..io.checkpoint import load_checkpoint_file, plain
from ..render.rasterize import RasterConfig, rasterize
from .data import MultiViewVideo, check_frame_range, load_dataset
from .experts import Expert, expert_options, make_expert
from .losses import photometric_loss
from .points import init_points

DECAYING_GROUPS = ("means", "motion", "key_offsets")

Progress = Callable[[float, str], None]
LossFn = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]  # (color, truth (H, W, 3), cam, frame)


@dataclass
class TrainConfig:
    """How to train every expert of a run (the CLI and job options map onto these one to one)."""

    iterations: int = 3000
    downsample: float = 1.0
    frames: tuple[int, int | None] | None = None
    densify_from: int = 100
    densify_every: int = 100
    densify_until: float = 0.6  # fraction of the iterations
    opacity_reset_every: int = 0  # 0: never (short runs); 3DGS uses 3000
    lr_decay: float = 0.01  # final / initial learning rate of the position-like groups
    ssim_weight: float = 0.2
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    checkpoint_every: int = 500
    init_points: str = "auto"
    min_points: int = 2000
    max_points: int = 200_000
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 0  # 0: leave torch's default
    router_views: int = 0  # training cameras the experts never see, kept for the router (``router_views``)

    def __post_init__(self):
        check_frame_range(self.frames)

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        d = dict(d)
        for k in ("frames", "background"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return TrainConfig(**d)


def frames_fit_on_device(nbytes: int, device: torch.device, share: float = 0.25) -> bool:
    """Whether the dataset's frames (``nbytes`` of uint8) go to ``device`` once: on a GPU only when they take at most
    ``share`` of its free memory (300 frames of 20 N3V cameras at 1352x1014: 25 GB); otherwise every step copies its
    one frame over. Always True on the CPU (the tensor is then a view of the numpy array)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def router_views(video: MultiViewVideo, count: int) -> tuple[list[int], list[int]]:
    """Split the training cameras into (the experts' cameras, the router's cameras).

    The router's ``count`` cameras are the training cameras nearest the centre of the rig (the held-out camera
    of N3V and Technicolor is the rig centre too, so these are views between other cameras, like it). The
    experts never train on them, so on them the router sees how each expert does on a view it has not fitted,
    which is what decides the held-out view; on the experts' own training views every expert fits, and a router
    trained there cannot tell the one that generalises from the one that overfits (docs/bench/moe_mixture.md).
    ``count`` 0: every training camera for both.
    """
    train = list(video.train)
    if count <= 0:
        return train, train
    if count >= len(train):
        raise InvalidInput(f"router_views={count} would leave the experts no camera: the dataset has "
                           f"{len(train)} training cameras; set aside at most {len(train) - 1}")
    centres = np.stack([cam.center for cam in video.cameras])
    mid = centres.mean(0)
    order = sorted(train, key=lambda c: (float(np.linalg.norm(centres[c] - mid)), c))
    held = sorted(order[:count])
    return [c for c in train if c not in held], held


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput("device 'cuda' asked for but torch sees no CUDA device")
    return torch.device(name)


def _save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_file(path) as f:
        torch.save(plain(payload), f)


def load_checkpoint(path: Path, device="cpu") -> tuple[Expert, dict]:
    """Rebuild an expert from its checkpoint; returns (expert on ``device``, the raw checkpoint dict)."""
    if not path.is_file():
        raise InvalidInput(f"no checkpoint at {path}")
    ckpt = load_checkpoint_file(path, "expert checkpoint")
    expert = make_expert(ckpt["expert"], ckpt["num_frames"], ckpt["extent"], ckpt["options"])
    expert.load_state_dict(ckpt["model"])
    return expert.to(device), ckpt


def _check_cloud_is_seen(expert, video: MultiViewVideo, views: list[int], background, cameras: int = 4) -> None:
    """Refuse a start that no training camera sees: an initial cloud outside every camera's view or near/far range
    would train for hours without a gradient and end as a blank expert. Renders the expert at t = 0 from up to
    ``cameras`` of its training cameras ``views``, spread over the rig, until one pixel has alpha > 1e-3."""
    pick = [views[i] for i in np.linspace(0, len(views) - 1, min(cameras, len(views))).round().astype(int)]
    with torch.no_grad():
        g = expert.gaussians_at(0.0)
        for c in pick:
            if float(rasterize(g, video.cameras[c], RasterConfig(background=background)).alpha.max()) > 1e-3:
                return
    cams = video.cameras[pick[0]]
    raise InvalidInput(f"no training camera sees any of the {expert.num_gaussians} initial Gaussians (cameras "
                       f"{', '.join(video.names[c] for c in pick)} render nothing; their depth range is "
                       f"{cams.near:g}..{cams.far:g}): the initial cloud lies outside the views. Check the dataset's "
                       "poses and bounds, or the run's points.npz")


def train_expert(video: MultiViewVideo, name: str, expert_dir: str | Path, points: np.ndarray, colors: np.ndarray,
                 config: TrainConfig | None = None, options: dict | None = None, progress: Progress | None = None,
                 cancel: threading.Event | None = None, resume: bool = True, loss_fn: LossFn | None = None) -> Path:
    """Train the expert ``name`` for ``config.iterations`` steps; returns its checkpoint path.

    ``loss_fn(color, truth, cam, frame)`` replaces the photometric loss against the frame (distillation's gated
    loss, ``distill.gated_loss``).

    Resumes from ``expert_dir/checkpoint.pt`` when present and ``resume``. ``cancel`` set: a checkpoint is
    written and ``JobCancelled`` raised (resume continues from there). ``progress(fraction, message)`` is
    called every few steps.
    """
    config = config or TrainConfig()
    expert_dir = Path(expert_dir)
    expert_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = expert_dir / "checkpoint.pt"
    device = resolve_device(config.device)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if resume and ckpt_path.is_file():
        expert, ckpt = load_checkpoint(ckpt_path, device)
        optimizer = expert.make_optimizer()
        optimizer.load_state_dict(ckpt["optimizer"])
        step, elapsed, log = ckpt["step"], ckpt["elapsed_s"], ckpt["log"]
        grad_accum, count = ckpt["grad_accum"].to(device), ckpt["count"].to(device)
    else:
        expert = make_expert(name, video.num_frames, video.scene_extent(), options)
        expert.init_from_points(points, colors)
        expert = expert.to(device)
        _check_cloud_is_seen(expert, video, router_views(video, config.router_views)[0], config.background)
        optimizer = expert.make_optimizer()
        step, elapsed, log = 0, 0.0, {"loss": [], "events": []}
        grad_accum = torch.zeros(expert.num_gaussians, device=device)
        count = torch.zeros(expert.num_gaussians, device=device)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    raster = RasterConfig(background=config.background)
    # every frame once on the device as uint8 when it has room (STG keeps its ground truth on the GPU the same way);
    # on CPU this is a view of the numpy array, not a copy
    frames_u8 = torch.from_numpy(video.images)
    if frames_fit_on_device(video.images.nbytes, device):
        frames_u8 = frames_u8.to(device)
    total = config.iterations
    densify_until = int(config.densify_until * total)

    # Losses stay on the device until a progress report or checkpoint reads them: a read per step would make the
    # host wait for the whole step before it can queue the next one (the loop is launch-bound at small sizes).
    pending: list[torch.Tensor] = []

    def flush_losses() -> float:
        if pending:
            values = torch.stack(pending).cpu().tolist()
            log["loss"].extend(round(v, 6) for v in values)
            pending.clear()
        return log["loss"][-1] if log["loss"] else float("nan")

    def checkpoint():
        flush_losses()
        _save_checkpoint(ckpt_path, {
            "expert": expert.name, "options": expert_options(expert), "num_frames": expert.num_frames,
            "extent": expert.extent, "model": expert.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "elapsed_s": elapsed, "grad_accum": grad_accum.cpu(), "count": count.cpu(), "log": log,
        })

    views = router_views(video, config.router_views)[0]
    t_start = time.perf_counter() - elapsed
    while step < total:
        if cancel is not None and cancel.is_set():
            elapsed = time.perf_counter() - t_start
            checkpoint()
            raise JobCancelled(f"training of {name} cancelled at step {step}; run again to resume")
        rng = np.random.default_rng([config.seed, step])
        cam = int(rng.choice(views))
        frame = int(rng.integers(video.num_frames))
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        frac = step / max(total - 1, 1)
        for group in optimizer.param_groups:
            if group.get("name") in DECAYING_GROUPS:
                group["lr"] = group["initial_lr"] * config.lr_decay ** frac

        expert.on_step(step, total)
        g = expert.gaussians_at(float(video.times[frame]))
        camera = video.cameras[cam]
        out = rasterize(g, camera, raster)
        means2d = out.meta["means2d"]
        means2d.retain_grad()
        gt = frames_u8[cam, frame].to(device=device, dtype=out.color.dtype) / 255.0  # a copy when kept on the host
        loss = (photometric_loss(out.color, gt, config.ssim_weight) if loss_fn is None
                else loss_fn(out.color, gt, cam, frame))
        optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:  # False when no Gaussian is in this view (all culled): nothing to learn, no update
            loss.backward()
            densifying = config.densify_from <= step < densify_until  # gradient statistics of this step count
            if densifying and means2d.grad is not None:
                with torch.no_grad():  # masked by multiplication: boolean indexing would wait for the device
                    vis = out.meta["radii"] > 0
                    gx, gy = means2d.grad[:, 0] * (camera.width / 2), means2d.grad[:, 1] * (camera.height / 2)
                    grad_accum += torch.where(vis, torch.sqrt(gx * gx + gy * gy), 0.0)
                    count += vis.to(count.dtype)
            optimizer.step()
        step += 1
        pending.append(loss.detach())
        if config.densify_from < step <= densify_until and step % config.densify_every == 0:
            stats = expert.densify_and_prune(optimizer, grad_accum, count, gen,
                                             prune_big=config.opacity_reset_every > 0 and step > config.opacity_reset_every)
            log["events"].append({"step": step, **stats})
            grad_accum = torch.zeros(expert.num_gaussians, device=device)
            count = torch.zeros(expert.num_gaussians, device=device)
        if config.opacity_reset_every and step % config.opacity_reset_every == 0 and step < densify_until:
            expert.reset_opacity(optimizer)
        if step % config.checkpoint_every == 0 or step == total:
            elapsed = time.perf_counter() - t_start
            checkpoint()
        if progress is not None and (step % 10 == 0 or step == total):
            progress(step / total, f"{name}: step {step}/{total}, loss {flush_losses():.4f}, "
                                   f"{expert.num_gaussians} Gaussians")
    flush_losses()
    elapsed = time.perf_counter() - t_start
    log["train_time_s"] = elapsed
    log["num_gaussians"] = expert.num_gaussians
    log["iterations"] = total
    (expert_dir / "log.json").write_text(json.dumps(log))
    return ckpt_path


def prepare_run(dataset: str | Path, out: str | Path, experts: list[str], config: TrainConfig,
                options: dict[str, dict] | None = None) -> tuple[Path, MultiViewVideo]:
    """Load the dataset, compute the initial cloud, write run.json + points.npz. Returns (run dir, video)."""
    out = Path(out)
    video = load_dataset(dataset, config.downsample, config.frames)  # a dataset it cannot read leaves no folder
    held = router_views(video, config.router_views)[1] if config.router_views else []  # checked before any write
    out.mkdir(parents=True, exist_ok=True)
    pts_path = out / "points.npz"
    if pts_path.is_file():
        z = np.load(pts_path)
        method = str(z["method"])
    else:
        pts, cols, method = init_points(video, config.init_points, config.min_points, config.max_points,
                                        config.seed)
        np.savez(pts_path, points=pts, colors=cols, method=method)
    meta = {"dataset": str(Path(dataset).resolve()), "experts": list(experts), "options": options or {},
            "train_config": asdict(config), "points_method": method, "cameras": video.names,
            "train": video.train, "test": video.test,
            "router_views": [video.names[c] for c in held], "frames": int(video.num_frames), "size": list(video.size),
            "fps": video.fps}
    (out / "run.json").write_text(json.dumps(meta, indent=1))
    return out, video


def read_run(run: str | Path) -> dict:
    path = Path(run) / "run.json"
    if not path.is_file():
        raise InvalidInput(f"{run} is not a MoE-GS run folder (run.json is missing)")
    return json.loads(path.read_text())


def load_run_video(run: str | Path) -> MultiViewVideo:
    meta = read_run(run)
    cfg = TrainConfig.from_dict(meta["train_config"])
    return load_dataset(meta["dataset"], cfg.downsample, cfg.frames)


def train_run(dataset: str | Path, out: str | Path, experts: list[str], config: TrainConfig | None = None,
              options: dict[str, dict] | None = None, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> Path:
    """Train every expert of ``experts`` on ``dataset`` into the run folder ``out`` (resuming what exists)."""
    config = config or TrainConfig()
    if not experts:
        raise InvalidInput("name at least one expert to train")
    options = options or {}
    run, video = prepare_run(dataset, out, experts, config, options)
    z = np.load(run / "points.npz")
    for i, name in enumerate(experts):
        def sub(f, msg, i=i):
            if progress is not None:
                progress((i + f) / len(experts), msg)

        train_expert(video, name, run / name, z["points"], z["colors"], config, options.get(name), sub, cancel)
    return run

