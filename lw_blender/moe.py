"""MoE-GS in Blender: train dynamic Gaussian experts (and their pixel router) on a multi-view video, show how they
score on the held-out camera, and play the result on the timeline.

Training is a chain of backend jobs (``backend/moe``), then ONE apply on the main thread::

    train        moe_train {dataset, experts, iterations, downsample, router_views, frames}
                 [-> moe_router {run, iterations, router, gate, expert_bias, joint, prune, prune_threshold,
                                 distill, distill_iterations}]                                 (router on)
                 -> moe_eval {run} -> apply: Scene.lw.moe.run, metrics, image "LW MoE Preview" (grid.png)
    import_run   moe_export {run, expert, frames} -> import_gaussians {the .lw4d} -> apply   (an expert, or the
                                                                                         distilled student)
                 import_gaussians {<run>/mixture/mixture.lw4d} -> apply                 (the mixture baked into
                                                                                         one cloud by moe_router)
                 apply: a carrier playing the sequence (lw_blender.splats.carrier / playback), scene frame range =
                 the sequence, camera "LW MoE Held-out Camera" at the dataset's held-out view.
    render_mixture  moe_render {run, one camera spec per rendered frame of the scene's range (every
                 frame_step-th), dataset frames}
                 -> apply: an image strip "MoE mixture render (<camera>)" in the sequencer (the PNG frames, each
                 held for frame_step frames, so the strip keeps the scene's time)

Metrics (Scene.lw.moe.metrics, one row each): every expert from ``<run>/report.json`` (moe_eval:
``experts.<name>.{psnr, ssim, lpips, fps, size_bytes, num_gaussians}``), then the mixture rows of
``<run>/mixture/report.json`` (moe_router: ``moe``, and when asked ``pruned``, ``baked``, ``distilled``,
``finetuned``). What the artist gets is what was scored: every row that can be imported (each expert, the baked
cloud, the distilled student) carries its own held-out score, and Scene.lw.moe.best / Import start on the best of
those. The true per-pixel mixture ("MoE") cannot live in one cloud: it is offered as a backend render of the scene
camera's path (``render_mixture``), labelled as that render.

Nothing in the scene changes before the last job of a chain succeeded and its files were read, so a failing or
cancelled job leaves the scene as it was. Background mode (scripts, tests): the chain blocks. With a UI every job
goes through ``jobs.submit_job`` and the next starts from its ``on_done`` (progress and cancel: Backend panel).

Held-out camera. run.json names the dataset and its held-out camera (``cameras[test[0]]``); no Blender camera spec
is recorded, so the add-on computes one from the dataset's OpenCV intrinsics K and extrinsics (world_to_cam) with
numpy. Convention: Blender camera frame = OpenCV camera frame with y and z flipped, so
``matrix_world = inverse(world_to_cam) @ diag(1, -1, -1, 1)``; the lens follows Blender's viewplane
(backend/render/cameras.py): fx = lens * viewfac / sensor_width, cx = W / 2 - shift_x * viewfac,
cy = H / 2 + shift_y * viewfac / ycor, ycor = fx / fy. N3V: LLFF pose [R (down, right, back) | centre | hwf] ->
camera-to-world axes (right, down, forward) = (R1, R0, -R2), K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]] at hwf.
Technicolor: ``cameras_parameters.txt`` row ``f cx cy ar skew qw qx qy qz tx ty tz`` is COLMAP's (OpenCV)
world_to_cam; the image size is read from the camera's first PNG.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import bpy
import numpy as np

from . import preferences, state, world
from .connection import jobs
from .splats import carrier, playback, render

EXPERTS = ("deformation", "trajectory", "keyframe", "embedding")  # every family the backend trains
DEFAULT_EXPERTS = ("deformation", "trajectory", "keyframe")  # MoE-GS(n=3); with "embedding": MoE-GS(n=4)
EXPERT_ITEMS = [
    ("deformation", "Deformation", "Canonical Gaussians + HexPlane deformation field (4DGaussians)"),
    ("trajectory", "Trajectory", "Per-Gaussian polynomial trajectories with temporal opacity (STG)"),
    ("keyframe", "Keyframe", "Explicit keyframed motion, interpolated between keys (Ex4DGS)"),
    ("embedding", "Embedding", "Per-Gaussian codes decoded with time codes into motion (E-D3DGS)"),
]
DISTILL_ITEMS = [("NONE", "None", "No distillation")] + [
    (name, label, (f"Distil the mixture into the {label.lower()} expert (fine-tuned on the truth where the "
                   "router chose it, on the mixture elsewhere: MoE-GS's loss)"))
    for name, label, _ in EXPERT_ITEMS]
EXPERT_BIAS = True  # the router's learned per-expert weight (backend.moe.router: expert_bias) by default
GATE_ITEMS = [("PARAM", "Per-Gaussian", "A free gate value on every Gaussian"),
              ("FIELD", "Field", "Gates from a small network on each Gaussian's position and time (smooth in space)")]
ROUTER_ITEMS = [  # the default first: the best held-out blend on the H100 ablation (docs/bench/moe_mixture.md)
    ("VOLUME", "Volume Only", "Per-Gaussian gates splatted like colour, no per-pixel decoder (Gate, Expert Bias)"),
    ("VOLUME_PIXEL", "Volume-aware Pixel", ("MoE-GS's router: per-Gaussian gate features splatted like colour, read "
     "per pixel with the camera ray by a small decoder")),
    ("PIXEL", "Pixel Only", "A per-pixel decoder on the camera ray and time, blind to the experts' Gaussians")]
IMPORT_ITEMS = [("BEST", "Best Scored", ("The importable model with the best held-out PSNR: an expert, the distilled "
                 "student or the baked cloud (the run's own reports)")),
                ("MIXTURE", "Mixture (baked cloud)", ("The router's blend baked into one cloud (each Gaussian's "
                 "opacity times its expert's mean weight); scored on the held-out camera as 'MoE baked'"))] + [
    (name, label, f"The {label.lower()} expert alone") for name, label, _ in EXPERT_ITEMS] + [
    ("DISTILLED", "Distilled Student", "The expert the router job distilled the mixture into")]
MIXTURE_ROWS = ("moe", "pruned", "baked", "distilled", "finetuned")  # rows of <run>/mixture/report.json, in order
ROW_LABELS = {"moe": "MoE (render only)", "pruned": "MoE pruned (render only)", "baked": "MoE baked cloud",
              "distilled": "distilled", "finetuned": "fine-tuned alone"}
IMPORTABLE = {"expert": None, "baked": "MIXTURE", "distilled": "DISTILLED"}  # row kind -> import choice (None: name)
RENDER_STRIP = "MoE mixture render"
RENDER_CAMERA_PROPERTY = "lw_mixture_camera"  # on a mixture render strip: the camera it was rendered from
PREVIEW_IMAGE = "LW MoE Preview"
CAMERA_NAME = "LW MoE Held-out Camera"
_TECHNI_RE = re.compile(r"^(?P<scene>.+)_undist_(?P<frame>\d{5})_(?P<cam>\d{2})\.png$")


class MoeError(Exception):
    """A MoE action cannot start or its result cannot be read (bad dataset or run folder, bad options, busy)."""


# --- settings ----------------------------------------------------------------------------------------------------

class LW_MoeMetric(bpy.types.PropertyGroup):
    """One row of the metrics table: an expert or a mixture variant on the held-out camera (``name``: its label)."""

    kind: bpy.props.StringProperty(name="Kind", description="expert, moe, pruned, distilled or finetuned")
    psnr: bpy.props.FloatProperty(name="PSNR", description="Mean PSNR (dB) over the held-out frames")
    ssim: bpy.props.FloatProperty(name="SSIM", description="Mean SSIM over the held-out frames")
    lpips: bpy.props.FloatProperty(name="LPIPS", default=-1.0, description="Mean LPIPS; -1: not measured")
    fps: bpy.props.FloatProperty(name="FPS", description="Render frames per second on the backend's device")
    size_mb: bpy.props.FloatProperty(name="Size (MB)", description="Parameters and buffers, 10^6 bytes")
    gaussians: bpy.props.IntProperty(name="Gaussians")


class LW_MoeSettings(bpy.types.PropertyGroup):
    """Scene.lw.moe: the MoE panel's options and the last trained run with its held-out metrics."""

    directory: bpy.props.StringProperty(name="Dataset", subtype="DIR_PATH",
                                        description="Multi-view video folder: N3V (poses_bounds.npy + camNN.mp4) "
                                                    "or Technicolor (cameras_parameters.txt + PNG frames)")
    experts: bpy.props.EnumProperty(name="Experts", items=EXPERT_ITEMS, options={"ENUM_FLAG"},
                                    default=set(DEFAULT_EXPERTS), description="Experts to train")
    iterations: bpy.props.IntProperty(name="Iterations", default=3000, min=1, max=1_000_000,
                                      description="Training steps per expert")
    downsample: bpy.props.FloatProperty(name="Downsample", default=2.0, min=1.0, max=64.0,
                                        description="Divide the video resolution by this factor")
    frame_start: bpy.props.IntProperty(name="Frame Start", default=0, min=0,
                                       description="First video frame to train on (Technicolor: the frame number "
                                                   "in the file names; 0 and 0: the dataset's clip)")
    frame_end: bpy.props.IntProperty(name="Frame End", default=0, min=0,
                                     description="Train on frames before this one; 0: to the end of the video "
                                                 "(long videos: STG trains N3V in 50-frame segments)")
    router: bpy.props.BoolProperty(name="Router", default=True,
                                   description="Train the router that blends the experts (Router Kind)")
    router_iterations: bpy.props.IntProperty(name="Router Iterations", default=2000, min=1, max=1_000_000)
    router_kind: bpy.props.EnumProperty(name="Router Kind", items=ROUTER_ITEMS, default=ROUTER_ITEMS[0][0],
                                        description="Which router blends the experts")
    gate: bpy.props.EnumProperty(name="Gate", items=GATE_ITEMS, default=GATE_ITEMS[0][0],
                                 description="How each Gaussian's gate value is computed")
    joint: bpy.props.BoolProperty(name="Fine-tune Experts",
                                  description="Train the experts with the router (learning rates x 0.1) instead of "
                                              "keeping them fixed: a sharper mixture for about 3x the router's time")
    expert_bias: bpy.props.BoolProperty(name="Expert Bias", default=EXPERT_BIAS,
                                        description="Learn one weight per expert for the regions no Gaussian argues "
                                                    "about, instead of starting from an even blend of all experts")
    router_views: bpy.props.IntProperty(name="Router Views", default=0, min=0, max=64,
                                        description="Training cameras the experts never see, kept for the router so "
                                                    "that it learns which expert does well on a new view; 0: none")
    prune: bpy.props.BoolProperty(name="Prune", description="Remove the Gaussians the gate needs least (at least "
                                  "Prune Fraction of them), then fine-tune the router and experts on the rest")
    prune_threshold: bpy.props.FloatProperty(name="Prune Threshold", default=0.05, min=0.0,
                                             description="Pixels a Gaussian must paint into the blended "
                                                         "image in at least one training view to be kept")
    prune_fraction: bpy.props.FloatProperty(name="Prune Fraction", default=0.5, min=0.0, max=0.95,
                                            description="Share of the mixture's Gaussians removed at least, those "
                                                        "that paint least first (0: the threshold alone)")
    distill: bpy.props.EnumProperty(name="Distil Into", items=DISTILL_ITEMS, default="NONE")
    distill_iterations: bpy.props.IntProperty(name="Distil Iterations", default=1000, min=1, max=1_000_000)
    # the last trained run
    run: bpy.props.StringProperty(name="Run", description="Run folder as the backend sees it")
    run_dir: bpy.props.StringProperty(name="Run Folder", subtype="DIR_PATH", description="Run folder on this machine")
    dataset: bpy.props.StringProperty(name="Trained On", description="Dataset folder of the run")
    trained: bpy.props.StringProperty(name="Trained", description="Comma-separated experts of the run")
    held_out: bpy.props.StringProperty(name="Held-out Camera")
    has_mixture: bpy.props.BoolProperty(name="Has Mixture", description="The run has a trained router")
    metrics: bpy.props.CollectionProperty(type=LW_MoeMetric)
    best: bpy.props.StringProperty(name="Best", description="The importable model with the highest held-out PSNR, "
                                   "and the mixture's margin over the best expert")
    # import
    import_expert: bpy.props.EnumProperty(name="Import", items=IMPORT_ITEMS, default="BEST")
    import_frames: bpy.props.IntProperty(name="Frames", default=0, min=0, max=100_000,
                                         description="Frames to bake for an expert; 0: the dataset's")
    import_note: bpy.props.StringProperty(name="Imported", description="What the last import added")
    render_note: bpy.props.StringProperty(name="Mixture Render", description="What the last mixture render added")


