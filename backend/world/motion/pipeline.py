"""Motion on a world on disk: ``update_motion`` (one view's cue -> aligned samples -> field, as a new world
step) and ``bake_world`` (the current world + field -> ``.lw4d`` loop).

A motion update is committed as a world step of kind ``"motion"`` through ``backend.world.store.commit_step``:
its folder holds hard links to the previous step's files (they are never modified, so sharing them is safe) plus

    motion_field.pt       the fitted MotionField (config + state dict)
    motion_samples.npz    all aligned scene-flow samples so far (SceneFlow.save)
    motion_cue.npz        this view's 2D cue (flow (H, W, 2), mask (H, W), material (H, W))

so undo of a motion update is a step back like any other. The view a cue belongs to is a world step (its image,
depth, regions and camera), by default the current one.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree

from backend.errors import InvalidInput
from backend.io.images import check_image_header
from backend.io.lw4d import LW4D, read_sequence
from backend.io.outputs import check_output
from backend.io.ply import read_ply
from backend.jobs import PathPolicy
from backend.render.cameras import Camera
from backend.world import store

from .align import AlignConfig, MatchIndex, align_flow, match_index
from .bake import BakeConfig, BakedLoop, bake_loop, write_loop
from .cues import MotionCue, combine_cues, fallback_cue, hint_cue, preset_cue
from .field import FieldSize, MotionField, field_config_for, new_motion_field
from .lift import SceneFlow, lift_cue, unproject

FIELD_FILE = "motion_field.pt"
SAMPLES_FILE = "motion_samples.npz"
CUE_FILE = "motion_cue.npz"
REGION_CODES = {"ground": 0, "sky": 1, "water": 2}


@dataclass(frozen=True)
class PresetRegion:
    """A preset on a region: ``region`` names a segmentation region (sky, water, ground, all) or ``mask`` is a
    PNG path (non-zero = inside) at the view's resolution. ``direction`` is on screen (x right, y up)."""

    preset: str
    region: str = ""
    mask: str | None = None
    direction: tuple[float, float] = (1.0, 0.0)
    speed: float = 1.0


@dataclass(frozen=True)
class HintStrokes:
    """Strokes in pixel coordinates of the view (x right, y down), moving at ``speed`` px/frame over ``mask``
    (a PNG path) or near the strokes."""

    strokes: list
    speed: float = 1.0
    mask: str | None = None


@dataclass(frozen=True)
class MotionUpdate:
    view: int | None = None  # world step index of the view; None: the current step
    presets: tuple[PresetRegion, ...] = ()
    hints: tuple[HintStrokes, ...] = ()
    model: str | None = None  # folder of an Eulerian motion model (config.json + model.safetensors)
    speed: float = 1.0  # fallback speed (px/frame) when no preset, hint or model is given
    max_samples: int | None = None  # None: 50k on CUDA, 20k on a CPU (the alignment's k-d trees and RANSAC)
    align: AlignConfig = field(default_factory=AlignConfig)
    field: FieldSize = field(default_factory=FieldSize)  # over ``field_config_for(device)`` when it is created;
    # its update_steps (if set) for every later fit
    device: str = "auto"

    def carried(self) -> MotionUpdate | None:
        """What of this request applies to a new view (``expand_world`` fits it there): the model, the presets on
        named regions and the fallback; masks and strokes were drawn on one view and stay there; the device is
        "auto" (the world may be expanded on another machine than the one that recorded it). None when nothing
        carries."""
        presets = tuple(p for p in self.presets if not p.mask)
        if not (presets or self.model) and (self.presets or self.hints):
            return None
        return replace(self, view=None, presets=presets, hints=(), device="auto")

    def to_json(self) -> dict:
        """The request as world.json records it (``from_json`` reads it back)."""
        return {"presets": [asdict(p) for p in self.presets], "hints": [asdict(h) for h in self.hints],
                "model": self.model, "speed": self.speed, "max_samples": self.max_samples, "device": self.device}

    @staticmethod
    def from_json(d: dict) -> MotionUpdate:
        return MotionUpdate(presets=tuple(PresetRegion(**{**p, "direction": tuple(p["direction"])})
                                          for p in d.get("presets", [])),
                            hints=tuple(HintStrokes(**h) for h in d.get("hints", [])), model=d.get("model"),
                            speed=float(d.get("speed", 1.0)), max_samples=d.get("max_samples"),
                            device=d.get("device", "auto"))


