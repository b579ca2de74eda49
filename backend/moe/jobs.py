"""Job kinds of MoE-GS: ``moe_train`` (train experts on a multi-view video), ``moe_eval`` (held-out metrics +
picture grid), ``moe_export`` (bake one expert to a ``.lw4d`` sequence)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from ..io.lw4d import LW4D
from ..io.outputs import OutputKind
from ..jobs import JobContext, Output, job_kind

RUN_FOLDER = OutputKind("a MoE-GS run folder", lambda path: Path(path, "run.json").is_file(), continues=True)


def resolve_run(ctx: JobContext, user_path: str) -> Path:
    """A run folder the user names, and the dataset its ``run.json`` names (read again by every stage-2 job) both
    checked against the backend's path policy: a run.json edited to point outside the allowed folders is refused."""
    from ..errors import InvalidInput
    from .train import read_run

    run = ctx.resolve(user_path)
    if (run / "run.json").is_file():
        dataset = str(read_run(run).get("dataset", ""))
        try:
            ctx.policy.check(Path(dataset), dataset)
        except InvalidInput as exc:
            raise InvalidInput(f"{run / 'run.json'} names a dataset this backend may not read: {exc}") from None
    return run


class MoeTrainParams(BaseModel):
    dataset: str = Field(..., min_length=1, description="N3V or Technicolor dataset folder (absolute, or relative "
                                                        "to the workspace).")
    out: Annotated[str, Output(RUN_FOLDER)] = Field("", description="Run folder; empty: <job_dir>/run. An existing "
                                                                    "run is resumed; any other existing folder is "
                                                                    "refused unless empty.")
    experts: list[str] = Field(["deformation", "trajectory", "keyframe"], min_length=1,
                               description="Experts to train, one after the other: deformation, trajectory, keyframe.")
    iterations: int = Field(3000, ge=1, le=1_000_000, description="Training steps per expert.")
    downsample: float = Field(1.0, ge=1.0, le=64.0, description="Divide the video resolution by this factor.")
    options: dict[str, dict] = Field({}, description="Per-expert config overrides, e.g. {\"keyframe\": "
                                                     "{\"keyframe_interval\": 3}}.")
    router_views: int = Field(0, ge=0, le=64, description="Training cameras the experts never see, kept for the "
                              "router (the ones nearest the rig centre); 0: the router trains on the training views.")
    frames: tuple[int, int | None] | None = Field(None, description="[start, end) of the frames to train on (N3V: "
                                                  "video frame indices; Technicolor: the frame numbers in the file "
                                                  "names; end null: to the end); null: the whole video "
                                                  "(Technicolor: STG's clip for a known scene).")

    @field_validator("frames")
    @classmethod
    def _range(cls, v):
        from ..errors import InvalidInput
        from .data import check_frame_range

        try:
            check_frame_range(v)  # the same rule as TrainConfig, refused when the job is submitted
        except InvalidInput as exc:
            raise ValueError(str(exc)) from exc
        return v


@job_kind("moe_train", MoeTrainParams)
def moe_train(ctx: JobContext, params: MoeTrainParams) -> list[str]:
    """Train each expert on the dataset (checkpoints under <run>/<expert>/; cancel keeps a resumable one)."""
    from .train import TrainConfig, train_run

    out = ctx.resolve(params.out) if params.out else ctx.job_dir / "run"
    cfg = TrainConfig(iterations=params.iterations, downsample=params.downsample, router_views=params.router_views,
                      frames=params.frames)
    ctx.progress(0.0, "loading the dataset")
    run = train_run(ctx.resolve(params.dataset), out, params.experts, cfg, params.options,
                    progress=ctx.progress, cancel=ctx.cancel_event)
    return ctx.artifacts([run / "run.json"] + [run / e / "checkpoint.pt" for e in params.experts])


class MoeEvalParams(BaseModel):
    run: str = Field(..., min_length=1, description="Run folder written by moe_train.")
    experts: list[str] = Field([], description="Experts to evaluate; empty: every trained one.")


@job_kind("moe_eval", MoeEvalParams)
def moe_eval(ctx: JobContext, params: MoeEvalParams) -> list[str]:
    """PSNR / SSIM / LPIPS (when available) / FPS / size on the held-out camera -> report.json + grid.png."""
    from .evaluate import evaluate_run

    run = resolve_run(ctx, params.run)
    ctx.progress(0.0, "evaluating")
    evaluate_run(run, params.experts or None)
    ctx.progress(1.0, "evaluated")
    return [ctx.artifact(run / "report.json"), ctx.artifact(run / "grid.png")]


class MoeExportParams(BaseModel):
    run: str = Field(..., min_length=1, description="Run folder written by moe_train.")
    out: Annotated[str, Output(LW4D)] = Field("", description="Output .lw4d folder; empty: "
                                                              "<job_dir>/<expert>.lw4d.")
    replace: bool = Field(False, description="Replace the .lw4d sequence an earlier export wrote at out (anything "
                                             "else there is never replaced).")
    expert: str = Field("", description="Expert to bake; empty: the first trained one.")
    frames: int = Field(0, ge=0, le=100_000, description="Frames to bake; 0: the dataset's frame count.")


@job_kind("moe_export", MoeExportParams)
def moe_export(ctx: JobContext, params: MoeExportParams) -> list[str]:
    """Bake a trained expert to a .lw4d sequence (dataset frames, dataset world frame)."""
    from .export import export_expert
    from .train import read_run

    run = resolve_run(ctx, params.run)
    expert = params.expert or next((e for e in read_run(run)["experts"] if (run / e / "checkpoint.pt").is_file()), "")
    out = ctx.resolve(params.out) if params.out else ctx.job_dir / f"{expert}.lw4d"
    path = export_expert(run, out, expert, params.frames or None, progress=ctx.progress, replace=params.replace)
    return ctx.artifacts([path / "manifest.json"])
