"""Job kinds ``moe_router``: stage 2 of MoE-GS over a trained run (router, optional gate-aware pruning, optional
distillation into one expert), held-out metrics and a ``.lw4d`` bake of the mixture; ``moe_render``: the true
per-pixel mixture rendered from Blender cameras (it cannot live in one cloud, so the add-on shows it as frames)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from ..jobs import JobContext, job_kind
from .jobs import resolve_run


class MoeRouterParams(BaseModel):
    run: str = Field(..., min_length=1, description="Run folder written by moe_train (two or more trained experts).")
    iterations: int = Field(2000, ge=1, le=1_000_000, description="Router training steps (experts frozen).")
    router: Literal["volume_pixel", "volume", "pixel"] = Field(
        "volume", description="Router: 'volume' (splatted per-Gaussian gates; the best held-out blend on the H100 "
        "ablation), 'volume_pixel' (MoE-GS's volume-aware pixel router: per-Gaussian gate features splatted, then a "
        "per-pixel decoder with the camera ray) or 'pixel' (the decoder on the ray and time only).")
    gate: Literal["field", "param"] = Field("param", description="The volume router's gate: a free per-Gaussian "
                                            "logit ('param') or an MLP on encoded position and time ('field').")
    seed: int = Field(0, ge=0, description="Router seed (camera draws, decoder initialisation).")
    expert_bias: bool | None = Field(None, description="A learned logit per expert added to every pixel's gates: "
                                     "the blend of regions no Gaussian argues about; null: on for the volume router "
                                     "only.")
    gate_decay: float = Field(0.0, ge=0.0, le=10.0, description="L2 weight pulling per-Gaussian gates ('param' "
                              "gate) back to that blend; 0: none.")
    joint: bool = Field(False, description="Also fine-tune the experts (learning rates x 0.1) with the router.")
    prune: bool = Field(False, description="Remove the Gaussians the gate needs least: at least prune_fraction of "
                        "them, and every one under prune_threshold; writes <run>/mixture/pruned.pt.")
    prune_method: Literal["peak", "gate_gradient"] = Field("peak", description="'peak': keep the Gaussians that "
                                                           "paint prune_threshold pixels of the blend in some training "
                                                           "view; 'gate_gradient' (MoE-GS's score): keep those whose "
                                                           "loss gradient through the gate is >= prune_threshold x "
                                                           "the mean.")
    prune_threshold: float = Field(0.05, ge=0.0, description="Pruning threshold (units: prune_method).")
    prune_fraction: float = Field(0.5, ge=0.0, lt=1.0, description="Share of the mixture's Gaussians pruned at least "
                                  "(lowest scores first; 0: the threshold alone).")
    prune_finetune: int | None = Field(None, ge=0, le=1_000_000, description="Steps on the pruned mixture "
                                       "(the gates read the experts' remaining Gaussians); null: a tenth of "
                                       "iterations; 0: none.")
    prune_joint: bool = Field(True, description="Those steps also fine-tune the experts (learning rates x 0.1); "
                              "false: the router alone.")
    distill: str = Field("", description="Expert family to distil the mixture into (fine-tuned on its renders); "
                                         "empty: no distillation.")
    distill_iterations: int = Field(1000, ge=1, le=1_000_000, description="Fine-tuning steps of the student.")
    distill_method: Literal["renders", "gated"] = Field("gated", description="'gated' (MoE-GS's loss): the truth "
                                                        "where the router chose the student, the mixture elsewhere; "
                                                        "'renders': the student learns the mixture's renders.")
    refit_iterations: int = Field(0, ge=0, le=1_000_000, description="When the run kept views back for the router "
                                  "(moe_train router_views): after the router, the experts train this many steps "
                                  "on every training camera, the kept-back ones included; the router is kept. "
                                  "0: no refit.")
    bake: bool = Field(True, description="Bake the (pruned) mixture to <run>/mixture/mixture.lw4d.")

    @model_validator(mode="after")
    def _gate_decay_needs_param_gates(self):
        if self.gate_decay and (self.gate != "param" or self.router != "volume"):
            raise ValueError(f"gate_decay acts on the volume router's per-Gaussian gates: use router 'volume' and "
                             f"gate 'param' with it (got {self.router!r}, {self.gate!r})")
        return self


@job_kind("moe_router", MoeRouterParams)
def moe_router(ctx: JobContext, params: MoeRouterParams) -> list[str]:
    """Train the router (cancel keeps a resumable checkpoint), then prune / distil / bake as asked; writes
    <run>/mixture/report.json with held-out PSNR, SSIM, FPS and size of the mixture (and pruned, distilled, and the
    baked cloud that Import brings)."""
    from .run_mixture import MixtureRunConfig, run_mixture  # torch: imported when a job runs

    run = resolve_run(ctx, params.run)
    cfg = MixtureRunConfig(iterations=params.iterations, router=params.router, gate=params.gate, seed=params.seed,
                           expert_bias=params.expert_bias, gate_decay=params.gate_decay, joint=params.joint,
                           prune=params.prune, prune_method=params.prune_method,
                           prune_threshold=params.prune_threshold, prune_fraction=params.prune_fraction,
                           prune_finetune=params.prune_finetune, prune_joint=params.prune_joint,
                           distill=params.distill,
                           distill_iterations=params.distill_iterations, distill_method=params.distill_method,
                           refit_iterations=params.refit_iterations, bake=params.bake)
    report = run_mixture(Path(run), cfg, progress=ctx.progress, cancel=ctx.cancel_event)
    return [ctx.artifact(Path(p)) for p in report["artifacts"]]


class MoeRenderParams(BaseModel):
    run: str = Field(..., min_length=1, description="Run folder with a trained router (<run>/mixture/mixture.pt).")
    cameras: list[dict] = Field(..., min_length=1, max_length=10_000,
                                description="One Blender camera spec per frame (docs/ARCHITECTURE.md), in the run's "
                                            "world frame (where Import puts the run's Gaussians).")
    times: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(
        ..., description="Dataset frame (0 = first; fractions between frames) of each camera (finite).")
    frames: list[Annotated[int, Field(ge=0)]] = Field(
        ..., description="Output frame numbers (file names), one per camera: distinct, >= 0.")
    pruned: bool = Field(False, description="Render <run>/mixture/pruned.pt instead of the full mixture.")
    out_dir: str = Field("mixture_render", description="Folder inside the job folder (only its last component).")

    @model_validator(mode="after")
    def _lengths(self):
        if not len(self.cameras) == len(self.times) == len(self.frames):
            raise ValueError(f"need one time and one frame number per camera: {len(self.cameras)} cameras, "
                             f"{len(self.times)} times, {len(self.frames)} frames")
        if len(set(self.frames)) != len(self.frames):
            twice = sorted(f for f, n in Counter(self.frames).items() if n > 1)
            raise ValueError(f"frame numbers {twice[:10]} appear more than once (each names an output file); give "
                             "every camera its own frame number")
        return self


@job_kind("moe_render", MoeRenderParams)
def moe_render(ctx: JobContext, params: MoeRenderParams) -> list[str]:
    """Render the run's mixture (every expert, the router's per-pixel blend) from each camera into
    <job_dir>/<out_dir>/frame_NNNN.png (RGB, the training background where nothing is)."""
    from .run_mixture import render_mixture_frames  # torch: imported when a job runs

    paths = render_mixture_frames(resolve_run(ctx, params.run), params.cameras, params.times, params.frames,
                                  ctx.job_dir / (Path(params.out_dir).name.strip(".") or "mixture_render"),
                                  params.pruned, progress=ctx.progress, cancel=ctx.cancel_event)
    return [ctx.artifact(p) for p in paths]
