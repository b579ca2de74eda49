"""Job kind ``render_splats``: render a static ``.ply`` or a ``.lw4d`` sequence through Blender cameras.

Frames go to ``<job_dir>/<out_dir>/frame_%04d.png`` (RGBA, straight colour, alpha = splat coverage) and, when
asked, ``<out_dir>/<out_dir>.mp4`` (H.264, yuv420p, colour over the background, padded to even size).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from ..jobs import JobContext, job_kind


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


@job_kind("render_splats", RenderSplatsParams)
def render_splats(ctx: JobContext, params: RenderSplatsParams) -> list[str]:
    """Render Gaussians (static .ply or .lw4d sequence) from Blender cameras into PNGs (+ MP4)."""
    from .sequence_render import render_splats_to_files  # torch: imported when a job runs

    return render_splats_to_files(ctx, params)
