"""Bidirectional propagation (LIVINGWORLD.md stage 6): bake a seamless loop of the world to ``.lw4d``.

For a loop of N frames each dynamic Gaussian starting at x0 gets two copies:
    forward  x_f(0) = x0,  x_f(t+1) = RK2(x_f(t), +dt)      t = 0 .. N-1
    backward x_b(N) = x0,  x_b(t-1) = RK2(x_b(t), -dt)      t = N .. 1
with the midpoint rule RK2(x, h) = x + h F(x + h/2 F(x)), and cross-fade opacity weights
    alpha_f(t) = 1 - w(t),  alpha_b(t) = w(t),  w(t) = 3 tau^2 - 2 tau^3 of tau = t / N (smoothstep; or t / N).
Frame N would equal frame 0 (forward copy back at x0 fully opaque, backward copy invisible), so the loop closes
without a seam; content flowing away is replaced by content flowing in. Static Gaussians are untouched.
Frames t = 0 .. N-1 are written; a looping player wraps N-1 -> 0.

Backdrop (``BakeConfig.backdrop``, with the viewer's ``eye``): where nothing lies behind moving content (the
far side of a lake sliding along a wavy shore, the sky at the explored world's edge) the copies uncover the
empty background, and at mid-loop the two half-opaque copies let a quarter of it through. A still copy of every
dynamic Gaussian is kept as a static bed just behind its rest position (pushed away from ``eye`` by
``backdrop_offset`` of its distance), so those pixels show the surface's own colour instead; in front of it
the moving copies are unchanged.

Loop quality metrics on rendered images (``loop_metrics``):
    seam error      mean |I_0 - I_{N-1}| (the wrap step), compared with the mean consecutive step
                    mean_t mean |I_{t+1} - I_t|; their ratio is ~1 for a seamless loop.
    uncovered       share of the dynamic region (pixels the dynamic Gaussians cover at rest, alpha >= 0.5) whose
                    rendered alpha falls below 0.5 in a frame (max and mean over frames).
    flicker         mean |I_{t+1} - I_t| over static pixels (no dynamic Gaussian ever reaches them); the VBench-style
                    score is 1 - flicker (images in 0..1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.errors import InvalidInput
from backend.gaussians import Gaussians
from backend.io.lw4d import SequenceWriter
from backend.render.cameras import Camera

VelocityField = Callable[[torch.Tensor], torch.Tensor]  # (K, 3) world positions -> (K, 3) displacement / frame


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True)
class Flow:
    """A velocity field in coordinates q = ``to_q``(x) of its own: dq/dt = ``velocity``(q), positions back with
    ``to_x`` (``MotionField.lattice``: the field's contracted space). Points that start at |q| >= ``keep_radius``
    keep their distance from ``centre`` (only their direction moves: where q cannot resolve distance)."""

    velocity: VelocityField
    to_q: Callable[[torch.Tensor], torch.Tensor] = _same
    to_x: Callable[[torch.Tensor], torch.Tensor] = _same
    keep_radius: float | None = None
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class BakeConfig:
    frames: int = 120
    dt: float = 1.0  # frames per integration step (the field is in world units per frame)
    loop: bool = True  # False: forward copies only, fully opaque (a one-way clip)
    smooth: bool = True  # smoothstep cross-fade (False: linear); the wrap then looks like the steps around it
    fps: float = 24.0
    chunk: int = 1 << 20  # Gaussians per field evaluation
    backdrop: bool = True  # keep a still bed behind the moving content (module docstring); needs the eye
    backdrop_offset: float = 0.01  # the bed's push away from the eye, as a fraction of the distance
    lattice: int | None = None  # bake through ``MotionField.lattice`` of R^3: None: 64 on a CPU, F itself on CUDA


@dataclass
class BakedLoop:
    """Result of ``bake_loop``.

    static: Gaussians that do not move. dynamic: the moving ones at rest (M).
    positions (T, C, 3) and opacity (T, C) float32 (decoded, 0..1) of the C dynamic copies: C = 2M for a loop
    (forward copies first, then backward copies), C = M otherwise.
    """

    static: Gaussians
    dynamic: Gaussians
    positions: np.ndarray
    opacity: np.ndarray
    config: BakeConfig

    @property
    def frame_count(self) -> int:
        return int(self.positions.shape[0])

    @property
    def copies(self) -> int:
        return int(self.positions.shape[1]) // max(len(self.dynamic), 1) if len(self.dynamic) else 0

    def base(self) -> Gaussians:
        """All Gaussians at rest: static ones, then each copy of the dynamic ones at x0 with its own opacity."""
        return Gaussians.concatenate([self.static] + [self.dynamic] * max(self.copies, 1))

    @property
    def dynamic_index(self) -> np.ndarray:
        s = len(self.static)
        return np.arange(s, s + self.positions.shape[1], dtype=np.int64)

    def gaussians_at(self, t: int) -> Gaussians:
        """All Gaussians of frame ``t`` (raw INRIA parameters, numpy)."""
        g = self.base()
        idx = self.dynamic_index
        g.means = g.means.copy()
        g.means[idx] = self.positions[t]
        logits = g.opacity_logits.copy()
        o = np.clip(self.opacity[t].astype(np.float64), 1e-7, 1 - 1e-7)
        logits[idx] = np.log(o / (1 - o))
        g.opacity_logits = logits.astype(np.float32)
        return g


def rk2_step(field: VelocityField, x: torch.Tensor, h: float) -> torch.Tensor:
    """Midpoint rule: x + h F(x + h/2 F(x))."""
    return x + h * field(x + 0.5 * h * field(x))


def crossfade_weights(frames: int, smooth: bool = False) -> np.ndarray:
    """w(t) for t = 0 .. frames-1 (the backward copy's weight; the forward copy gets 1 - w)."""
    tau = np.arange(frames, dtype=np.float64) / frames
    return 3 * tau**2 - 2 * tau**3 if smooth else tau


@torch.no_grad()
def integrate_loop(field: VelocityField | Flow, x0: torch.Tensor, frames: int, dt: float = 1.0, loop: bool = True,
                   chunk: int = 1 << 20, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Trajectories on x0's device: (frames, C, 3) with C = 2M (forward | backward) when ``loop``, else M.

    A plain velocity field is integrated in world coordinates, a ``Flow`` in its own. Frame by frame (each step
    over every Gaussian, ``chunk`` at a time), so ``progress(done, total)`` is called after each of the ``total``
    integration steps (a job's cancel is seen within one frame). The Gaussians are integrated in Z-order of their
    start (``fields.morton_order``, sorted once) so that the field's hash-grid queries are spatially coherent;
    ``out`` keeps x0's order."""
    from backend.fields import morton_order

    flow = field if isinstance(field, Flow) else Flow(field)
    m = x0.shape[0]
    out = torch.empty(frames, 2 * m if loop else m, 3, device=x0.device, dtype=torch.float32)
    passes = [(0, range(1, frames), dt)] + ([(m, range(frames - 1, -1, -1), -dt)] if loop else [])
    total = sum(len(ts) for _, ts, _ in passes)
    done = 0
    out[0, :m] = x0.float()
    order = morton_order(x0)
    x0 = x0[order]
    q0 = flow.to_q(x0.float())
    keep = torch.zeros(0, dtype=torch.long, device=x0.device)
    if flow.keep_radius is not None:
        keep = torch.nonzero(torch.linalg.vector_norm(q0, dim=1) >= flow.keep_radius)[:, 0]
    centre = torch.as_tensor(flow.centre, dtype=torch.float32, device=x0.device)
    distance = torch.linalg.vector_norm(x0[keep].double() - centre.double(), dim=1, keepdim=True).float()
    for offset, ts, h in passes:
        q = q0.clone()
        for t in ts:
            for i in range(0, m, chunk):
                q[i:i + chunk] = rk2_step(flow.velocity, q[i:i + chunk], h)
            x = flow.to_x(q)
            if len(keep):
                away = x[keep] - centre
                x[keep] = centre + away * (distance / torch.linalg.vector_norm(away, dim=1, keepdim=True))
            out[t, offset:offset + m].index_copy_(0, order, x)
            done += 1
            if progress is not None:
                progress(done, total)
    return out


def bake_loop(gaussians: Gaussians, dynamic: np.ndarray, field: VelocityField | Flow, config: BakeConfig = BakeConfig(),
              device: str | torch.device = "cpu", eye: np.ndarray | None = None,
              progress: Callable[[int, int], None] | None = None) -> BakedLoop:
    """Bake ``config.frames`` frames: dynamic Gaussians (``dynamic`` (N,) bool) advected by ``field``.

    ``eye``: where the world is seen from (its first camera's centre); with ``config.backdrop`` the still bed is
    put behind the dynamic Gaussians as seen from there (``BakedLoop.static`` then ends with it). ``progress``:
    ``integrate_loop``'s, per integration step."""
    if config.frames < 2:
        raise InvalidInput(f"a loop needs at least 2 frames, got {config.frames}")
    g = gaussians.to_numpy()
    dynamic = np.asarray(dynamic, bool)
    if dynamic.shape != (len(g),):
        raise InvalidInput(f"dynamic mask has shape {dynamic.shape}, expected ({len(g)},)")
    if not dynamic.any():
        raise InvalidInput("no Gaussian lies in a moving region: add motion (presets, hints) before baking")
    dyn, static = g.subset(dynamic), g.subset(~dynamic)
    if config.backdrop and eye is not None:
        pushed = dyn.means + config.backdrop_offset * (dyn.means - np.asarray(eye, np.float64))
        static = Gaussians.concatenate([static, dyn.with_(means=pushed.astype(np.float32))])
    x0 = torch.as_tensor(np.ascontiguousarray(dyn.means, np.float32), device=device)
    traj = integrate_loop(field, x0, config.frames, config.dt, config.loop, config.chunk, progress).cpu().numpy()
    base_opacity = dyn.opacities().astype(np.float64)
    if config.loop:
        w = crossfade_weights(config.frames, config.smooth)[:, None]
        opacity = np.concatenate([(1 - w) * base_opacity[None], w * base_opacity[None]], axis=1)
    else:
        opacity = np.broadcast_to(base_opacity[None], (config.frames, len(dyn))).copy()
    return BakedLoop(static, dyn, traj, opacity.astype(np.float32), config)


def write_loop(path: str | Path, baked: BakedLoop, replace: bool = False) -> Path:
    """Write the bake as a ``.lw4d`` sequence (channels position and opacity), atomically; ``replace``: an earlier
    sequence at ``path`` may be replaced (``SequenceWriter``)."""
    cfg = baked.config
    with SequenceWriter(path, baked.base(), baked.dynamic_index, baked.frame_count,
                        channels=("position", "opacity"), fps=cfg.fps, loop=cfg.loop, replace=replace) as w:
        for t in range(baked.frame_count):
            w.append(position=baked.positions[t], opacity=baked.opacity[t])
    return Path(path)


# ----------------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class LoopMetrics:
    seam: float  # mean |I_0 - I_{T-1}|
    mean_step: float  # mean over t of mean |I_{t+1} - I_t|
    seam_ratio: float  # seam / mean_step (~1: seamless)
    uncovered_max: float  # worst frame's uncovered share of the dynamic region
    uncovered_mean: float
    flicker: float  # mean |I_{t+1} - I_t| on static pixels
    flicker_score: float  # 1 - flicker


def render_loop(baked: BakedLoop, camera: Camera, device: str | torch.device = "cpu",
                frames: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render frames with ``backend.render.rasterize``: colour (F, H, W, 3), alpha of the dynamic copies alone
    (F, H, W), and the dynamic Gaussians' alpha at rest (H, W)."""
    from backend.render.rasterize import rasterize

    frames = list(range(baked.frame_count)) if frames is None else frames
    colors, alphas = [], []
    idx = baked.dynamic_index
    with torch.no_grad():
        for t in frames:
            g = baked.gaussians_at(t)
            colors.append(rasterize(g.to_torch(device), camera).color.cpu().numpy())
            alphas.append(rasterize(g.subset(idx).to_torch(device), camera).alpha.cpu().numpy())
        rest = rasterize(baked.dynamic.to_torch(device), camera).alpha.cpu().numpy()
    return np.stack(colors), np.stack(alphas), rest


def loop_metrics(colors: np.ndarray, dynamic_alpha: np.ndarray, rest_alpha: np.ndarray,
                 threshold: float = 0.5, static_eps: float = 1e-3) -> LoopMetrics:
    """Seam, coverage and flicker metrics (module docstring) of rendered frames.

    colors (T, H, W, 3) in 0..1 (all frames of the loop, in order); dynamic_alpha (T, H, W) alpha of the dynamic
    copies alone; rest_alpha (H, W) alpha of the dynamic Gaussians at rest.
    """
    if len(colors) < 2:
        raise InvalidInput("loop metrics need at least 2 frames")
    steps = np.abs(np.diff(colors, axis=0)).mean(axis=-1)  # (T-1, H, W)
    mean_step = float(steps.mean())
    seam = float(np.abs(colors[0] - colors[-1]).mean())
    region = rest_alpha >= threshold
    if region.any():
        unc = (dynamic_alpha[:, region] < threshold).mean(axis=1)
        unc_max, unc_mean = float(unc.max()), float(unc.mean())
    else:
        unc_max = unc_mean = 0.0
    static = (dynamic_alpha.max(axis=0) < static_eps) & (rest_alpha < static_eps)
    flicker = float(steps[:, static].mean()) if static.any() else 0.0
    return LoopMetrics(seam=seam, mean_step=mean_step, seam_ratio=seam / max(mean_step, 1e-12),
                       uncovered_max=unc_max, uncovered_mean=unc_mean, flicker=flicker, flicker_score=1.0 - flicker)