_CLASSES = (LW_MoeMetric, LW_MoeSettings)


def settings(scene=None) -> LW_MoeSettings:
    return (scene or bpy.context.scene).lw.moe


# --- job chains -------------------------------------------------------------------------------------------------

# A chain link: a job kind, its params, and what to do with its result -> the next link, or None when done.
Link = jobs.Link
_chain = jobs.Chain(MoeError)


def busy() -> str:
    """Label of the MoE action whose jobs are running ("" when none)."""
    return _chain.busy


_run_chain = _chain.run


def _artifact(result: jobs.JobResult, suffix: str) -> str:
    return jobs.artifact(result, suffix, MoeError)


def _remote(context) -> bool:
    return bool(preferences.get(context).backend_url)


# --- metrics ----------------------------------------------------------------------------------------------------

def _row(kind: str, label: str, scores: dict) -> dict:
    try:
        lpips = scores.get("lpips")
        return {"name": label, "kind": kind, "psnr": float(scores["psnr"]), "ssim": float(scores["ssim"]),
                "lpips": -1.0 if lpips is None else float(lpips), "fps": float(scores["fps"]),
                "size_mb": float(scores["size_bytes"]) / 1e6, "gaussians": int(scores["num_gaussians"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise MoeError(f"the report row {label!r} lacks a number ({exc}): {scores}") from exc


def metric_rows(eval_report: dict, mixture_report: dict | None = None) -> list[dict]:
    """Table rows: every expert of moe_eval's report, then the mixture variants of moe_router's report."""
    rows = [_row("expert", name, scores) for name, scores in eval_report.get("experts", {}).items()]
    for key in MIXTURE_ROWS if mixture_report else ():
        if key in mixture_report:
            label = ROW_LABELS[key]
            if key in ("distilled", "finetuned"):
                label = f"{mixture_report[key].get('expert', '')} {label}".strip()
            rows.append(_row(key, label, mixture_report[key]))
    if not rows:
        raise MoeError("the evaluation report lists no expert")
    return rows


def best_model(rows: list[dict]) -> tuple[str, str]:
    """(the importable model with the highest held-out PSNR -- an expert, "MIXTURE" for the baked cloud or
    "DISTILLED" -- and a line that says so, with the true mixture's score, which only a render gives). The mixture is
    not always the better model (docs/bench/moe_mixture.md), and its baked cloud is an approximation scored apart."""
    importable = [r for r in rows if r["kind"] in IMPORTABLE]
    if not any(r["kind"] == "expert" for r in rows):
        raise MoeError("the metrics list no expert")
    top = max(importable, key=lambda r: r["psnr"])
    choice = IMPORTABLE[top["kind"]] or top["name"]
    line = f"Best importable: {top['name']} ({top['psnr']:.2f} dB)"
    moe = next((r for r in rows if r["kind"] == "moe"), None)
    if moe is not None:
        line += f"; true MoE {moe['psnr']:.2f} dB (render only)"
    return choice, line


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MoeError(f"cannot read the {what} {path}: {exc}") from exc


def _load_preview(path: Path):
    """The held-out grid (ground truth | each expert, at three frames) as image "LW MoE Preview", packed."""
    old = bpy.data.images.get(PREVIEW_IMAGE)
    image = bpy.data.images.load(str(path), check_existing=False)
    if old is not None:
        bpy.data.images.remove(old)
    image.name = PREVIEW_IMAGE
    image.pack()  # the run folder may be cleaned up or remote: keep the pixels with the .blend
    if not bpy.app.background:  # the sidebar shows the preview icon; previews need a UI
        image.preview_ensure().reload()
    return image


# --- train ------------------------------------------------------------------------------------------------------

def check_dataset(context, directory: str) -> str:
    """The dataset folder to send (absolute). Checked here unless the backend is remote (its files are there)."""
    if not directory:
        raise MoeError("choose a dataset folder first (N3V: poses_bounds.npy + camNN.mp4)")
    path = Path(bpy.path.abspath(directory)).expanduser()
    if _remote(context):
        return str(path)
    path = path.resolve()
    if not path.is_dir():
        raise MoeError(f"dataset folder {path} does not exist" if not path.exists() else f"{path} is not a folder")
    if (path / "poses_bounds.npy").is_file():
        if not any(path.glob("cam[0-9][0-9].mp4")):
            raise MoeError(f"{path} has poses_bounds.npy but no camNN.mp4 videos")
        return str(path)
    if (path / "cameras_parameters.txt").is_file():
        return str(path)
    raise MoeError(f"{path} is not a multi-view video dataset: expected N3V (poses_bounds.npy + camNN.mp4) or "
                   "Technicolor (cameras_parameters.txt + <Scene>_undist_<frame>_<cam>.png)")


def train_options(experts, router: bool, distill: str) -> tuple[list[str], str]:
    """Validated expert list (backend order) and distillation target ("" for none)."""
    chosen = [name for name in EXPERTS if name in set(experts)]
    unknown = sorted(set(experts) - set(EXPERTS))
    if unknown:
        raise MoeError(f"unknown expert(s) {unknown}; choose from {', '.join(EXPERTS)}")
    if not chosen:
        raise MoeError("choose at least one expert to train")
    target = "" if distill in ("", "NONE") else distill
    if router and len(chosen) < 2:
        raise MoeError("the router blends experts: choose two or more experts, or turn the router off")
    if target:
        if not router:
            raise MoeError("distillation needs the router (the mixture is the teacher): turn the router on")
        if target not in chosen:
            raise MoeError(f"distillation fine-tunes a trained expert: {target!r} is not among {chosen}")
    return chosen, target


def train(context, directory: str, experts=DEFAULT_EXPERTS, iterations: int = 3000, downsample: float = 2.0,
          router: bool = True, router_iterations: int = 2000, prune: bool = False, prune_threshold: float = 0.05,
          distill: str = "", distill_iterations: int = 1000, router_views: int = 0, gate: str = "PARAM",
          joint: bool = False, frames: tuple[int, int] = (0, 0), expert_bias: bool = EXPERT_BIAS,
          router_kind: str = "VOLUME", blocking: bool | None = None, prune_fraction: float = 0.5) -> None:
    """Train ``experts`` on the dataset ``directory`` (then the router, pruning and distillation when asked), evaluate
    on the held-out camera and show run, metrics and preview in Scene.lw.moe (see the module docstring).
    ``frames``: [start, end) of the video to train on; end 0: to the end. ``prune``: at least ``prune_fraction`` of
    the mixture's Gaussians go, and every one under ``prune_threshold`` pixels."""
    dataset = check_dataset(context, directory)
    if not 0.0 <= float(prune_fraction) < 1.0:
        raise MoeError(f"Prune Fraction must be at least 0 and under 1 (the share of Gaussians removed at least), "
                       f"got {prune_fraction}")
    chosen, target = train_options(experts, router, distill)
    if router_views and not router:
        raise MoeError("router views are kept for the router: turn the router on, or set Router Views to 0")
    if str(gate).upper() not in {g for g, _, _ in GATE_ITEMS}:
        raise MoeError(f"gate must be one of {[g for g, _, _ in GATE_ITEMS]}, got {gate!r}")
    gate = str(gate).upper()
    kind = str(router_kind).upper()
    if kind not in {k for k, _, _ in ROUTER_ITEMS}:
        raise MoeError(f"router kind must be one of {[k for k, _, _ in ROUTER_ITEMS]}, got {router_kind!r}")
    start, end = (int(f) for f in frames)
    if end and not 0 <= start < end:
        raise MoeError(f"Frame End ({end}) must be after Frame Start ({start}), or 0 for the whole video")
    train_params = {"dataset": dataset, "experts": chosen, "iterations": int(iterations),
                    "downsample": float(downsample), "router_views": int(router_views)}
    if end or start:  # a start alone: to the end of the video
        train_params["frames"] = [start, end or None]

    def evaluate_link(run: str, mixture_report: dict | None) -> Link:
        def evaluated(context, result):
            report = _read_json(result.path(_artifact(result, "report.json")), "evaluation report")
            rows = metric_rows(report, mixture_report)
            grid = result.path(_artifact(result, "grid.png"))
            run_dir = result.path(f"{run}/run.json").parent
            _apply_trained(context, run, run_dir, dataset, chosen, report, rows, grid, mixture_report is not None)

        return ("moe_eval", {"run": run}, evaluated)

    def trained(context, result):
        run = _artifact(result, "run.json").rpartition("/")[0]
        if not router:
            return evaluate_link(run, None)
        params = {"run": run, "iterations": int(router_iterations), "router": kind.lower(), "gate": gate.lower(),
                  "joint": bool(joint), "prune": bool(prune), "prune_threshold": float(prune_threshold),
                  "prune_fraction": float(prune_fraction),
                  "distill": target, "distill_iterations": int(distill_iterations)}
        if kind == "VOLUME":  # the per-expert bias is the volume router's option (the others have per-expert features)
            params["expert_bias"] = bool(expert_bias)

        def routed(context, result):
            report = _read_json(result.path(_artifact(result, "mixture/report.json")), "mixture report")
            for name in result.artifacts:  # a remote backend: fetch the baked mixture with its report
                if "mixture.lw4d/" in name:
                    result.path(name)
            return evaluate_link(run, report)

        return ("moe_router", params, routed)

    _run_chain(context, "Train MoE", ("moe_train", train_params, trained), blocking)


def _apply_trained(context, run: str, run_dir: Path, dataset: str, experts: list[str], report: dict,
                   rows: list[dict], grid: Path, has_mixture: bool) -> None:
    """The chain succeeded: load the preview first (it can fail), then record run and metrics."""
    _load_preview(grid)
    s = settings(context.scene)
    s.run, s.run_dir, s.dataset, s.trained = run, str(run_dir), dataset, ",".join(experts)
    s.held_out = ", ".join(report.get("test_cameras", []))
    s.has_mixture = has_mixture
    s.metrics.clear()
    for row in rows:
        item = s.metrics.add()
        for key, value in row.items():
            setattr(item, key, value)
    s.import_expert, s.best = best_model(rows)  # Import starts on the best model on the held-out camera


# --- held-out camera --------------------------------------------------------------------------------------------

def opencv_to_blender_spec(K, world_to_cam, width: int, height: int, near: float = 0.1, far: float = 1000.0,
                           sensor_width: float = 36.0, sensor_height: float = 24.0) -> dict:
    """The Blender camera spec (ARCHITECTURE.md, sensor fit AUTO) that renders what the OpenCV camera sees.

    matrix_world = inverse(world_to_cam) @ diag(1, -1, -1, 1); pixel aspect from fx / fy (the smaller one 1);
    viewfac = W (horizontal fit, when aspect_x W >= aspect_y H) or ycor H; lens = fx sensor_width / viewfac;
    shift_x = (W/2 - cx) / viewfac, shift_y = (cy - H/2) ycor / viewfac.
    """
    K = np.asarray(K, dtype=np.float64)
    if abs(K[0, 1]) > 1e-9 * abs(K[0, 0]):
        raise MoeError(f"the held-out camera has skew ({K[0, 1]}); Blender cameras have none")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    aspect_x, aspect_y = (fy / fx, 1.0) if fy >= fx else (1.0, fx / fy)
    ycor = aspect_y / aspect_x
    viewfac = float(width) if aspect_x * width >= aspect_y * height else ycor * height
    matrix = np.linalg.inv(np.asarray(world_to_cam, dtype=np.float64)) @ np.diag([1.0, -1.0, -1.0, 1.0])
    return {"matrix_world": matrix.tolist(), "lens": float(fx * sensor_width / viewfac),
            "sensor_width": sensor_width, "sensor_height": sensor_height, "sensor_fit": "AUTO",
            "shift_x": float((width / 2 - cx) / viewfac), "shift_y": float((cy - height / 2) * ycor / viewfac),
            "clip_start": float(near), "clip_end": float(far), "resolution_x": int(width),
            "resolution_y": int(height), "resolution_percentage": 100, "pixel_aspect_x": float(aspect_x),
            "pixel_aspect_y": float(aspect_y)}


def n3v_camera(dataset: Path, index: int) -> tuple[np.ndarray, np.ndarray, int, int, float, float]:
    """(K, world_to_cam, W, H, near, far) of camera ``index`` of an N3V ``poses_bounds.npy`` (LLFF poses)."""
    pb = np.load(dataset / "poses_bounds.npy")
    if pb.ndim != 2 or pb.shape[1] != 17 or not 0 <= index < len(pb):
        raise MoeError(f"{dataset / 'poses_bounds.npy'} has shape {pb.shape}; camera {index} is not in it")
    pose = pb[index, :15].reshape(3, 5)
    r = pose[:, :3]
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([r[:, 1], r[:, 0], -r[:, 2]], axis=1)  # (right, down, forward) = (R1, R0, -R2)
    c2w[:3, 3] = pose[:, 3]
    h, w, f = pose[:, 4]
    K = np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])
    near, far = float(pb[index, 15]) * 0.5, float(pb[index, 16]) * 2.0  # as backend/moe/data.py pads them
    return K, np.linalg.inv(c2w), round(float(w)), round(float(h)), near, far


def _png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise MoeError(f"{path} is not a PNG image")
    return struct.unpack(">II", head[16:24])


def _rotmat_wxyz(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def technicolor_camera(dataset: Path, index: int) -> tuple[np.ndarray, np.ndarray, int, int, float, float]:
    """(K, world_to_cam, W, H, near, far) of camera ``index`` of a Technicolor ``cameras_parameters.txt``."""
    rows = [line.split() for line in (dataset / "cameras_parameters.txt").read_text().splitlines()[1:]]
    rows = [r for r in rows if r]
    if not 0 <= index < len(rows) or len(rows[index]) < 12:
        raise MoeError(f"{dataset / 'cameras_parameters.txt'} has no 12-value row for camera {index}")
    v = [float(x) for x in rows[index][:12]]
    pngs = sorted(p for p in dataset.iterdir() if (m := _TECHNI_RE.match(p.name)) and int(m["cam"]) == index)
    if not pngs:
        raise MoeError(f"{dataset} has no image of camera {index:02d} to take the image size from")
    w, h = _png_size(pngs[0])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = _rotmat_wxyz(v[5:9]), v[9:12]
    K = np.array([[v[0], 0.0, v[1]], [0.0, v[0], v[2]], [0.0, 0.0, 1.0]])
    return K, w2c, int(w), int(h), 0.01, 100.0


def held_out_camera_spec(meta: dict) -> tuple[dict | None, str]:
    """(Blender camera spec of the run's held-out camera, its name), or (None, why not) when the dataset is not
    readable on this machine (a remote backend's dataset) or names no held-out camera."""
    dataset = Path(meta.get("dataset", ""))
    test, names = meta.get("test") or [], meta.get("cameras") or []
    if not test:
        return None, "the run names no held-out camera"
    index = int(test[0])
    name = names[index] if index < len(names) else f"camera {index}"
    if (dataset / "poses_bounds.npy").is_file():
        cam = n3v_camera(dataset, index)
    elif (dataset / "cameras_parameters.txt").is_file():
        cam = technicolor_camera(dataset, index)
    else:
        return None, f"the dataset {dataset} is not on this machine"
    return opencv_to_blender_spec(*cam), name


# --- import -----------------------------------------------------------------------------------------------------

def _run_files(context, run: str) -> Path:
    """Local folder of the run ``run`` (backend path): itself when absolute and local, else the workspace mirror
    (run.json downloaded from a remote backend)."""
    path = Path(run)
    if path.is_absolute() and not _remote(context):
        return path
    return jobs.ensure_backend(context).artifact_path(f"{run.rstrip('/')}/run.json").parent


def check_run(context, directory: str) -> str:
    """The run folder to send: ``directory`` (absolute, checked when the backend is local), or the scene's run."""
    if not directory:
        run = settings(context.scene).run
        if not run:
            raise MoeError("there is no trained run yet: train one, or pick a run folder (it holds run.json)")
        return run
    path = Path(bpy.path.abspath(directory)).expanduser()
    if _remote(context):
        return str(path)
    path = path.resolve()
    if not (path / "run.json").is_file():
        raise MoeError(f"{path} is not a MoE-GS run folder (run.json is missing)" if path.is_dir()
                       else f"run folder {path} does not exist")
    return str(path)


def best_of_run(context, run: str) -> str:
    """The import choice with the best held-out score of ``run``: from the scene's metrics when they are this run's,
    else from the run's own reports (moe_eval's ``report.json``, moe_router's ``mixture/report.json``)."""
    s = settings(context.scene)
    if s.run == run and len(s.metrics):
        return best_model([{"kind": m.kind, "name": m.name, "psnr": m.psnr} for m in s.metrics])[0]

    def report(rel: str) -> dict | None:  # a local run's file, or a remote run's, downloaded; None when absent
        path = Path(run) / rel
        if _remote(context) or not path.is_absolute():
            try:
                path = jobs.ensure_backend(context).artifact_path(f"{run.rstrip('/')}/{rel}")
            except jobs.BackendError:
                return None
        return _read_json(path, f"run report {rel}") if path.is_file() else None

    scores = report("report.json")
    if scores is None:
        raise MoeError(f"the run {run} has no held-out scores yet (no report.json): evaluate it (Train MoE, or "
                       "`lw moe eval RUN`), or choose the model to import")
    return best_model(metric_rows(scores, report("mixture/report.json")))[0]


def import_run(context, directory: str = "", expert: str = "BEST", frames: int = 0, camera: bool = True,
               blocking: bool | None = None):
    """Bake ``expert`` of the run (``BEST``: the best held-out score, ``best_of_run``; ``MIXTURE``: the router's
    baked blend) to ``.lw4d`` and play it on a new carrier; set the scene's frame range to the sequence and
    (``camera``) add the held-out camera.

    Background mode: returns the carrier. With a UI: None; the carrier appears when the jobs end.
    """
    run = check_run(context, directory)
    if expert == "BEST":
        expert = best_of_run(context, run)
    meta = _read_json(_run_files(context, run) / "run.json", "run description")
    trained = list(meta.get("experts", []))
    label = Path(run.rstrip("/")).name
    if label == "run":  # the default run folder of a job: name it after its job instead
        label = Path(run.rstrip("/")).parent.name or label
    spec, camera_name = held_out_camera_spec(meta) if camera else (None, "")
    note = f"held-out camera {camera_name}" if spec is not None else (f"no camera: {camera_name}" if camera else "")
    result: dict = {}

    def imported(context, res):
        result["object"] = _apply_import(context, carrier.decoded_folder(res), name, spec)
        settings(context.scene).import_note = note

    if expert == "MIXTURE":
        local = _run_files(context, run) / "mixture" / "mixture.lw4d"
        if not _remote(context) and not (local / "manifest.json").is_file():
            raise MoeError(f"the run {run} has no baked mixture (mixture/mixture.lw4d): train it with the router on")
        name = f"MoE {label} mixture"
        first: Link = ("import_gaussians", {"path": f"{run.rstrip('/')}/mixture/mixture.lw4d"}, imported)
    else:
        if expert != "DISTILLED" and expert not in trained:
            raise MoeError(f"expert {expert!r} is not in the run {run}; it trained {trained}")
        name = f"MoE {label} {'distilled' if expert == 'DISTILLED' else expert}"

        def exported(context, res):
            return ("import_gaussians", {"path": _artifact(res, ".lw4d/manifest.json").rpartition("/")[0]}, imported)

        first = ("moe_export", {"run": run, "expert": "distilled" if expert == "DISTILLED" else expert,
                                "frames": int(frames)}, exported)
    _run_chain(context, f"Import MoE {expert}", first, blocking)
    return result.get("object")


def render_mixture(context, directory: str = "", pruned: bool = False, blocking: bool | None = None):
    """Render the run's true per-pixel mixture (``pruned``: the pruned one) with the backend from the scene camera
    at every ``frame_step``-th frame of the scene's range, and add the frames to the sequencer as an image strip
    named "MoE mixture render (<camera>)" that holds each picture for ``frame_step`` frames (it covers the range
    in the scene's time). Scene frame f is dataset frame f - frame_start (as Import lays the run's sequence on the
    timeline); the camera is taken in world space, where Import puts the run's Gaussians.

    Background mode: returns the strip. With a UI: None; the strip appears when the job ends.
    """
    run = check_run(context, directory)
    scene = context.scene
    if scene.camera is None:
        raise MoeError("the scene has no active camera to render the mixture from")
    step = max(scene.frame_step, 1)
    frames = list(range(scene.frame_start, scene.frame_end + 1, step))
    current = (scene.frame_current, scene.frame_subframe)
    cameras = []
    try:
        for frame in frames:
            scene.frame_set(frame)
            cameras.append(render.camera_spec(scene, scene.camera))
    finally:
        scene.frame_set(current[0], subframe=current[1])
    camera_name = scene.camera.name
    label = f"{RENDER_STRIP} ({camera_name})"
    scene_end = scene.frame_end
    result: dict = {}

    def rendered(context, res):
        paths = sorted(res.path(a) for a in res.artifacts if a.endswith(".png"))
        if len(paths) != len(frames):
            raise MoeError(f"the mixture render returned {len(paths)} frames for {len(frames)}: {res.artifacts}")
        result["strip"] = _apply_render(context, paths, label, camera_name, step, frames[0], scene_end)
        what = "pruned mixture" if pruned else "mixture"
        settings(context.scene).render_note = (f"{label}: the true per-pixel {what}, rendered by the backend "
                                               f"({len(paths)} frames)")

    params = {"run": run, "cameras": cameras, "times": [float(f - scene.frame_start) for f in frames],
              "frames": frames, "pruned": bool(pruned)}
    _run_chain(context, "Render MoE mixture", ("moe_render", params, rendered), blocking)
    return result.get("strip")


def _apply_render(context, paths: list[Path], label: str, camera: str, step: int, start: int, end: int):
    """An image strip from frame ``start`` to ``end`` in a free channel, showing ``paths`` (frames start, start +
    step, ...) each for ``step`` frames: an image strip shows one element per frame, so a picture is repeated
    rather than the strip playing ``step`` times too fast. An earlier render from the same ``camera`` is replaced:
    it is found by the camera stored on the strip, since Blender cuts a long ``label`` short in the strip's name."""
    scene = context.scene
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    old = next((s for s in strips if s.get(RENDER_CAMERA_PROPERTY) == camera), None) or strips.get(label)
    if old is not None:
        strips.remove(old)
    channel = 1 + max((s.channel for s in strips), default=0)
    strip = strips.new_image(name=label, filepath=str(paths[0]), channel=channel, frame_start=start)
    strip[RENDER_CAMERA_PROPERTY] = camera
    for frame in range(start + 1, end + 1):
        strip.elements.append(paths[min((frame - start) // step, len(paths) - 1)].name)
    return strip


def _apply_import(context, folder: Path, name: str, spec: dict | None):
    """Carrier from the decoded folder (its manifest names the .lw4d), frame range, fps and held-out camera."""
    obj = carrier.load_decoded(context, folder, name)
    scene = context.scene
    seq = obj.lw_seq
    seq.use_scene_time, seq.speed, seq.offset = True, 1.0, 0.0
    scene.frame_end = scene.frame_start + max(seq.frame_count, 1) - 1
    fps = float(_read_json(Path(seq.path) / "manifest.json", "sequence manifest").get("fps", 0.0)) if seq.path else 0.0
    if fps > 0 and math.isclose(fps, round(fps)):
        scene.render.fps, scene.render.fps_base = round(fps), 1.0
    if spec is not None:
        world.apply_camera_spec(scene, spec, CAMERA_NAME)
    scene.frame_set(scene.frame_start)
    playback.show_frame(scene, obj, scene.frame_current)
    return obj


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    state.add_scene_settings("moe", LW_MoeSettings)


def unregister():
    global _busy
    _busy = ""
    state.remove_scene_settings("moe")
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