@dataclass(frozen=True)
class View:
    """A view of the world: the world step that made it (``index``), its camera, image (H, W, 3) float32 RGB in
    0..1, depth (H, W) metres along the camera axis and regions (H, W) uint8 (``REGION_CODES``)."""

    index: int
    camera: Camera
    image: np.ndarray
    depth: np.ndarray
    regions: np.ndarray

    @staticmethod
    def of_step(world: store.World, step: store.WorldStep) -> View:
        """The view of ``step``; a motion step's view is the step it was made on (its files are that step's)."""
        while step.kind == "motion" and step.index > 0:
            step = world.steps[step.index - 1]
        labels = cv2.imread(str(world.file(step.regions, step)), cv2.IMREAD_GRAYSCALE)
        bgr = cv2.imread(str(world.file(step.image, step)))
        if labels is None or bgr is None:
            raise InvalidInput(f"the world step {step.index} has no readable image or regions file")
        return View(step.index, step.opencv_camera(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255,
                    np.load(world.file(step.depth, step)), labels)

    def region(self, name: str) -> np.ndarray:
        if name == "all":
            return np.ones(self.depth.shape, bool)
        if name not in REGION_CODES:
            raise InvalidInput(f"unknown region {name!r}; choose sky, water, ground or all, or give a mask image")
        return self.regions == REGION_CODES[name]


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def _read_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    check_image_header(path)  # a header claiming a huge image is refused before OpenCV allocates it
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InvalidInput(f"cannot read the mask image {path}")
    if img.shape != shape:
        img = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return img > 0


def view_cue(view: View, request: MotionUpdate) -> MotionCue:
    """The 2D cue of ``view``: model, presets and hints overlaid in that order; the sky/water fallback when none is
    given."""
    shape = view.depth.shape
    cues: list[MotionCue] = []
    if request.model:
        from .eulerian import EulerianMotionProvider

        cues.append(EulerianMotionProvider.from_pretrained(request.model, str(_device(request.device)))
                    .predict(view.image))
    for k, p in enumerate(request.presets):
        mask = _read_mask(p.mask, shape) if p.mask else view.region(p.region or ("water" if p.preset == "water"
                                                                                  else "sky"))
        cues.append(preset_cue(p.preset, mask, tuple(p.direction), p.speed, seed=k))
    for h in request.hints:
        cues.append(hint_cue(h.strokes, shape, h.speed, _read_mask(h.mask, shape) if h.mask else None))
    if not cues:
        cues.append(fallback_cue(view.region("sky"), view.region("water"), speed=request.speed))
    return combine_cues(cues)


def latest_motion_step(world: store.World) -> store.WorldStep | None:
    for s in reversed(world.steps):
        if (world.root / s.folder / FIELD_FILE).is_file():
            return s
    return None


@dataclass
class ViewMotion:
    """A view's motion folded into the world's field: the fitted ``field``, all aligned ``samples`` so far, the
    view's 2D ``cue`` and ``stats`` (world.json's ``motion`` record)."""

    field: MotionField
    samples: SceneFlow
    cue: MotionCue
    stats: dict

    def write(self, folder: Path) -> None:
        """The three motion files of a step (module docstring) into ``folder``."""
        self.field.save(folder / FIELD_FILE)
        self.samples.save(folder / SAMPLES_FILE)
        np.savez_compressed(folder / CUE_FILE, flow=self.cue.flow, mask=self.cue.mask, material=self.cue.material)


def _scene_points(view: View) -> np.ndarray:
    """World points of the view's content without the sky (its depth map unprojected; what the field's radius is
    measured on), every 4th pixel."""
    rows, cols = np.nonzero((view.regions != REGION_CODES["sky"]) & np.isfinite(view.depth) & (view.depth > 0))
    if len(rows) == 0:
        rows, cols = np.nonzero(np.isfinite(view.depth) & (view.depth > 0))
    rows, cols = rows[::4], cols[::4]
    return unproject(np.stack([cols + 0.5, rows + 0.5], axis=1), view.depth[rows, cols].astype(np.float64), view.camera)


@dataclass(frozen=True)
class PreparedSamples:
    """The world's latest motion samples and their ``MatchIndex``, loaded and built ahead (``prepare_samples``)."""

    folder: str  # the motion step they belong to
    samples: SceneFlow
    index: MatchIndex


def prepare_samples(world: store.World, config: AlignConfig) -> PreparedSamples | None:
    """Load the latest motion step's samples and build their match index: the part of a new view's alignment that
    does not need the view, which an expansion runs while it outpaints. None when the world has no motion."""
    step = latest_motion_step(world)
    if step is None:
        return None
    samples = SceneFlow.load(world.root / step.folder / SAMPLES_FILE)
    return PreparedSamples(step.folder, samples, match_index(samples, config))


def fit_view_motion(world: store.World, view: View, request: MotionUpdate, progress=lambda f, m: None,
                    cue: MotionCue | None = None, prepared: PreparedSamples | None = None) -> ViewMotion:
    """Cue -> 3D scene flow -> alignment to the world's samples -> field fit (LIVINGWORLD.md stages 3-5) for
    ``view``; the field is the latest motion step's (a copy; the step's files are never touched) or a new one
    around the first camera. ``cue``: the view's cue when already made. ``prepared``: ``prepare_samples`` of this
    world with ``request.align`` (used when it is of the latest motion step). ``progress`` goes from 0.05 to 0.85
    (the fit moves it after every step)."""
    dev = _device(request.device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    progress(0.05, "building the motion cue")
    cue = view_cue(view, request) if cue is None else cue
    if not cue.mask.any():
        raise InvalidInput("the view has no moving region (no sky or water found, no preset or hint given): "
                           "paint a region or add a preset")
    timings["cue_s"] = time.perf_counter() - t0
    max_samples = request.max_samples or (50_000 if dev.type == "cuda" else 20_000)
    new = lift_cue(cue, view.depth, view.camera, view=view.index, max_samples=max_samples)
    prev_step = latest_motion_step(world)
    index = None
    if prepared is not None and prev_step is not None and prepared.folder == prev_step.folder \
            and prepared.index.config == request.align:
        previous, index = prepared.samples, prepared.index
    else:
        previous = SceneFlow.load(world.root / prev_step.folder / SAMPLES_FILE) if prev_step else None
    progress(0.15, "aligning the new view's motion")
    t = time.perf_counter()
    aligned = align_flow(new, previous, view.camera.center, request.align, index=index)
    timings["align_s"] = time.perf_counter() - t
    # a new cue for a view replaces that view's earlier samples (after being aligned to them)
    kept = [previous.subset(previous.view != view.index)] if previous is not None else []
    samples = SceneFlow.concatenate(kept + [aligned.flow])
    t = time.perf_counter()
    if prev_step is not None:
        motion = MotionField.load(world.root / prev_step.folder / FIELD_FILE, device=dev)
    else:
        motion = new_motion_field(_scene_points(view), field_config_for(dev, request.field), device=dev,
                                  centre=world.steps[0].opencv_camera().center)
    what = "fitting the motion field" if prev_step is None else "re-fitting the motion field"
    # a later fit takes the update steps asked for now (the loaded field keeps those it was created with)
    steps = request.field.update_steps if prev_step is not None else None
    report = motion.fit(samples, steps, progress=lambda done, total: progress(0.2 + 0.65 * done / total,
                                                                       f"{what}: step {done}/{total}"))
    timings["fit_s"] = time.perf_counter() - t
    stats = {"view": view.index, "status": aligned.status, "rotation": aligned.rotation.tolist(),
             "scale": aligned.scale, "matches": aligned.matches, "inlier_fraction": aligned.inlier_fraction,
             "residual": aligned.residual, "materials": aligned.materials, "samples": len(samples),
             "fit": asdict(report), "request": request.to_json(),
             "field": {"levels": motion.config.encoding.n_levels, "table_log2": motion.config.encoding.log2_table_size,
                       "device": dev.type},
             "timings": {**timings, "total_s": time.perf_counter() - t0}}
    return ViewMotion(motion, samples, cue, stats)


def carried_request(world: store.World, policy: PathPolicy | None = None) -> MotionUpdate | None:
    """The world's latest motion request as it carries to a new view (``MotionUpdate.carried``), or None when the
    world has no motion yet or nothing of it carries. The motion model it names (a folder world.json records) must
    pass ``policy`` (None: anywhere)."""
    prev = latest_motion_step(world)
    if prev is None or "request" not in prev.stats.get("motion", {}):
        return None
    request = MotionUpdate.from_json(prev.stats["motion"]["request"]).carried()
    if request is not None and request.model and policy is not None:
        policy.check_model(request.model, f"the motion model world step {prev.index} records")
    return request


def carried_motion(world: store.World, view: View, request: MotionUpdate | None,
                   progress=lambda f, m: None, prepared: PreparedSamples | None = None) -> ViewMotion | None:
    """``request`` (``carried_request``) fitted on a new ``view``, or None when there is none or the view has no
    moving region. ``prepared``: ``prepare_samples`` made ahead (``fit_view_motion``)."""
    if request is None:
        return None
    cue = view_cue(view, request)
    return fit_view_motion(world, view, request, progress, cue, prepared) if cue.mask.any() else None


def update_motion(root: str | Path, request: MotionUpdate = MotionUpdate(), progress=lambda f, m: None) -> store.World:
    """Add one view's motion to the world's field; commits a ``motion`` step (module docstring)."""
    world = store.load_world(root)
    if request.view is not None and not 0 <= request.view < len(world.steps):
        raise InvalidInput(f"view {request.view} does not exist; the world has steps 0..{len(world.steps) - 1}")
    view = View.of_step(world, world.steps[request.view if request.view is not None else -1])
    motion = fit_view_motion(world, view, request, progress)
    current = world.current

    def write_files(folder: Path) -> dict:
        for name in store.STEP_FILES:
            src = world.file(name, current)
            if src.is_file():
                try:
                    os.link(src, folder / name)
                except OSError:  # a file system without hard links: copy
                    shutil.copy2(src, folder / name)
        motion.write(folder)
        return {}

    index = len(world.steps)
    new_step = store.WorldStep(index=index, kind="motion", folder=store.new_step_folder(index), camera=current.camera,
                               prompt=current.prompt, providers=current.providers, stats={"motion": motion.stats})
    progress(0.9, "writing the world")
    return store.commit_step(world.root, world, new_step, write_files)


def moving_gaussians(means: np.ndarray, samples: SceneFlow, still: float = 1e-3) -> np.ndarray:
    """(N,) bool: the Gaussians at ``means`` (N, 3) that move. A Gaussian moves when its nearest motion sample
    moves (speed above ``still`` x the samples' RMS speed: regions held still by a zero-speed preset stay static)
    and lies within 3x that sample's own spacing (distance to its nearest sample at another place). The radius is
    per sample, so the sky's samples, metres apart a kilometre away, do not widen the radius of the dense samples
    near the camera (with one radius for all, nearly every Gaussian of a world counted as moving)."""
    means = np.asarray(means, np.float64)
    if len(samples) == 0 or len(means) == 0:
        return np.zeros(len(means), bool)
    tree = cKDTree(samples.points)
    if len(samples) > 1:
        d, _ = tree.query(samples.points, k=min(9, len(samples)))
        d = np.where(d > 0, d, np.inf).min(axis=1)  # repeats of a view's samples coincide: the nearest other place
        finite = np.isfinite(d)
        spacing = np.where(finite, d, np.median(d[finite]) if finite.any() else np.inf)
    else:
        spacing = np.full(1, np.inf)
    speed = np.linalg.norm(samples.vectors, axis=1)
    rms = float(np.sqrt(np.mean(speed**2)))
    moving = speed > still * rms if rms > 0 else np.zeros(len(samples), bool)
    dist, idx = tree.query(means, k=1)
    return (dist <= 3.0 * spacing[idx]) & moving[idx]


def baked_world(world: store.World, config: BakeConfig, device: torch.device,
                progress=lambda f, m: None) -> BakedLoop:
    """The current world with its latest motion field baked in memory (dynamic Gaussians: ``moving_gaussians``;
    on a CPU through the field's lattice, ``BakeConfig.lattice``). ``progress`` goes from 0.1 to 0.8."""
    motion_step = latest_motion_step(world)
    if motion_step is None:
        raise InvalidInput("the world has no motion yet: run a motion update (presets, hints or the fallback) first")
    motion = MotionField.load(world.root / motion_step.folder / FIELD_FILE, device=device).eval()
    samples = SceneFlow.load(world.root / motion_step.folder / SAMPLES_FILE)
    gaussians = read_ply(world.file(world.current.gaussians))
    progress(0.1, "finding the moving Gaussians")
    dynamic = moving_gaussians(gaussians.means, samples)
    lattice = config.lattice if config.lattice is not None else (0 if device.type == "cuda" else 64)
    velocity = motion
    if lattice:
        progress(0.15, f"sampling the motion field on a {lattice}^3 lattice")
        velocity = motion.lattice(lattice)
    n = int(dynamic.sum())
    return bake_loop(gaussians, dynamic, velocity, config, device=device, eye=world.steps[0].opencv_camera().center,
                     progress=lambda done, total: progress(0.2 + 0.6 * done / total,
                                                           f"integrating {n} moving Gaussians: {done}/{total}"))


def bake_world(root: str | Path, out: str | Path, config: BakeConfig | None = None, device: str = "auto",
               progress=lambda f, m: None, replace: bool = False) -> Path:
    """Bake the current world with its latest motion field (``baked_world``) to the ``.lw4d`` folder ``out``
    (checked before the bake: an existing sequence there is replaced only with ``replace``, anything else is
    refused)."""
    config = config or BakeConfig()
    check_output(out, LW4D, replace)
    baked = baked_world(store.load_world(root), config, _device(device), progress)
    progress(0.8, "writing the sequence")
    path = write_loop(out, baked, replace)
    read_sequence(path)  # the written folder opens as a sequence
    return path
