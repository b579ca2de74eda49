"""LivingWorld in Blender: a world made from one image, expanded from the camera, brought to life, baked to a loop.

The world lives on the backend (``backend/world``: a folder of versioned steps); Blender holds a view of it:

    object "LW World"          ONE Gaussians carrier (lw_blender.splats.carrier), refilled in place after every step
    object "LW World Camera"   a camera matching the photo (the first step's Blender camera spec), the scene camera
    Scene.lw.world             the world folder (as the backend sees it), the steps so far, the motion cues waiting
                               for the next motion update, field and bake settings
    image "LW World Preview"   the backend's render of the current step from its camera

Every action is a short chain of backend jobs, then ONE apply on the main thread:

    new_world     world_new {image, depth?, prompt, resolution} -> import_gaussians {the step's PLY} -> apply
    expand_world  world_expand {world, camera: spec of the ACTIVE camera, prompt}   -> import_gaussians -> apply
    undo_world    world_undo {world}                                                -> import_gaussians -> apply
    update_motion motion_update {world, view, presets, hints, field}                -> apply (steps, clear cues)
    bake_world    world_bake {world, frames, loop, fps} -> import_gaussians {the .lw4d} -> apply (sequence)
                  -> world_metrics {world, sequence} (optional, measure_loop on and >= 3 frames) -> metrics

Nothing in the scene changes before the last required job of a chain succeeded and its files were read, so a
failing or cancelled job (or a bad artifact) leaves the scene as it was. The bake's measurement is optional
(``jobs.optional``): it runs after the loop is applied, and when it fails the loop stays and plays, the
Motion panel says why it was not measured (``metrics_note``) and the action still succeeds. In background mode
(scripts, tests) the chain blocks;
with a UI each job is submitted with ``jobs.submit_job`` and the next one starts from its ``on_done`` on the main
thread (progress and cancel: the Backend panel, ``wm.lw_runtime``). ``busy()`` names the running chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import annotations, state
from .connection import jobs
from .splats import carrier as splat_carrier
from .splats import data, playback, render

CARRIER_NAME = "LW World"
CAMERA_NAME = "LW World Camera"
PREVIEW_IMAGE = "LW World Preview"
METRICS_MIN_FRAMES = 3  # the backend's world_metrics measures triplets of frames
BAKE_LABEL = "Bake Loop"  # busy() while a bake (and its measurement) runs
PRESETS = ("CLOUDS", "WATER", "SMOKE", "FOG", "FIRE")
PRESET_ITEMS = [
    ("CLOUDS", "Clouds", "Clouds drift uniformly across the region"),
    ("WATER", "Water", "Water flows along the direction with small turbulence"),
    ("SMOKE", "Smoke", "Smoke rises and curls"),
    ("FOG", "Fog", "Fog rolls slowly"),
    ("FIRE", "Fire", "Fire flickers upwards"),
]
REGION_ITEMS = [
    ("AUTO", "Auto", "The preset's usual region from the world's segmentation: water for Water, else sky"),
    ("SKY", "Sky", "The sky region of the view"),
    ("WATER", "Water", "The water region of the view"),
    ("GROUND", "Ground", "The ground region of the view"),
    ("ALL", "Whole View", "Every pixel of the view"),
]


class WorldError(Exception):
    """An action on the world cannot start (no world yet, a missing file, no camera, another action running)."""


@dataclass(frozen=True)
class StepInfo:
    """``step.json`` of a world job: the world folder (backend path), the current step and its camera spec."""

    world: str
    step: int
    steps: int
    camera: dict
    stats: dict

    @classmethod
    def read(cls, path: Path) -> StepInfo:
        try:
            d = json.loads(Path(path).read_text())
            return cls(world=str(d["world"]), step=int(d["step"]), steps=int(d["steps"]), camera=dict(d["camera"]),
                       stats=dict(d.get("stats") or {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorldError(f"the world job wrote no valid step.json ({path}): {exc}") from exc


def working_size(spec: dict, resolution: int) -> tuple[int, int]:
    """Pixel size of the image the backend works on for a view with Blender camera ``spec``: the rendered size
    (resolution x percentage) scaled so that its long side is the world's ``resolution`` (backend/world/pipeline)."""
    pct = int(spec.get("resolution_percentage", 100))
    w, h = int(spec["resolution_x"]) * pct // 100, int(spec["resolution_y"]) * pct // 100
    s = resolution / max(w, h)
    return max(round(w * s), 8), max(round(h * s), 8)


