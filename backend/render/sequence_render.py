"""Rendering a static ``.ply`` or a ``.lw4d`` sequence through Blender cameras to PNGs (+ MP4).

The body of the ``render_splats`` job (``backend/render/jobs.py``), kept apart so the job registry imports
without torch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInput
from ..jobs import JobContext
from .cameras import BlenderCameraSpec, blender_to_opencv
from .jobs import RenderSplatsParams
from .rasterize import AUTO_TILE, RasterConfig, rasterize

MAX_RENDER_PIXELS = 8192 * 8192  # a larger frame (resolution x percentage) is refused before anything is allocated


def render_device() -> torch.device:
    """CUDA when available (gsplat), else the CPU reference."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_rgba8(color: torch.Tensor, alpha: torch.Tensor, background) -> np.ndarray:
    """(H, W, 4) uint8 with straight colour: rgb = (color - (1 - a) bg) / a where a > 0."""
    bg = torch.as_tensor(background, dtype=color.dtype, device=color.device)
    a = alpha[..., None]
    premult = color - (1.0 - a) * bg
    rgb = torch.where(a > 0, premult / a.clamp_min(1e-12), torch.zeros_like(premult))
    rgba = torch.cat([rgb, a], -1).clamp(0, 1)
    return (rgba * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def _pad_even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def render_splats_to_files(ctx: JobContext, params: RenderSplatsParams) -> list[str]:
    """Render every (camera, frame, time) of ``params`` into ``<job_dir>/<out_dir>/``; returns artifact names."""
    import imageio.v2 as imageio

    from ..io.lw4d import frame_gaussians, read_sequence
    from ..io.ply import read_ply
    from .frames import write_dynamic

    specs = [BlenderCameraSpec.from_dict(c) for c in params.cameras]
    for spec in specs:
        w, h = spec.image_size
        if w < 1 or h < 1 or w * h > MAX_RENDER_PIXELS:
            raise InvalidInput(f"a camera renders {w}x{h} pixels; frames must have 1 to {MAX_RENDER_PIXELS:,} pixels "
                               "(8192 x 8192): change the resolution or its percentage")
    source = ctx.resolve(params.source)
    device = render_device()
    sequence = None
    if source.is_dir():
        sequence = read_sequence(source)
        gaussians = sequence.base.to_torch(device)
        index = torch.as_tensor(sequence.dynamic_index, device=device)
    elif source.suffix.lower() == ".ply":
        gaussians = read_ply(source).to_torch(device)
    else:
        raise InvalidInput(f"{source} is neither a .ply file nor a .lw4d folder")
    times = params.times if params.times is not None else [float(f) for f in params.frames]
    config = RasterConfig(sh_degree=params.sh_degree, background=params.background, depth=False,  # RGBA frames
                          tile_size=AUTO_TILE)

    name = Path(params.out_dir).name
    name = name if name not in ("", "..") else "render"  # ".." would be jobs/ itself
    out = ctx.job_dir / name
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    if params.write_mp4:
        if len({s.image_size for s in specs}) != 1:
            raise InvalidInput("cannot write one MP4 from frames of different sizes: keep the resolution fixed")
        mp4 = out / f"{name}.mp4"
        writer = imageio.get_writer(mp4, fps=params.fps, codec="libx264", pixelformat="yuv420p",
                                    macro_block_size=2, ffmpeg_log_level="error")
    artifacts = []
    n = len(params.frames)
    try:
        for i, (frame, spec, t) in enumerate(zip(params.frames, specs, times)):
            ctx.progress(i / n, f"rendering frame {frame} ({i + 1}/{n})")
            if sequence is not None:
                f = frame_gaussians(sequence, t)
                vals = {k: torch.as_tensor(v, device=device) for k, v in vars(f).items() if v is not None}
                gaussians = write_dynamic(gaussians, index, **vals)
            with torch.no_grad():
                r = rasterize(gaussians, blender_to_opencv(spec), config)
            if config.tile_size == AUTO_TILE:  # chosen on the first frame, kept for the rest (no cost per frame)
                config = replace(config, tile_size=r.meta["tile_size"])
            path = out / f"frame_{frame:04d}.png"
            imageio.imwrite(path, to_rgba8(r.color, r.alpha, params.background))
            artifacts.append(ctx.artifact(path))
            if writer is not None:
                writer.append_data(_pad_even((r.color.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()))
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        artifacts.append(ctx.artifact(mp4))
    ctx.progress(1.0, f"rendered {n} frame(s)")
    return artifacts
