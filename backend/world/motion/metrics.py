"""Quality of a baked loop on what a user sees, without model weights (``lw world metrics``, the sidebar after a
bake).

The loop is rendered from the world's first camera (the photo's view) and measured on 8-bit frames:

- temporal flicker, VBench's definition (``vbench/temporal_flickering.py``): the mean absolute difference of
  consecutive frames over all pixels and channels, mapped to [0, 1] as (255 - MAE) / 255. LivingWorld reports
  0.989; 1 is a still image.
- motion smoothness, VBench's protocol (``vbench/motion_smoothness.py``: the even frames are interpolated to
  predict the odd ones, score (255 - MAE) / 255) with a classical interpolator in place of its AMT-S network
  (learned weights): OpenCV's DIS optical flow F from I_t to I_{t+2} and I_{t+1} ~ (I_t(x - F/2) + I_{t+2}(x + F/2))
  / 2. The numbers are comparable in intent, not identical to VBench's (LivingWorld reports 0.995).
- the loop seam: mean |I_0 - I_{T-1}| (the wrap, 0..1) against an ordinary frame step at that moment of the loop,
  the mean of the two steps next to it (T-2 -> T-1 and 0 -> 1): ``seam_ratio`` <= 1 means the wrap is no bigger
  a step than its neighbours (a one-way clip that jumps back scores ~8). Against the mean step of the whole loop
  (``seam_ratio_mean``) a cross-fade always looks a little worse: mid-loop two half-opaque copies blend and
  change less per frame than one opaque copy moving (measured 0.93-1.35, see docs/bench/motion.md).
  A seamless loop's wrap IS an ordinary step, and an ordinary step against its two neighbours scatters around 1
  with the picture's content (on the gallery photos 0.94-1.04, half of them above 1: docs/bench/world.md, "Why
  the wrap is 1.00-1.02"). So when every frame is rendered the same ratio is taken for every other step of the
  loop (``ordinary_ratio_mean`` / ``_sd``), and the seam goal is met when the wrap is at most 1.0 or within that
  spread (mean + 2 sd): a wrap that jumps is far outside it (a one-way clip: ~8 against ~1 +- 0.02).
- uncovered: the share of pixels whose alpha is below 0.5 (the empty background shows), worst frame and mean.

Every frame is rendered when ``pairs`` is None (the definitions above, exactly); on a CPU, where a frame of a
512-px world costs seconds, ``pairs`` evenly spaced frame triplets (t, t+1, t+2; t even, as VBench pairs them)
and the wrap pair are rendered and the means are estimates over them (``LoopQuality.exact`` says which).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from backend.errors import InvalidInput
from backend.gaussians import Gaussians
from backend.render.cameras import Camera

FLICKER_GOAL = 0.989  # LivingWorld's VBench temporal flicker
SEAM_GOAL = 1.0  # the wrap no bigger than an ordinary frame step


@dataclass(frozen=True)
class LoopQuality:
    """What ``measure_loop`` found; ``frames`` loop length, ``rendered`` frames rendered at ``size`` (w, h)."""

    frames: int
    rendered: int
    size: tuple[int, int]
    exact: bool
    temporal_flicker: float
    motion_smoothness: float
    seam: float
    mean_step: float
    seam_ratio: float  # seam / mean of the two steps next to the wrap
    seam_ratio_mean: float  # seam / mean step of the loop
    uncovered_max: float
    uncovered_mean: float
    ordinary_ratio_mean: float | None = None  # every other step against its two neighbours (all frames rendered)
    ordinary_ratio_sd: float | None = None

    @property
    def seam_limit(self) -> float:
        """The largest seam ratio that is met: 1.0, or the loop's own steps' spread (mean + 2 sd) when known."""
        if self.ordinary_ratio_mean is None or self.ordinary_ratio_sd is None:
            return SEAM_GOAL
        return max(SEAM_GOAL, self.ordinary_ratio_mean + 2.0 * self.ordinary_ratio_sd)

    @property
    def goals(self) -> dict:
        limit = self.seam_limit
        seam_goal = (f"<= {SEAM_GOAL}" if limit == SEAM_GOAL else
                     f"<= {SEAM_GOAL} or within the loop's ordinary steps (<= {limit:.2f})")
        return {"temporal_flicker": {"goal": f">= {FLICKER_GOAL}", "met": self.temporal_flicker >= FLICKER_GOAL},
                "seam_ratio": {"goal": seam_goal, "met": self.seam_ratio <= limit, "limit": limit}}

    def to_json(self) -> dict:
        return {**asdict(self), "size": list(self.size), "goals": self.goals}


def to_u8(colors: np.ndarray) -> np.ndarray:
    """Frames in [0, 1] -> uint8 as a video stores them (rounded)."""
    return (np.clip(colors, 0, 1) * 255 + 0.5).astype(np.uint8)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """VBench's per-pair MAE of two uint8 frames (all pixels and channels, in 0..255)."""
    return float(np.mean(cv2.absdiff(a.astype(np.float32), b.astype(np.float32))))


