"""Job kinds ``motion_update``, ``world_bake`` and ``world_metrics`` (thin wrappers over ``pipeline`` and
``metrics``)."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from backend.io.lw4d import LW4D
from backend.jobs import DeviceName, JobContext, Output, job_kind


class PresetSpec(BaseModel):
    preset: str = Field(description="clouds | water | smoke | fog | fire")
    region: str = Field("", description="segmentation region: sky | water | ground | all (default by preset)")
    mask: str | None = Field(None, description="PNG mask at the view's resolution (non-zero = inside)")
    direction: tuple[float, float] = Field((1.0, 0.0), description="on screen: x right, y up")
    speed: float = Field(1.0, ge=0, description="pixels per frame")


class HintSpec(BaseModel):
    strokes: list[list[tuple[float, float]]] = Field(description="polylines of (x, y) pixels, x right, y down")
    speed: float = Field(1.0, ge=0, description="pixels per frame")
    mask: str | None = Field(None, description="PNG region to densify over (default: near the strokes)")


class FieldSpec(BaseModel):
    """Motion-field size and fitting effort (used when the field is created / for each fit); unset: the device's
    default (16 hashed levels of 2^19 rows and 400 / 40 steps on CUDA, 5 dense levels and 100 / 100 on a CPU)."""

    n_levels: int | None = Field(None, ge=1, le=32)
    log2_table_size: int | None = Field(None, ge=8, le=24)
    steps: int | None = Field(None, ge=1, description="Adam steps of the first fit")
    update_steps: int | None = Field(None, ge=1, description="Adam steps of each later (warm-started) fit")


class MotionUpdateParams(BaseModel):
    world: str = Field(description="world folder")
    view: int | None = Field(None, description="world step index of the view (default: current)")
    presets: list[PresetSpec] = Field(default_factory=list)
    hints: list[HintSpec] = Field(default_factory=list)
    model: str | None = Field(None, description="Eulerian motion model folder (config.json + model.safetensors)")
    speed: float = Field(1.0, ge=0, description="fallback speed when nothing else is given (pixels per frame)")
    field: FieldSpec = Field(default_factory=FieldSpec)
    device: DeviceName = Field("auto", description="auto | cpu | cuda | cuda:N")


class WorldBakeParams(BaseModel):
    world: str = Field(description="world folder")
    frames: int = Field(120, ge=2, le=100_000)
    loop: bool = True
    smooth: bool = Field(True, description="smoothstep cross-fade (false: linear)")
    fps: float = Field(24.0, gt=0)
    out: Annotated[str | None, Output(LW4D)] = Field(None, description=".lw4d folder to write (default: "
                                                                       "<job>/loop.lw4d)")
    replace: bool = Field(False, description="replace the .lw4d sequence an earlier bake wrote at out (anything "
                                             "else there is never replaced)")
    device: DeviceName = Field("auto", description="auto | cpu | cuda | cuda:N")


@job_kind("motion_update", MotionUpdateParams)
def motion_update(ctx: JobContext, params: MotionUpdateParams) -> list[str]:
    """Add a view's motion (presets, hints, model or the sky/water fallback) to the world's motion field."""
    # torch-heavy modules are imported when a job runs, so the server starts without them
    from .field import FieldSize
    from .pipeline import HintStrokes, MotionUpdate, PresetRegion, update_motion

    request = MotionUpdate(
        view=params.view,
        presets=tuple(PresetRegion(p.preset, p.region, str(ctx.resolve(p.mask)) if p.mask else None,
                                   tuple(p.direction), p.speed) for p in params.presets),
        hints=tuple(HintStrokes([list(map(tuple, s)) for s in h.strokes], h.speed,
                                str(ctx.resolve(h.mask)) if h.mask else None) for h in params.hints),
        model=str(ctx.resolve(params.model)) if params.model else None, speed=params.speed, device=params.device,
        field=FieldSize(params.field.n_levels, params.field.log2_table_size, params.field.steps,
                        params.field.update_steps))
    world = update_motion(ctx.resolve(params.world), request, progress=ctx.progress)
    report = ctx.job_dir / "motion.json"
    report.write_text(json.dumps({"world": str(world.root), "step": world.current.index,
                                  **world.current.stats["motion"]}, indent=1))
    ctx.progress(1.0, f"motion updated: {world.current.stats['motion']['status']}")
    return [ctx.artifact(report)]


@job_kind("world_bake", WorldBakeParams)
def world_bake(ctx: JobContext, params: WorldBakeParams) -> list[str]:
    """Bake the world's motion to a seamless .lw4d loop by bidirectional propagation."""
    from .bake import BakeConfig
    from .pipeline import bake_world

    out = ctx.resolve(params.out) if params.out else ctx.job_dir / "loop.lw4d"
    cfg = BakeConfig(frames=params.frames, loop=params.loop, smooth=params.smooth, fps=params.fps)
    path = bake_world(ctx.resolve(params.world), out, cfg, device=params.device, progress=ctx.progress,
                      replace=params.replace)
    ctx.progress(1.0, f"baked {params.frames} frames")
    return ctx.artifacts(sorted(path.iterdir()))


class WorldMetricsParams(BaseModel):
    world: str = Field(description="world folder (its first camera is the view the loop is measured from)")
    sequence: str | None = Field(None, description=".lw4d of this world to measure (default: the current world "
                                                   "baked in memory)")
    frames: int = Field(60, ge=3, le=100_000, description="loop length when the world is baked in memory")
    size: int | None = Field(None, ge=16, le=4096, description="long side of the renders (default: the world's "
                                                               "resolution on CUDA, 128 px on a CPU)")
    pairs: int | None = Field(-1, ge=-1, description="frame triplets to render: -1 the device's default (every "
                                                     "frame on CUDA, 3 on a CPU), None every frame, else >= 1")
    device: DeviceName = Field("auto", description="auto | cpu | cuda | cuda:N")

    @field_validator("pairs")
    @classmethod
    def _some_pairs(cls, v: int | None) -> int | None:
        if v == 0:
            raise ValueError("0 frame triplets measure nothing: give -1 (the device's default), null (every frame) "
                             "or a count >= 1")
        return v


@job_kind("world_metrics", WorldMetricsParams)
def world_metrics(ctx: JobContext, params: WorldMetricsParams) -> list[str]:
    """Measure a world's loop as a user sees it: VBench temporal flicker, motion smoothness, the loop seam against an
    ordinary frame step, the uncovered share of pixels (metrics.json)."""
    from .metrics import measure_world

    quality = measure_world(ctx.resolve(params.world), ctx.resolve(params.sequence) if params.sequence else None,
                            frames=params.frames, size=params.size,
                            pairs="auto" if params.pairs == -1 else params.pairs, device=params.device,
                            progress=ctx.progress)
    report = ctx.job_dir / "metrics.json"
    report.write_text(json.dumps(quality.to_json(), indent=1))
    ctx.progress(1.0, f"flicker {quality.temporal_flicker:.4f}, seam {quality.seam_ratio:.2f} frame steps")
    return [ctx.artifact(report)]