# --- settings ----------------------------------------------------------------------------------------------------

class LW_WorldStep(bpy.types.PropertyGroup):
    """One version of the world as Blender last saw it."""

    index: bpy.props.IntProperty(name="Step")
    kind: bpy.props.StringProperty(name="Kind", description="new, expand or motion")
    gaussians: bpy.props.IntProperty(name="Gaussians")
    new_gaussians: bpy.props.IntProperty(name="New Gaussians")
    prompt: bpy.props.StringProperty(name="Prompt")
    camera: bpy.props.StringProperty(name="Camera", description="Blender camera spec of the step's view (JSON)")
    width: bpy.props.IntProperty(name="Width", description="Pixel width of the view the backend works on")
    height: bpy.props.IntProperty(name="Height", description="Pixel height of the view the backend works on")


class LW_MotionRegion(bpy.types.PropertyGroup):
    """A preset waiting for the next motion update."""

    preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default="CLOUDS")
    region: bpy.props.EnumProperty(name="Region", items=REGION_ITEMS, default="AUTO")
    direction: bpy.props.FloatVectorProperty(name="Direction", size=2, default=(1.0, 0.0),
                                             description="On screen: x right, y up")
    speed: bpy.props.FloatProperty(name="Speed", default=1.0, min=0.0, description="Pixels per frame")
    mask: bpy.props.StringProperty(name="Mask", subtype="FILE_PATH",
                                   description="Mask image of the region (non-zero = inside); overrides Region")


class LW_MotionHint(bpy.types.PropertyGroup):
    """Annotation strokes turned into pixel polylines of one view, waiting for the next motion update."""

    strokes: bpy.props.StringProperty(name="Strokes", description="JSON list of polylines of (x, y) pixels, y down")
    speed: bpy.props.FloatProperty(name="Speed", default=1.0, min=0.0, description="Pixels per frame")
    view: bpy.props.IntProperty(name="View", description="World step whose view the strokes were projected into")


