"""Job kind ``render_splats``: render a static ``.ply`` or a ``.lw4d`` sequence through Blender cameras.

Frames go to ``<job_dir>/<out_dir>/frame_%04d.png`` (RGBA, straight colour, alpha = splat coverage) and, when
asked, ``<out_dir>/<out_dir>.mp4`` (H.264, yuv420p, colour over the background, padded to even size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from ..errors import InvalidInput
from ..jobs import JobContext, job_kind
from .cameras import BlenderCameraSpec, blender_to_opencv
from .rasterize import RasterConfig, rasterize


class RenderSplatsParams(BaseModel):
    """Parameters of ``render_splats``."""

    source: str = Field(description="path of a 3DGS .ply file or a .lw4d sequence folder")
    cameras: list[dict] = Field(description="one Blender camera spec per frame (docs/ARCHITECTURE.md)")
    frames: list[int] = Field(description="output frame numbers (file names), same length as cameras")
    times: list[float] | None = Field(None, description="sequence time in sequence frames for each output frame "
                                                        "(.lw4d only; default: the frame numbers)")
    out_dir: str = Field("render", description="name of the output folder inside the job folder (of a path, "
                                               "only the last component is used)")
    write_mp4: bool = Field(False, description="also write an H.264 MP4 of the frames")
    fps: float = Field(24.0, gt=0, description="frames per second of the MP4")
    background: tuple[float, float, float] = Field((0.0, 0.0, 0.0), description="RGB under the splats in the MP4")
    sh_degree: int | None = Field(None, ge=0, le=3, description="SH degree to evaluate (default: all)")

    @model_validator(mode="after")
    def _lengths(self):
        if len(self.cameras) != len(self.frames) or not self.frames:
            raise ValueError(f"need one camera per frame and at least one frame: {len(self.cameras)} cameras, "
                             f"{len(self.frames)} frames")
        if self.times is not None and len(self.times) != len(self.frames):
            raise ValueError(f"times has {len(self.times)} entries for {len(self.frames)} frames")
        return self


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


@job_kind("render_splats", RenderSplatsParams)
def render_splats(ctx: JobContext, params: RenderSplatsParams) -> list[str]:
    """Render Gaussians (static .ply or .lw4d sequence) from Blender cameras into PNGs (+ MP4)."""
    import imageio.v2 as imageio

    from ..io.lw4d import frame_gaussians, read_sequence
    from ..io.ply import read_ply
    from .frames import write_dynamic

    specs = [BlenderCameraSpec.from_dict(c) for c in params.cameras]
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
    config = RasterConfig(sh_degree=params.sh_degree, background=params.background)

    name = Path(params.out_dir).name or "render"
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
