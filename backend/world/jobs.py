"""Job kinds of LivingWorld stages 1-2: ``world_new``, ``world_expand``, ``world_undo``.

Each one writes a version of the world (``backend.world.store``) and returns, as artifacts in the job folder,
``gaussians.ply`` (all Gaussians of the current version, INRIA 3DGS PLY with ``region`` and ``step``
properties), ``preview.png`` (the world rendered from the current step's camera) and ``step.json``
(``{"world": abs path, "step": index, "steps": count, "camera": Blender camera spec of the step, "stats": ...}``)
so the add-on can create/refresh the Gaussians object and the camera.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from ..io.atomic import atomic_file
from ..jobs import DeviceName, JobContext, Output, job_kind
from ..models.config import ModelConfig
from . import store


class ModelChoice(BaseModel):
    """Which provider runs each model role: "auto" (real weights if present, else built-in), "builtin", or a
    Hugging Face repo id / local folder that must be present (a local folder under the backend's path policy)."""

    depth: str = "auto"
    segmentation: str = "auto"
    outpaint: str = "auto"
    device: DeviceName = "auto"


class WorldNewParams(BaseModel):
    image: str = Field(description="path of the input image (PNG/JPEG)")
    depth: str | None = Field(None, description="optional depth map: .npy (metres) or 16-bit .png (millimetres)")
    prompt: str = Field("", description="text describing the scene (used by outpainting)")
    out: Annotated[str | None, Output(store.WORLD_FOLDER)] = Field(None, description="world folder to create (default "
                                                                        "<workspace>/worlds/<id>); a new or empty "
                                                                        "folder")
    resolution: int = Field(512, ge=32, le=2048, description="long side of the working image in pixels")
    models: ModelChoice = Field(default_factory=ModelChoice)


class WorldExpandParams(BaseModel):
    world: str = Field(description="world folder")
    camera: dict = Field(description="Blender camera spec of the new view (docs/ARCHITECTURE.md)")
    prompt: str = Field("", description="text for the new content")


class WorldUndoParams(BaseModel):
    world: str = Field(description="world folder")


def _publish(ctx: JobContext, world: store.World) -> list[str]:
    """Link (or copy) the current version's PLY and preview into the job folder and write step.json."""
    out = []
    for name in ("gaussians.ply", "preview.png"):
        src, dst = world.file(name), ctx.job_dir / name
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)  # step files are never modified once committed, so a hard link is safe
        except OSError:
            shutil.copy2(src, dst)
        out.append(ctx.artifact(dst))
    info = {"world": str(Path(world.root).resolve()), "step": world.current.index, "steps": len(world.steps),
            "camera": world.current.camera["blender"], "stats": world.current.stats,
            "providers": world.current.providers}
    with atomic_file(ctx.job_dir / "step.json") as f:
        f.write(json.dumps(info, indent=1).encode())
    return out + [ctx.artifact(ctx.job_dir / "step.json")]


@job_kind("world_new", WorldNewParams)
def world_new_job(ctx: JobContext, params: WorldNewParams) -> list[str]:
    """Create a world from one image: depth, sky/water/ground, one Gaussian surfel per pixel."""
    from .pipeline import WorldConfig, new_world  # torch: imported when a job runs, not at server start

    for role in ("depth", "segmentation", "outpaint"):
        ctx.policy.check_model(getattr(params.models, role), f"models.{role}")
    out = ctx.resolve(params.out) if params.out else ctx.workspace / "worlds" / secrets.token_hex(4)
    config = WorldConfig(resolution=params.resolution, models=ModelConfig(**params.models.model_dump()))
    world = new_world(ctx.resolve(params.image), out, ctx.resolve(params.depth) if params.depth else None,
                      params.prompt, config, progress=ctx.progress)
    ctx.progress(0.97, "publishing")
    return _publish(ctx, world)


@job_kind("world_expand", WorldExpandParams)
def world_expand_job(ctx: JobContext, params: WorldExpandParams) -> list[str]:
    """Expand a world from a new Blender camera: render, outpaint the missing part, add aligned Gaussians."""
    from .pipeline import camera_from_blender, expand_world

    root = ctx.resolve(params.world)
    world = store.load_world(root)
    camera = camera_from_blender(params.camera, world)
    world = expand_world(root, camera, params.prompt, blender=params.camera, progress=ctx.progress,
                         policy=ctx.policy)
    return _publish(ctx, world)


@job_kind("world_undo", WorldUndoParams)
def world_undo_job(ctx: JobContext, params: WorldUndoParams) -> list[str]:
    """Step the world back to its previous version."""
    from .pipeline import undo_world

    world = undo_world(ctx.resolve(params.world))
    return _publish(ctx, world)