class LW_WorldSettings(bpy.types.PropertyGroup):
    """Scene.lw.world: the world this scene shows and the settings of the World and Motion panels."""

    image: bpy.props.StringProperty(name="Image", subtype="FILE_PATH", description="The photo to build a world from")
    depth: bpy.props.StringProperty(name="Depth", subtype="FILE_PATH",
                                    description="Optional depth map: .npy in metres or 16-bit .png in millimetres")
    prompt: bpy.props.StringProperty(name="Prompt", description="Text describing the scene (used by outpainting)")
    resolution: bpy.props.IntProperty(name="Resolution", default=512, min=32, max=2048,
                                      description="Long side of the image the backend works on (pixels)")
    expand_prompt: bpy.props.StringProperty(name="Expand Prompt", description="Text for the new content")
    directory: bpy.props.StringProperty(name="World", description="World folder, as the backend sees it")
    world_resolution: bpy.props.IntProperty(name="World Resolution", description="Resolution the world was made at")
    steps: bpy.props.CollectionProperty(type=LW_WorldStep)
    # motion cues for the next update
    preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default="CLOUDS")
    region: bpy.props.EnumProperty(name="Region", items=REGION_ITEMS, default="AUTO")
    direction: bpy.props.FloatVectorProperty(name="Direction", size=2, default=(1.0, 0.0),
                                             description="On screen: x right, y up")
    speed: bpy.props.FloatProperty(name="Speed", default=1.0, min=0.0, description="Pixels per frame")
    mask: bpy.props.StringProperty(name="Mask", subtype="FILE_PATH", description="Optional mask image of the region")
    regions: bpy.props.CollectionProperty(type=LW_MotionRegion)
    hints: bpy.props.CollectionProperty(type=LW_MotionHint)
    motion_status: bpy.props.StringProperty(name="Motion", description="How the last motion update aligned")
    fallbacks: bpy.props.StringProperty(name="Fallbacks", description="Built-in providers that replaced a default "
                                        "model in the current step, one per line, with how to fetch the model")
    # motion field (0: the backend's default for its device, 16 hashed levels on CUDA and 5 dense ones on a CPU)
    field_levels: bpy.props.IntProperty(name="Levels", default=0, min=0, max=32,
                                        description="Hash-grid levels of the motion field (0: the device's default)")
    field_table_log2: bpy.props.IntProperty(name="Table Size (log2)", default=0, min=0, max=24,
                                            description="log2 of the hash table size per level (0: the device's "
                                                        "default)")
    fit_steps: bpy.props.IntProperty(name="Fit Steps", default=0, min=0,
                                     description="Steps of the first fit (0: the device's default, 400 on CUDA and "
                                                 "100 on a CPU)")
    update_steps: bpy.props.IntProperty(name="Update Steps", default=0, min=0,
                                        description="Steps of each later (warm-started) fit (0: the device's default, 40 on "
                                                    "CUDA and 100 on a CPU)")
    # bake
    bake_frames: bpy.props.IntProperty(name="Frames", default=60, min=2, max=100000)
    bake_loop: bpy.props.BoolProperty(name="Loop", default=True, description="Bake a seamless loop")
    measure_loop: bpy.props.BoolProperty(name="Measure", default=True,
                                         description="After a bake, measure the loop as it renders (flicker, "
                                                     "smoothness, seam, uncovered pixels; a few seconds on a GPU, "
                                                     "tens of seconds on a CPU, where it estimates from 11 frames)")
    sequence: bpy.props.StringProperty(name="Sequence", subtype="DIR_PATH", description="The last baked .lw4d")
    metrics: bpy.props.StringProperty(name="Loop Metrics", description="The last bake's loop quality (the backend's "
                                      "metrics.json: VBench flicker, motion smoothness, seam, uncovered share)")
    metrics_note: bpy.props.StringProperty(name="Loop Metrics Note", description="Why the last bake's loop was not "
                                           "measured (too few frames, the measurement failed)")


_CLASSES = (LW_WorldStep, LW_MotionRegion, LW_MotionHint, LW_WorldSettings)


def settings(scene=None) -> LW_WorldSettings:
    return (scene or bpy.context.scene).lw.world


def carrier(scene):
    """The scene's world object, or None."""
    obj = scene.objects.get(CARRIER_NAME)
    return obj if data.is_carrier(obj) else None


def current_step(scene) -> LW_WorldStep:
    s = settings(scene)
    if not s.directory or not s.steps:
        raise WorldError("there is no world yet: pick an image and press New World")
    return s.steps[-1]


# --- job chains -------------------------------------------------------------------------------------------------

# A chain link: a job kind, its params, and what to do with its result -> the next link or None (done).
Link = jobs.Link
_chain = jobs.Chain(WorldError)


def busy() -> str:
    """Label of the world action whose jobs are running ("" when none)."""
    return _chain.busy


_run_chain = _chain.run


def _artifact(result: jobs.JobResult, suffix: str) -> str:
    return jobs.artifact(result, suffix, WorldError)


def _import_link(ply_or_lw4d: str, then: Callable[[object, Path], None]) -> Link:
    """The import_gaussians job of a backend path (workspace-relative name), then ``then(context, decoded folder)``."""
    def imported(context, result):
        return then(context, splat_carrier.decoded_folder(result))

    return ("import_gaussians", {"path": ply_or_lw4d}, imported)


# --- applying results to the scene ------------------------------------------------------------------------------

def _fill_carrier(context, decoded: data.DecodedGaussians, sequence: str | None = None):
    """Show ``decoded`` (and the local ``.lw4d`` ``sequence``) on the scene's ONE world object, replacing its data
    (nothing changes when the data is bad: ``splat_carrier.place``)."""
    return splat_carrier.place(context, carrier(context.scene), CARRIER_NAME, decoded, sequence,
                               context.scene.collection)