def interpolate_middle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame halfway between uint8 frames a and b: (a(x - F/2) + b(x + F/2)) / 2, F the DIS flow a -> b."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None)
    h, w = a.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    from_a = cv2.remap(a, gx - 0.5 * flow[..., 0], gy - 0.5 * flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    from_b = cv2.remap(b, gx + 0.5 * flow[..., 0], gy + 0.5 * flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return ((from_a.astype(np.float32) + from_b) / 2 + 0.5).astype(np.uint8)


def sampled_frames(count: int, pairs: int | None) -> list[int]:
    """The frames to render: all (``pairs`` None, or as many triplets as the loop has), else ``pairs`` evenly spaced
    triplets t, t+1, t+2 (t even) plus the frames around the wrap T-2, T-1, 0, 1."""
    if pairs is None or 3 * pairs + 4 >= count:
        return list(range(count))
    starts = sorted({2 * int(k * (count - 3) / (2 * pairs)) for k in range(pairs)})
    return sorted({f for t in starts for f in (t, t + 1, t + 2)} | {count - 2, count - 1, 0, 1})


def loop_quality(colors: np.ndarray, alphas: np.ndarray, index: list[int], count: int) -> LoopQuality:
    """Measure rendered frames (module docstring). colors (F, H, W, 3) in [0, 1], alphas (F, H, W), ``index``
    the loop frame of each (sorted), ``count`` the loop length (frame ``count - 1`` wraps to 0)."""
    if count < 3 or len(index) < 3:
        raise InvalidInput(f"loop metrics need at least 3 frames, got {count}")
    at = {t: i for i, t in enumerate(index)}
    u8 = to_u8(colors)
    steps = [mean_abs_diff(u8[at[t]], u8[at[t + 1]]) for t in index if t + 1 in at]
    middles = [mean_abs_diff(interpolate_middle(u8[at[t]], u8[at[t + 2]]), u8[at[t + 1]])
               for t in index if t % 2 == 0 and t + 1 in at and t + 2 in at]
    if not steps or not middles or not {0, 1, count - 2, count - 1} <= set(at):
        raise InvalidInput("loop metrics need consecutive frames, a frame triplet and two frames at each end")
    seam = mean_abs_diff(u8[at[count - 1]], u8[at[0]]) / 255.0
    mean_step = float(np.mean(steps)) / 255.0
    beside = (mean_abs_diff(u8[at[count - 2]], u8[at[count - 1]]) + mean_abs_diff(u8[at[0]], u8[at[1]])) / 510.0
    uncovered = (alphas < 0.5).mean(axis=(1, 2))
    ordinary = None
    if len(index) == count and count >= 6:  # step k (k -> k+1) against k-1 and k+1, every k but the wrap's
        # (every frame rendered: ``steps`` is 0 -> 1, 1 -> 2, ..., T-2 -> T-1 in order)
        ordinary = np.array([steps[k] / max((steps[k - 1] + steps[k + 1]) / 2, 1e-12) for k in range(1, count - 2)])
    return LoopQuality(frames=count, rendered=len(index), size=(int(colors.shape[2]), int(colors.shape[1])),
                       exact=len(index) == count, temporal_flicker=(255.0 - float(np.mean(steps))) / 255.0,
                       motion_smoothness=(255.0 - float(np.mean(middles))) / 255.0, seam=seam, mean_step=mean_step,
                       seam_ratio=seam / max(beside, 1e-12), seam_ratio_mean=seam / max(mean_step, 1e-12),
                       uncovered_max=float(uncovered.max()),
                       uncovered_mean=float(uncovered.mean()),
                       ordinary_ratio_mean=None if ordinary is None else float(ordinary.mean()),
                       ordinary_ratio_sd=None if ordinary is None else float(ordinary.std()))


def render_frames(frame_at: Callable[[int], Gaussians], camera: Camera, frames: list[int], device: str | torch.device,
                  progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Colours (F, H, W, 3) and alphas (F, H, W) of ``frame_at(t)`` for t in ``frames`` (``backend.render``; 4-px
    tiles on a CPU, as the world's own renders). ``progress(done, total)`` after each frame."""
    from backend.render.rasterize import RasterConfig, rasterize

    dev = torch.device(device)
    cfg = RasterConfig(tile_size=16 if dev.type == "cuda" else 4, depth=False)
    colors, alphas = [], []
    with torch.no_grad():
        for k, t in enumerate(frames):
            out = rasterize(frame_at(t).to_torch(dev), camera, cfg)
            colors.append(out.color.cpu().numpy())
            alphas.append(out.alpha.cpu().numpy())
            if progress is not None:
                progress(k + 1, len(frames))
    return np.stack(colors), np.stack(alphas)


def measure_world(root: str | Path, sequence: str | Path | None = None, frames: int = 60, size: int | None = None,
                  pairs: int | None | str = "auto", device: str = "auto",
                  progress: Callable[[float, str], None] = lambda f, m: None) -> LoopQuality:
    """``LoopQuality`` of the world's loop seen from its first camera: the ``.lw4d`` ``sequence`` when given (a
    bake of this world), else the current world baked in memory over ``frames`` frames (``bake_world``'s
    settings). ``size``: long side of the renders (None: the world's resolution on CUDA, 128 px on a CPU);
    ``pairs``: "auto" (every frame on CUDA, 3 triplets on a CPU: 11 renders of a 60-frame loop), None (every
    frame) or a count >= 1."""
    if pairs is not None and pairs != "auto" and (isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1):
        raise InvalidInput(f"pairs {pairs!r}: give 'auto' (the device's default), None (every frame) or a count of "
                           "frame triplets >= 1")
    from backend.io.lw4d import gaussians_at, read_sequence
    from backend.world import store
    from backend.world.pipeline import WorldConfig, scale_camera

    from .pipeline import _device, baked_world

    dev = _device(device)
    world = store.load_world(root)
    cfg = WorldConfig.from_json(world.settings["config"])
    camera = world.steps[0].opencv_camera()
    long_side = size or (cfg.resolution if dev.type == "cuda" else 128)
    s = long_side / max(camera.width, camera.height)
    camera = scale_camera(camera, max(round(camera.width * s), 8), max(round(camera.height * s), 8))
    if sequence is not None:
        seq = read_sequence(sequence)
        count = seq.frame_count

        def frame_at(t: int) -> Gaussians:
            return gaussians_at(seq, t)
    else:
        from .bake import BakeConfig

        progress(0.05, f"baking {frames} frames in memory")
        baked = baked_world(world, BakeConfig(frames=frames), dev)
        count = baked.frame_count
        frame_at = baked.gaussians_at
    wanted = sampled_frames(count, (None if dev.type == "cuda" else 3) if pairs == "auto" else pairs)
    colors, alphas = render_frames(frame_at, camera, wanted, dev, lambda d, n: progress(
        0.2 + 0.75 * d / n, f"rendering frame {d}/{n} of the loop"))
    return loop_quality(colors, alphas, wanted, count)