def apply_camera_spec(scene, spec: dict, name: str = CAMERA_NAME):
    """Create or update camera ``name`` from a Blender camera spec, set the render size, make it the scene camera."""
    from mathutils import Matrix

    obj = scene.objects.get(name)
    if obj is None or obj.type != "CAMERA":
        obj = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        scene.collection.objects.link(obj)
    data, render = obj.data, scene.render
    data.type = "PERSP"
    data.lens = float(spec["lens"])
    data.sensor_width, data.sensor_height = float(spec["sensor_width"]), float(spec["sensor_height"])
    data.sensor_fit = spec.get("sensor_fit", "AUTO")
    data.shift_x, data.shift_y = float(spec.get("shift_x", 0.0)), float(spec.get("shift_y", 0.0))
    data.clip_start, data.clip_end = float(spec["clip_start"]), float(spec["clip_end"])
    obj.matrix_world = Matrix(spec["matrix_world"])
    render.resolution_x, render.resolution_y = int(spec["resolution_x"]), int(spec["resolution_y"])
    render.resolution_percentage = int(spec.get("resolution_percentage", 100))
    render.pixel_aspect_x = float(spec.get("pixel_aspect_x", 1.0))
    render.pixel_aspect_y = float(spec.get("pixel_aspect_y", 1.0))
    scene.camera = obj
    return obj


def _load_preview(path: Path):
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None:
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = PREVIEW_IMAGE
    else:
        image.filepath = str(path)
        image.reload()
    if not bpy.app.background:  # the sidebar shows the preview icon; previews need a UI
        image.preview_ensure().reload()
    return image


def _record_step(s: LW_WorldSettings, info: StepInfo, kind: str, prompt: str) -> None:
    """Make the step list end at ``info.step`` (an undo drops later ones) and describe that step."""
    while len(s.steps) > info.step:
        s.steps.remove(len(s.steps) - 1)
    item = s.steps.add()
    item.index, item.kind, item.prompt = info.step, kind, prompt
    item.gaussians = int(info.stats.get("gaussians", 0))
    item.new_gaussians = int(info.stats.get("new_gaussians", 0))
    item.camera = json.dumps(info.camera)
    item.width, item.height = working_size(info.camera, s.world_resolution)


def _apply_world_step(context, info: StepInfo, preview: Path, folder: Path, kind: str, prompt: str) -> None:
    """The world changed (new, expand, undo): refill the carrier, update camera, steps, preview; drop old cues."""
    decoded = data.read_decoded(folder)
    scene = context.scene
    s = settings(scene)
    _fill_carrier(context, decoded)
    if kind != "expand":  # after an expansion the camera is where the artist put it, which is the step's view
        apply_camera_spec(scene, info.camera)
    if kind == "new":
        s.steps.clear()
    s.directory = info.world
    if kind == "undo":
        while len(s.steps) > info.steps:
            s.steps.remove(len(s.steps) - 1)
        if len(s.steps) < info.steps:  # the scene did not know this step (the world was edited elsewhere)
            _record_step(s, info, "step", "")
    else:
        _record_step(s, info, kind, prompt)
    s.regions.clear()
    s.hints.clear()
    s.sequence = s.metrics = s.metrics_note = ""
    carried = info.stats.get("motion")
    s.motion_status = (f"{carried.get('status', '')} (view {carried.get('view')}): {carried.get('samples', 0)} "
                       "samples") if carried else ""
    s.fallbacks = "\n".join(info.stats.get("fallbacks") or [])
    _far_viewports(context, float(info.camera.get("clip_end", 0.0)))
    _load_preview(preview)


def _far_viewports(context, clip_end: float) -> None:
    """Let the 3D viewports see as far as the world's camera (its sky sits 50 km away; a viewport's own clip end is
    1 km by default): their clip end is raised to ``clip_end``, never lowered. No viewports in background mode."""
    wm = getattr(context, "window_manager", None)
    for window in (wm.windows if wm is not None else []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                space = area.spaces.active
                space.clip_end = max(space.clip_end, clip_end)


def _world_link(kind: str, params: dict, prompt: str, world_resolution: int | None = None) -> Link:
    """world_new / world_expand / world_undo, then import the step's PLY, then apply."""
    def stepped(context, result):
        info = StepInfo.read(result.path(_artifact(result, "step.json")))
        preview = result.path(_artifact(result, "preview.png"))

        def apply(context, folder):
            if world_resolution is not None:
                settings(context.scene).world_resolution = world_resolution
            _apply_world_step(context, info, preview, folder, kind.removeprefix("world_"), prompt)

        return _import_link(_artifact(result, "gaussians.ply"), apply)

    return (kind, params, stepped)


def _local_file(filepath: str, what: str) -> str:
    path = Path(bpy.path.abspath(filepath)).resolve()
    if not path.is_file():
        raise WorldError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    return str(path)


def new_world(context, image: str, depth: str = "", prompt: str = "", resolution: int = 512,
              blocking: bool | None = None) -> None:
    """Build a world from ``image`` (a local file; ``depth`` optional), replacing the scene's world."""
    params = {"image": _local_file(image, "image"), "prompt": prompt, "resolution": int(resolution)}
    if depth:
        params["depth"] = _local_file(depth, "depth map")
    _run_chain(context, "New World", _world_link("world_new", params, prompt, int(resolution)), blocking)


def expand_world(context, prompt: str = "", blocking: bool | None = None) -> None:
    """Expand the world with what the scene's active camera sees."""
    scene = context.scene
    current_step(scene)
    if scene.camera is None:
        raise WorldError("the scene has no active camera: the expansion is seen from the active camera")
    params = {"world": settings(scene).directory, "camera": render.camera_spec(scene, scene.camera),
              "prompt": prompt}
    _run_chain(context, "Expand World", _world_link("world_expand", params, prompt), blocking)


def undo_world(context, blocking: bool | None = None) -> None:
    """Step the world back to its previous version (camera back to that view)."""
    s = settings(context.scene)
    current_step(context.scene)
    if len(s.steps) < 2:
        raise WorldError("nothing to undo: the world has only its first step")
    _run_chain(context, "Undo", _world_link("world_undo", {"world": s.directory}, ""), blocking)


def view_camera(context) -> None:
    """Put "LW World Camera" back at the current step's view (and make it the scene camera)."""
    apply_camera_spec(context.scene, json.loads(current_step(context.scene).camera))


# --- motion -----------------------------------------------------------------------------------------------------

def add_region(scene, preset: str, direction=(1.0, 0.0), speed: float = 1.0, mask: str = "",
               region: str = "AUTO") -> LW_MotionRegion:
    """Queue a preset for the next motion update (on ``region`` of the view, or the ``mask`` image)."""
    current_step(scene)
    if preset not in PRESETS:
        raise WorldError(f"unknown motion preset {preset!r}; choose one of {', '.join(PRESETS)}")
    item = settings(scene).regions.add()
    item.preset, item.region = preset, region
    item.direction, item.speed = tuple(direction), float(speed)
    item.mask = _local_file(mask, "mask image") if mask else ""
    return item


def matching_view(scene, camera, tolerance: float = 1e-3) -> LW_WorldStep:
    """The latest world step whose view is where ``camera`` is now (same matrix_world)."""
    import numpy as np

    now = np.array(camera.matrix_world, dtype=np.float64)
    for step in reversed(list(settings(scene).steps)):
        spec = json.loads(step.camera)
        if np.abs(np.array(spec["matrix_world"], dtype=np.float64) - now).max() <= tolerance * max(1.0, np.abs(now).max()):
            return step
    raise WorldError(f"the camera {camera.name!r} is not at any view of the world: move it back to a view "
                     "(View Camera) or expand from where it is first, then draw the strokes")


def add_annotation_hints(context, speed: float = 1.0) -> LW_MotionHint:
    """Queue the scene's annotation strokes, projected through the active camera into its world view, as hints."""
    scene = context.scene
    current_step(scene)
    if scene.camera is None:
        raise WorldError("the scene has no active camera to project the annotation strokes through")
    view = matching_view(scene, scene.camera)
    try:
        strokes = annotations.view_strokes(scene, scene.camera, view.width, view.height)
    except annotations.AnnotationError as exc:
        raise WorldError(str(exc)) from exc
    item = settings(scene).hints.add()
    item.strokes, item.speed, item.view = json.dumps(strokes), float(speed), view.index
    return item


def motion_params(scene, view: int = -1) -> dict:
    """Parameters of the motion_update job from the queued cues (none: the backend's sky/water fallback)."""
    s = settings(scene)
    current_step(scene)
    views = {h.view for h in s.hints}
    if len(views) > 1:
        raise WorldError(f"the queued hints belong to views {sorted(views)}: update one view at a time")
    if views and view >= 0 and view not in views:
        raise WorldError(f"the queued hints were drawn in view {views.pop()}, not view {view}")
    target = views.pop() if views else (view if view >= 0 else None)
    presets = [{"preset": r.preset.lower(), "region": "" if r.region == "AUTO" else r.region.lower(),
                "mask": bpy.path.abspath(r.mask) if r.mask else None, "direction": list(r.direction),
                "speed": r.speed} for r in s.regions]
    hints = [{"strokes": json.loads(h.strokes), "speed": h.speed} for h in s.hints]
    field = {"n_levels": s.field_levels, "log2_table_size": s.field_table_log2, "steps": s.fit_steps,
             "update_steps": s.update_steps}
    return {"world": s.directory, "view": target, "presets": presets, "hints": hints, "speed": s.speed,
            "field": {k: v for k, v in field.items() if v > 0}}  # 0: the backend's default for its device


def update_motion(context, view: int = -1, blocking: bool | None = None) -> None:
    """Send the queued cues (of ``view``, -1: the current one) to the world's motion field; clears the queue."""
    params = motion_params(context.scene, view)

    def updated(context, result):
        report = json.loads(result.path(_artifact(result, "motion.json")).read_text())
        s = settings(context.scene)
        while len(s.steps) > int(report["step"]):
            s.steps.remove(len(s.steps) - 1)
        previous = s.steps[-1]
        item = s.steps.add()
        item.index, item.kind, item.prompt = int(report["step"]), "motion", f"view {report.get('view')}"
        item.gaussians, item.camera = previous.gaussians, previous.camera
        item.width, item.height = previous.width, previous.height
        s.regions.clear()
        s.hints.clear()
        s.motion_status = f"{report.get('status', '')}: {report.get('samples', 0)} samples"

    _run_chain(context, "Update Motion", ("motion_update", params, updated), blocking)


def metrics_lines(s: LW_WorldSettings) -> list[str]:
    """The last bake's loop quality in words for the sidebar ([] before a bake; the note when it was not
    measured; one line saying so when the stored document cannot be read)."""
    if not s.metrics:
        return [s.metrics_note] if s.metrics_note else []
    try:
        return _metrics_lines(json.loads(s.metrics))
    except _BAD_METRICS as exc:
        return [f"The loop measurement could not be read ({type(exc).__name__}: {exc}); bake again"]


# what a metrics.json of another shape raises in _metrics_lines (json.JSONDecodeError is a ValueError)
_BAD_METRICS = (ValueError, KeyError, TypeError, IndexError, AttributeError)


def _seam_limit(m: dict) -> float:
    """The seam goal the backend judged by: 1.0, or the loop's own steps' spread (``LoopQuality.seam_limit``)."""
    limit = m.get("goals", {}).get("seam_ratio", {}).get("limit", 1.0)
    return float(limit) if isinstance(limit, (int, float)) else 1.0


def _metrics_lines(m: dict) -> list[str]:
    """The lines of a metrics.json document (``_BAD_METRICS`` when it is not the backend's shape)."""
    goals = m.get("goals", {})

    def mark(name):
        return "met" if goals.get(name, {}).get("met") else "NOT met"

    lines = [f"Flicker (VBench) {m['temporal_flicker']:.4f}, goal >= 0.989: {mark('temporal_flicker')}",
             f"Motion smoothness {m['motion_smoothness']:.4f}",
             f"Loop seam {m['seam_ratio']:.2f} frame steps, goal <= {_seam_limit(m):.2f}: {mark('seam_ratio')}",
             f"Uncovered {100 * m['uncovered_max']:.2f} % of pixels (worst frame)"]
    if isinstance(m.get("ordinary_ratio_mean"), (int, float)) and isinstance(m.get("ordinary_ratio_sd"), (int, float)):
        lines.insert(3, f"  (other steps: {m['ordinary_ratio_mean']:.2f} +- {m['ordinary_ratio_sd']:.2f} of their "
                        "neighbours)")
    if not m.get("exact", True):
        lines.append(f"(estimated from {m['rendered']} of {m['frames']} frames at {m['size'][0]} px)")
    return lines


def bake_world(context, frames: int = 60, loop: bool = True, blocking: bool | None = None) -> None:
    """Bake the world's motion to a ``.lw4d`` loop and play it on the world object; the scene's frame range
    becomes the loop (frame_start .. frame_start + frames - 1). Then, with ``measure_loop`` on, the loop is
    measured (``world_metrics``: flicker, smoothness, seam, uncovered pixels, shown in the Motion panel); that
    needs 3 frames, and a measurement that fails leaves the played loop and a note instead of metrics."""
    scene = context.scene
    s = settings(scene)
    current_step(scene)
    if not any(step.kind == "motion" for step in s.steps):
        raise WorldError("the world has no motion yet: add presets or hints and press Update Motion first")
    params = {"world": s.directory, "frames": int(frames), "loop": bool(loop),
              "fps": scene.render.fps / scene.render.fps_base}

    def baked(context, result):
        manifest = _artifact(result, ".lw4d/manifest.json")
        for name in result.artifacts:  # a remote backend: download the whole sequence once
            result.path(name)
        local = result.path(manifest).parent

        def apply(context, folder):
            decoded = data.read_decoded(folder)
            scene = context.scene
            obj = _fill_carrier(context, decoded, sequence=str(local))
            obj.lw_seq.use_scene_time, obj.lw_seq.speed, obj.lw_seq.offset = True, 1.0, 0.0
            scene.frame_end = scene.frame_start + obj.lw_seq.frame_count - 1
            playback.show_frame(scene, obj, scene.frame_current)
            s = settings(scene)
            s.sequence, s.metrics, s.metrics_note = str(local), "", ""
            if not s.measure_loop:
                return None
            if obj.lw_seq.frame_count < METRICS_MIN_FRAMES:
                s.metrics_note = (f"Loop not measured: it has {obj.lw_seq.frame_count} frames, the measurement "
                                  f"needs {METRICS_MIN_FRAMES}")
                return None
            return jobs.optional("world_metrics", {"world": params["world"],
                                                   "sequence": manifest.rpartition("/")[0]}, measured)

        return _import_link(manifest.rpartition("/")[0], apply)

    def measured(context, result):
        s = settings(context.scene)
        if not result.ok:
            s.metrics_note = f"Loop not measured: {result.error_message or result.message or result.state}"
            return
        try:
            text = result.path(_artifact(result, "metrics.json")).read_text()
            _metrics_lines(json.loads(text))  # the document the panel will show: checked once, here
        except (WorldError, jobs.BackendError, OSError, *_BAD_METRICS) as exc:
            s.metrics_note = f"Loop not measured: its metrics.json could not be read ({type(exc).__name__}: {exc})"
        else:
            s.metrics = text

    _run_chain(context, BAKE_LABEL, ("world_bake", params, baked), blocking)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    state.add_scene_settings("world", LW_WorldSettings)


def unregister():
    global _busy
    _busy = ""
    state.remove_scene_settings("world")
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
