"""LivingWorld stages 1-2 as plain functions over ``World``: ``new_world``, ``expand_world``, ``undo_world``.

``new_world``: image -> (segmentation, depth) -> surfels (``lift_image``) seen from an initial pinhole camera
(focal ``focal_px_at_512`` px at 512 px, scaled with the resolution) standing ``camera_height`` m above the
ground at the origin, looking along +Y (Blender Z-up metres), pitched so that the estimated horizon row is
where a level horizon would be: pitch = atan((c_y - v_h) / f).

``expand_world`` from a new camera:
1. render the world: colour C, alpha A, depth D;
2. missing mask M = dilate(A < ``alpha_threshold``, ``dilate_px``); context colour C / A (straight colour);
3. outpaint: I = outpaint(C, M, prompt);
4. depth of I, aligned to D on the overlap (not missing, not sky) with the robust inverse-depth scale+shift
   fit (``depth_align``); then the remaining log-depth residual on the overlap, r = log D - log Z, is pushed
   into the hole and faded with the distance d to the seam, Z <- Z exp(r_filled exp(-d / ``seam_fade_px``)),
   so new geometry meets the old without a step;
5. new surfels where M (sky of the new view on the far layer), but none where the old render already covers the
   pixel (A >= ``covered_alpha``: no doubled layer along the seam) and, under the old soft edges, just behind
   them (``behind``), so a new surfel fills what the old ones let through and never covers them in any view
   (``bench/world_seams.py``: 289 doubled pixels of 16k at 128 px before, 0 now; the old view re-renders
   0.3 dB better than with the doubled layer);
6. brief optimisation (``refine``) of the new surfels' colour and opacity: Adam on the L1 error to I,
   rendered at ``refine_size`` px with the old Gaussians frozen;
7. when the world has motion, the latest motion request carried to the new view (``carried_motion``: the sky
   drifts, the water flows there too) and the field re-fitted on all samples, stored with the step.
Each step is committed atomically as a new version (``store.commit_step``); ``stats["fallbacks"]`` says which
built-in fallback replaced a default model and how to fetch it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import io
import math
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ..errors import InvalidInput
from ..gaussians import Gaussians
from ..io.images import check_image_header
from ..io.outputs import check_output
from ..io.ply import gaussians_to_records, ply_records_header, read_ply, write_ply_records
from ..jobs import PathPolicy
from ..models.config import ModelConfig, make_depth, make_outpaint, make_segmentation
from ..models.depth import DepthMapFile, LandscapeDepth, LandscapeGeometry
from ..models.outpaint import push_pull_fill
from ..models.segmentation import estimate_horizon
from ..render.cameras import BlenderCameraSpec, Camera, blender_to_opencv, look_at, opencv_to_blender
from ..render.rasterize import FixedGeometry, RasterConfig, rasterize
from ..render.sh import sh_to_color
from . import store
from .depth_align import align_depth
from .lift import REGION_SKY, REGION_WATER, LiftConfig, lift_image, sky_z


@dataclass(frozen=True)
class ExpandConfig:
    alpha_threshold: float = 0.9  # softer edges of the rendered world count as missing (re-filled)
    dilate_px: int = 2
    covered_alpha: float = 0.98  # a missing pixel the old render covers this much gets no new surfel (the seam)
    behind: float = 0.01  # a new surfel under old soft edges sits this fraction of its depth behind them
    seam_fade_px: float = 24.0
    min_missing_fraction: float = 0.002  # below this the camera shows nothing new
    refine_steps: int | None = None  # None: 50 on CUDA, 0 on the CPU (each step costs seconds there, docs/bench/world.md)
    refine_size: int | None = None  # long side of the refinement's renders (px); None: the working size on CUDA, 128 on the CPU
    refine_lr: float = 0.06
    refine_lr_end: float | None = 0.005  # cosine decay of the step size to this; None: constant refine_lr


@dataclass(frozen=True)
class WorldConfig:
    resolution: int = 512  # long side of the working image (px)
    focal_px_at_512: float = 500.0
    camera_height: float = 1.6  # metres above the ground
    models: ModelConfig = field(default_factory=ModelConfig)
    lift: LiftConfig = field(default_factory=LiftConfig)
    expand: ExpandConfig = field(default_factory=ExpandConfig)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> WorldConfig:
        return WorldConfig(resolution=int(d["resolution"]), focal_px_at_512=float(d["focal_px_at_512"]),
                           camera_height=float(d["camera_height"]), models=ModelConfig(**d["models"]),
                           lift=LiftConfig(**d["lift"]), expand=ExpandConfig(**d["expand"]))


# Providers are cached per configuration: a server process loads real weights once.
_segmentation = functools.lru_cache(maxsize=4)(make_segmentation)
_outpaint = functools.lru_cache(maxsize=4)(make_outpaint)


@functools.lru_cache(maxsize=4)
def _depth(models: ModelConfig, geometry: LandscapeGeometry):
    return make_depth(models, _segmentation(models), geometry)


def _geometry(cfg: WorldConfig) -> LandscapeGeometry:
    return LandscapeGeometry(camera_height=cfg.camera_height, sky_depth=cfg.lift.sky_depth)


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from any image OpenCV reads (alpha dropped, 16-bit scaled).

    The size in the header is checked (``io.images.check_image_header``) before anything is decoded, so a file
    claiming a huge image is refused instead of allocated."""
    path = Path(path)
    check_image_header(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise InvalidInput(f"{path.name} is not an image OpenCV can read (use PNG or JPEG)")
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise InvalidInput(f"{path.name} holds NaN or infinite pixel values")
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    if raw.ndim == 2:
        raw = np.repeat(raw[..., None], 3, -1)
    rgb = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) / scale).clip(0, 1)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))


def _working_size(w: int, h: int, resolution: int) -> tuple[int, int]:
    s = resolution / max(w, h)
    return max(round(w * s), 8), max(round(h * s), 8)


def _render_far(cfg: WorldConfig) -> float:
    return 4.0 * cfg.lift.sky_depth


def scale_camera(camera: Camera, width: int, height: int, far: float | None = None) -> Camera:
    """The same view at another image size (K scaled per axis); optionally a farther far plane."""
    K = np.asarray(camera.K, np.float64).copy()
    K[0] *= width / camera.width
    K[1] *= height / camera.height
    return replace(camera, K=K, width=int(width), height=int(height),
                   far=camera.far if far is None else max(camera.far, far))


def initial_camera(width: int, height: int, horizon_row: float, cfg: WorldConfig) -> Camera:
    """Pinhole camera of the input image (see the module docstring)."""
    f = cfg.focal_px_at_512 * max(width, height) / 512.0
    K = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
    pitch = np.arctan2(height / 2.0 - horizon_row, f)
    eye = np.array([0.0, 0.0, cfg.camera_height])
    target = eye + np.array([0.0, np.cos(pitch), np.sin(pitch)])
    return look_at(eye, target, K=K, width=width, height=height, near=0.05, far=_render_far(cfg))


def turned_camera(camera: Camera, degrees: float) -> Camera:
    """``camera`` turned left by ``degrees`` about the world's vertical (Z, Blender Z-up) through its own centre:
    the next view of an expansion that pans (benches, tests, scripts)."""
    eye, forward = camera.center, camera.cam_to_world[:3, 2]
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return look_at(eye, eye + rot @ forward, K=camera.K, width=camera.width, height=camera.height, near=camera.near,
                   far=camera.far)


def _render(gaussians: Gaussians, camera: Camera):
    """colour (H, W, 3), alpha (H, W), depth (H, W) as numpy float32.

    On the CPU the torch reference composites every pixel of a tile with every Gaussian listed in it, so with a
    world's pixel-sized surfels 4-pixel tiles cost a third of 16-pixel ones (13-18 s against 42 s for 262k
    Gaussians at 512 px on the loaded 2-core box; the images agree to 3e-7)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # gsplat on CUDA, the torch reference on CPU
    with torch.no_grad():
        out = rasterize(_on_device(gaussians, device), camera, RasterConfig(tile_size=16 if device == "cuda" else 4))
    return out.color.cpu().numpy(), out.alpha.cpu().numpy(), out.depth.cpu().numpy()


_device_copies: list[tuple[Gaussians, Gaussians]] = []


def _on_device(gaussians: Gaussians, device: str, build=None) -> Gaussians:
    """``gaussians.to_torch(device)`` without extras, kept for the two latest objects: an expansion renders the
    world, refines against it and renders world + new, and the next expansion starts from that same object
    (``_read_gaussians``), so the world is uploaded once, not three times per step. ``build()`` makes the copy
    when it is not kept (default ``to_torch``)."""
    for src, copy in _device_copies:
        if src is gaussians and copy.means.device.type == device.split(":")[0]:
            return copy
    copy = build() if build is not None else gaussians.with_(extra={}).to_torch(device)
    _device_copies.append((gaussians, copy))
    del _device_copies[:-2]
    return copy


def _render_reporting(gaussians: Gaussians, camera: Camera, progress, fraction: float, message: str):
    """``_render``, reporting ``progress(fraction, message)`` every half second while it runs: a CPU render of a
    512-px world takes seconds and the rasterizer reports nothing itself, so there it runs in a worker thread and
    a job's cancel, seen at each report, stops the job at once (the abandoned render finishes in the background
    and is dropped). On CUDA it takes milliseconds and runs here."""
    import torch

    if torch.cuda.is_available():
        progress(fraction, message)
        return _render(gaussians, camera)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lw-render")
    try:
        future = pool.submit(_render, gaussians, camera)
        t0 = time.perf_counter()
        progress(fraction, message)
        while True:
            try:
                return future.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                progress(fraction, f"{message} ({time.perf_counter() - t0:.0f} s)")
    finally:
        pool.shutdown(wait=False)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def _region_labels(sky: np.ndarray, water: np.ndarray) -> np.ndarray:
    return np.where(sky, int(REGION_SKY), np.where(water, int(REGION_WATER), 0)).astype(np.uint8)


def _providers_used(cfg: WorldConfig, depth_name: str, outpaint: bool) -> dict:
    used = {"segmentation": _segmentation(cfg.models).name, "depth": depth_name}
    if outpaint:
        used["outpaint"] = _outpaint(cfg.models).name
    return used


def fallback_notes(models: ModelConfig, providers: dict) -> list[str]:
    """One sentence per role where a built-in fallback ran in place of the default model (the setting was "auto"
    and the model's weights are not on this machine): what ran, what it replaced, and the command that fetches the
    model once (the README's)."""
    from ..models.config import BUILTIN_NAMES, DEFAULTS
    from ..models.hub import download_command

    return [f"{role}: the built-in fallback ({name}) ran instead of {DEFAULTS[role]}, whose weights are not on this "
            f"machine; fetch them once with `{download_command(DEFAULTS[role])}`"
            for role, name in providers.items() if getattr(models, role) == "auto" and name == BUILTIN_NAMES[role]]


def new_world(image_path: str | Path, out_dir: str | Path, depth_path: str | Path | None = None, prompt: str = "",
              config: WorldConfig = WorldConfig(), progress=lambda f, m: None) -> store.World:
    """Create ``out_dir`` (must not hold a world yet) with the first step lifted from the image."""
    out_dir = check_output(out_dir, store.WORLD_FOLDER)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    image = read_image(image_path)
    size = _working_size(image.shape[1], image.shape[0], config.resolution)
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size != image.shape[1::-1] else image
    h, w = image.shape[:2]
    progress(0.1, "segmenting sky / water / ground")
    t = time.perf_counter()
    regions = _segmentation(config.models).segment(image)
    timings["segmentation_s"] = time.perf_counter() - t
    camera = initial_camera(w, h, estimate_horizon(regions.sky), config)
    f = float(camera.K[0, 0])
    progress(0.3, "estimating depth")
    t = time.perf_counter()
    provider = DepthMapFile(depth_path) if depth_path else _depth(config.models, _geometry(config))
    pred = provider.predict(image, f)
    prior = LandscapeDepth(_segmentation(config.models), _geometry(config))
    if pred.kind == "metric":
        depth, fit_residual = pred.values, None
    else:  # relative inverse depth: place it on the landscape prior (ground and water)
        ref = prior.predict(image, f).values
        depth, fit = align_depth(pred, ref, ~regions.sky, max_depth=config.lift.sky_depth)
        fit_residual = fit.median_rel_error
    depth = np.where(regions.sky, sky_z(camera.K, h, w, config.lift.sky_depth), depth).astype(np.float32)
    timings["depth_s"] = time.perf_counter() - t
    progress(0.5, "lifting pixels to Gaussians")
    t = time.perf_counter()
    gaussians = lift_image(image, depth, camera, regions.sky, regions.water, select=pred.valid | regions.sky, step=0,
                           config=config.lift, device=_render_device())
    timings["lift_s"] = time.perf_counter() - t
    t = time.perf_counter()
    color, alpha, _ = _render_reporting(gaussians, camera, progress, 0.7, "rendering the preview")
    timings["render_s"] = time.perf_counter() - t

    records: list = []

    def write_files(folder: Path) -> dict:
        t = time.perf_counter()
        _write_png(folder / "image.png", image)
        cv2.imwrite(str(folder / "mask.png"), np.full((h, w), 255, np.uint8))
        np.save(folder / "depth.npy", depth)
        cv2.imwrite(str(folder / "regions.png"), _region_labels(regions.sky, regions.water))
        records.append(gaussians_to_records(gaussians))
        write_ply_records(folder / "gaussians.ply", records)
        _write_png(folder / "preview.png", color)
        return {"timings": {**timings, "write_s": time.perf_counter() - t, "total_s": time.perf_counter() - t0}}

    blender = opencv_to_blender(camera).to_dict()
    providers = _providers_used(config, provider.name, outpaint=False)
    step = store.WorldStep(
        index=0, kind="new", folder=store.new_step_folder(0), camera=store.camera_to_json(camera, blender),
        prompt=prompt, providers=providers,
        stats={"fallbacks": fallback_notes(config.models, providers),
               "gaussians": len(gaussians), "new_gaussians": len(gaussians), "psnr_input_view": _psnr(color, image),
               "alpha_min": float(alpha.min()), "depth_fit_median_rel_error": fit_residual,
               "source_image": str(Path(image_path).resolve()), "horizon_row": estimate_horizon(regions.sky)})
    progress(0.9, "writing the world")
    world = store.commit_step(out_dir, None, step, write_files, world_id=out_dir.name or secrets.token_hex(4),
                              settings={"config": config.to_json()})
    _remember(world.file("gaussians.ply"), gaussians, records)
    return world


def camera_from_blender(spec: dict | BlenderCameraSpec, world: store.World) -> Camera:
    """The Blender camera at the world's working resolution (long side), far enough to see the sky layer."""
    spec = spec if isinstance(spec, BlenderCameraSpec) else BlenderCameraSpec.from_dict(spec)
    cfg = WorldConfig.from_json(world.settings["config"])
    cam = blender_to_opencv(spec)
    w, h = _working_size(cam.width, cam.height, cfg.resolution)
    return scale_camera(cam, w, h, far=_render_far(cfg))


def lift_selected(image: np.ndarray, depth: np.ndarray, camera: Camera, sky: np.ndarray, water: np.ndarray,
                  select: np.ndarray, step: int, config: LiftConfig, device: str | None = None) -> Gaussians:
    """``lift_image`` over the bounding box of ``select`` (one stride block of margin, so every selected pixel
    has the same neighbours, hence the same normal and edge test, as in the whole image): the same Gaussians in
    the same order for a fraction of the work when the new region is a band at one side of the view. ``device``:
    where ``lift_image`` computes."""
    s = int(config.stride)
    h, w = depth.shape
    rows, cols = np.flatnonzero(select.any(axis=1)), np.flatnonzero(select.any(axis=0))
    if len(rows) == 0:
        return lift_image(image, depth, camera, sky, water, select=select, step=step, config=config, device=device)
    y0, x0 = max((rows[0] // s - 1) * s, 0), max((cols[0] // s - 1) * s, 0)
    y1, x1 = min((rows[-1] // s + 2) * s, h), min((cols[-1] // s + 2) * s, w)
    if (y1 - y0) * (x1 - x0) > 0.8 * h * w:
        return lift_image(image, depth, camera, sky, water, select=select, step=step, config=config, device=device)
    K = np.asarray(camera.K, np.float64).copy()
    K[0, 2] -= x0
    K[1, 2] -= y0
    crop = replace(camera, K=K, width=x1 - x0, height=y1 - y0)
    box = (slice(y0, y1), slice(x0, x1))
    return lift_image(image[box], depth[box], crop, sky[box], water[box], select=select[box], step=step,
                      config=config, device=device)


_last_read: dict[str, tuple[tuple[int, int], Gaussians, list | None]] = {}
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _background() -> concurrent.futures.ThreadPoolExecutor:
    """One worker thread for host work that overlaps the GPU (encoding files, a second model's inference)."""
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lw-world")
    return _executor


def _prepared(future):
    """The result of a ``prepare_samples`` started ahead, or None when it failed (the alignment then loads the
    samples itself and reports whatever is wrong with them)."""
    if future is None:
        return None
    try:
        return future.result()
    except Exception:  # noqa: BLE001 - reported by the direct load that follows
        return None


def _render_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _encode_step_files(image, missing, depth, sky, water) -> dict[str, bytes]:
    """The bytes of a step's image.png, mask.png, depth.npy and regions.png (as ``new_world`` writes them)."""
    buf = io.BytesIO()
    np.save(buf, depth)
    return {"image.png": _png(image), "mask.png": _png(missing.astype(np.uint8) * 255), "depth.npy": buf.getvalue(),
            "regions.png": _png(_region_labels(sky, water))}


def _remember(path: Path, gaussians: Gaussians, records: list | None = None) -> None:
    """What ``_read_gaussians(path)`` would read, for the next expansion (the file was just written from it), and
    the PLY records it was written from (``_records_of``)."""
    st = path.stat()
    _last_read.clear()
    _last_read[str(path)] = ((st.st_size, st.st_mtime_ns), gaussians, records)


def _read_gaussians(path: Path) -> Gaussians:
    """``read_ply`` of a world step, kept for the next expansion of the same world in this process (step files
    are never rewritten: a new step is a new folder; the file's size and mtime guard the cache anyway)."""
    st = path.stat()
    key = (st.st_size, st.st_mtime_ns)
    hit = _last_read.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    g = read_ply(path)
    _last_read.clear()
    _last_read[str(path)] = (key, g, None)
    return g


def _records_of(gaussians: Gaussians) -> list | None:
    """The PLY record parts ``gaussians`` (the cached step's object itself) were written from, if kept."""
    for _, cached, records in _last_read.values():
        if cached is gaussians:
            return records
    return None


def _write_world_ply(path: Path, old: Gaussians, new: Gaussians, merged: Gaussians) -> list:
    """Write ``merged`` (= old + new) as ``path``: the old part's records as the last write left them and only
    the new Gaussians converted, when they share a layout (else all converted). Returns the record parts."""
    old_parts, new_records = _records_of(old), gaussians_to_records(new)
    if old_parts and old_parts[0].dtype == new_records.dtype and sum(len(p) for p in old_parts) == len(old):
        parts = [*old_parts, new_records]
    else:
        parts = [gaussians_to_records(merged)]
    write_ply_records(path, parts)
    return parts


def _png(rgb_or_labels: np.ndarray) -> bytes:
    """PNG bytes of an RGB float image in [0, 1] (as ``_write_png``) or of a uint8 single-channel image."""
    img = rgb_or_labels
    if img.dtype != np.uint8:
        img = cv2.cvtColor((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def refine(old: Gaussians, new: Gaussians, camera: Camera, target: np.ndarray, cfg: ExpandConfig,
           graphed: bool | None = None) -> tuple[Gaussians, float]:
    """Adam on the new Gaussians' SH DC and opacity logits, minimising mean |render - target| at
    ``cfg.refine_size`` px (old Gaussians frozen; the view's projection and tile lists are made once,
    ``FixedGeometry``, since no Gaussian moves). The step size
    decays from ``refine_lr`` to ``refine_lr_end`` on a cosine, lr_i = e + (l - e)(1 + cos(pi i / (S - 1))) / 2:
    50 such steps end within 5 % of the L1 of 100 constant steps of 0.02 (docs/bench/world.md). Returns (new,
    final L1). Runs on CUDA (gsplat) when available; ``None`` settings pick the device's defaults (``ExpandConfig``).

    On CUDA (``graphed`` None or True) the whole step (render, loss, backward, Adam) is captured once as a CUDA
    graph after ``REFINE_WARMUP`` eager steps and replayed for the rest (``_adam_graphed``): the same arithmetic
    without ~40 kernel launches of host time per step."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps = cfg.refine_steps if cfg.refine_steps is not None else (50 if device == "cuda" else 0)
    if steps <= 0 or len(new) == 0:
        return new, float("nan")
    size = cfg.refine_size if cfg.refine_size is not None else (max(camera.width, camera.height) if device == "cuda"
                                                                else 128)
    w, h = _working_size(camera.width, camera.height, size)
    cam = scale_camera(camera, w, h)
    tgt = torch.as_tensor(cv2.resize(target, (w, h), interpolation=cv2.INTER_AREA), device=device)
    old_t = _on_device(old, device)
    row = torch.as_tensor(np.asarray(camera.world_to_cam)[2, :3], dtype=old_t.means.dtype, device=device)
    frozen = old_t.subset(old_t.means @ row + float(camera.world_to_cam[2, 3]) > camera.near)
    moving = new.with_(extra={}).to_torch(device)
    # geometry stays put: project and sort once, then each step only re-colours (FixedGeometry == rasterize)
    geometry = FixedGeometry(Gaussians.concatenate([frozen, moving]), cam)
    campos = torch.as_tensor(cam.center, dtype=moving.means.dtype, device=device)
    degree = moving.sh_degree
    with torch.no_grad():
        frozen_rgb = sh_to_color(degree, frozen.means - campos, frozen.sh)
        frozen_alpha = frozen.opacity_logits.sigmoid()
        dirs = moving.means - campos
    dc = moving.sh.clone().requires_grad_(True)
    op = moving.opacity_logits.clone().requires_grad_(True)
    lr_end = cfg.refine_lr if cfg.refine_lr_end is None else cfg.refine_lr_end
    lrs = [lr_end + 0.5 * (cfg.refine_lr - lr_end) * (1 + math.cos(math.pi * i / max(steps - 1, 1)))
           for i in range(steps)]

    def l1() -> torch.Tensor:
        color, _ = geometry.render(torch.cat([frozen_rgb, sh_to_color(degree, dirs, dc)]),
                                   torch.cat([frozen_alpha, op.sigmoid()]))
        return (color - tgt).abs().mean()

    if device == "cuda" and graphed is not False:
        loss = _adam_graphed(l1, [dc, op], lrs)
    else:
        optim = torch.optim.Adam([dc, op], lr=cfg.refine_lr)
        for lr in lrs:
            optim.param_groups[0]["lr"] = lr
            loss = l1()
            optim.zero_grad()
            loss.backward()
            optim.step()
    refined = new.with_(sh=dc.detach().cpu().numpy().astype(np.float32),
                        opacity_logits=op.detach().cpu().numpy().astype(np.float32))
    return refined, float(loss.detach())


REFINE_WARMUP = 3  # eager steps before the capture (Adam's state and the kernels' lazy set-up stay out of it)


def _adam_graphed(loss_of, params: list, lrs: list[float]):
    """Adam steps on ``params`` (CUDA tensors) minimising ``loss_of()``, step i with step size ``lrs[i]``: the
    first ``REFINE_WARMUP`` run eagerly on a side stream, then one step (forward, backward, ``Adam(capturable=True)``
    with the step size in a device tensor) is captured as a CUDA graph and replayed for each step left. Returns the
    last step's loss (a tensor). If the capture fails the remaining steps run eagerly, with one warning."""
    import torch

    dev = params[0].device
    lr = torch.tensor(lrs[0], dtype=torch.float32, device=dev)
    optim = torch.optim.Adam(params, lr=lr, capturable=True)
    loss = None

    def step(i: int):
        lr.fill_(lrs[i])
        optim.zero_grad(set_to_none=True)
        value = loss_of()
        value.backward()
        optim.step()
        return value.detach()  # no autograd graph outlives its step (its nodes would pin the warm-up's stream)

    main = torch.cuda.current_stream(dev)
    side = torch.cuda.Stream(dev)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        for i in range(min(REFINE_WARMUP, len(lrs))):
            loss = step(i)
        if len(lrs) > REFINE_WARMUP:
            # captured on the warm-up's stream with capture_begin / capture_end: ``torch.cuda.graph`` would first
            # empty the allocator's cache (every later allocation of the expansion a fresh cudaMalloc)
            graph = torch.cuda.CUDAGraph()
            optim.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients from its own pool
            try:
                graph.capture_begin(capture_error_mode="thread_local")  # another thread may use CUDA meanwhile
                try:
                    static_loss = loss_of()
                    static_loss.backward()
                    optim.step()
                finally:
                    graph.capture_end()
            except RuntimeError as exc:  # something in the step cannot be captured: finish eagerly, correctly
                import warnings

                warnings.warn(f"CUDA graph capture of the refinement step failed, running it eagerly: {exc}",
                              RuntimeWarning, stacklevel=3)
                torch.cuda.synchronize(dev)
                for i in range(REFINE_WARMUP, len(lrs)):
                    loss = step(i)
            else:
                for i in range(REFINE_WARMUP, len(lrs)):
                    lr.fill_(lrs[i])
                    graph.replay()
                loss = static_loss.detach()
    main.wait_stream(side)
    return loss


def expand_world(root: str | Path, camera: Camera, prompt: str = "", blender: dict | None = None,
                 progress=lambda f, m: None, fail_after_writing: bool = False,
                 policy: PathPolicy | None = None) -> store.World:
    """Add a step seen from ``camera`` (OpenCV, at the world's working resolution). See the module docstring.

    ``policy``: where the model folders world.json names (its model settings, the carried motion model) may be
    read from (None: anywhere); checked before any work. ``fail_after_writing`` raises after half of the step's
    files are written (a simulated crash for tests).
    """
    from .motion.pipeline import (  # torch-heavy: only when a world is expanded
        View,
        carried_motion,
        carried_request,
        prepare_samples,
    )

    world = store.load_world(root)
    cfg = WorldConfig.from_json(world.settings["config"])
    for role in ("depth", "segmentation", "outpaint"):
        if policy is not None:
            policy.check_model(getattr(cfg.models, role), f"the {role} model world.json names")
    carried = carried_request(world, policy)
    # the world's motion samples are loaded and indexed for the new view's alignment while the GPU outpaints
    prepared = _background().submit(prepare_samples, world, carried.align) if carried is not None else None
    ec = cfg.expand
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    old = _read_gaussians(world.file("gaussians.ply"))
    camera = replace(camera, far=max(camera.far, _render_far(cfg)))
    t = time.perf_counter()
    color, alpha, rdepth = _render_reporting(old, camera, progress, 0.05, "rendering the world from the new camera")
    timings["render_s"] = time.perf_counter() - t
    missing = alpha < ec.alpha_threshold
    color = color / np.maximum(alpha, 1e-6)[..., None]  # straight colour: no dark fringe from the black background
    if ec.dilate_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ec.dilate_px + 1, 2 * ec.dilate_px + 1))
        missing = cv2.dilate(missing.astype(np.uint8), k).astype(bool)
    if missing.mean() < ec.min_missing_fraction:
        raise InvalidInput("the camera sees no missing region (the world already fills the view): turn or move "
                           "the camera towards the unexplored part before expanding")
    progress(0.2, "outpainting the missing region")
    t = time.perf_counter()
    outpainter = _outpaint(cfg.models)
    image = outpainter.outpaint(color, missing, prompt, seed=len(world.steps))
    timings["outpaint_s"] = time.perf_counter() - t
    progress(0.45, "segmenting and estimating depth")
    t = time.perf_counter()
    depth_provider = _depth(cfg.models, _geometry(cfg))
    f = float(camera.K[0, 0])
    segment = _segmentation(cfg.models).segment
    # on CUDA both models' pre-processing (host) and inference overlap; on the CPU they would fight for the cores
    regions_later = _background().submit(segment, image) if _render_device() == "cuda" else None
    pred = depth_provider.predict(image, f)
    regions = regions_later.result() if regions_later is not None else segment(image)
    sky_far = sky_z(camera.K, camera.height, camera.width, cfg.lift.sky_depth)
    sky_seen = rdepth > 0.5 * sky_far  # the world's sky layer, where it is rendered
    sky_new = regions.sky & missing | (~missing & sky_seen)
    water_new = regions.water & missing
    overlap = ~missing & ~sky_seen & (rdepth > 0)
    overlap = cv2.erode(overlap.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    depth, fit = align_depth(pred, rdepth, overlap, max_depth=cfg.lift.sky_depth)
    if fit.count:
        resid = np.where(overlap, np.log(np.maximum(rdepth, 1e-6)) - np.log(depth), 0.0).astype(np.float32)
        filled = push_pull_fill(resid[..., None], overlap)[..., 0]
        dist = cv2.distanceTransform(missing.astype(np.uint8), cv2.DIST_L2, 5)
        depth = depth * np.exp(filled * np.exp(-dist / ec.seam_fade_px))
    depth = np.where(~missing, rdepth, depth)
    depth = np.where(sky_new, sky_far, depth).astype(np.float32)
    timings["depth_s"] = time.perf_counter() - t
    # seams: a missing pixel the old Gaussians cover (alpha >= covered_alpha) gets no new surfel (no second layer on
    # the old one); under their soft edges the new one goes just behind them, so it fills what they let through
    # and never covers them in any view
    select = missing & (alpha < ec.covered_alpha)
    under = select & (alpha > 1.0 / 255)
    lift_depth = np.where(under, np.maximum(depth, rdepth * (1.0 + ec.behind)), depth).astype(np.float32)
    # from here the step's files go into a staged step folder as soon as each is known, on the background thread
    # while the GPU lifts and refines (the image files, then the old Gaussians' part of the PLY): the commit is
    # left the new Gaussians' records, the preview and the flushes of what is not yet on disk
    staged = store.stage_step(world)
    pending: list[concurrent.futures.Future] = []
    ply = None
    try:
        image_files = _background().submit(_stage_step_files, staged, image, select, depth, sky_new, water_new)
        pending.append(image_files)
        progress(0.6, "lifting the new content")
        t = time.perf_counter()
        new = lift_selected(image, lift_depth, camera, sky_new, water_new, select, len(world.steps), cfg.lift,
                            device=_render_device())
        timings["lift_s"] = time.perf_counter() - t
        ply = _StagedPly(staged / "gaussians.ply", old, len(new))
        progress(0.7, "optimising the new Gaussians")
        t = time.perf_counter()
        new, refine_l1 = refine(old, new, camera, image, ec)
        timings["refine_s"] = time.perf_counter() - t
        merged = Gaussians.concatenate([old, new])
        dev = _render_device()
        _on_device(merged, dev, build=lambda: Gaussians.concatenate([_on_device(old, dev),
                                                                     new.with_(extra={}).to_torch(dev)]))
        t = time.perf_counter()
        preview, new_alpha, _ = _render_reporting(merged, camera, progress, 0.85, "rendering the preview")
        timings["preview_s"] = time.perf_counter() - t
        preview_png = _background().submit(_png, preview)
        pending.append(preview_png)
        index = len(world.steps)
        t = time.perf_counter()
        view = View(index, camera, image, depth, _region_labels(sky_new, regions.water & ~sky_new))
        motion = carried_motion(world, view, carried, prepared=_prepared(prepared),
                                progress=lambda f, m: progress(0.86 + 0.05 * f, f"new view's motion: {m}"))
        timings["motion_s"] = time.perf_counter() - t

        records: list = []

        def write_files(folder: Path) -> dict:
            t = time.perf_counter()
            image_files.result()  # image.png, mask.png, depth.npy, regions.png
            if fail_after_writing:
                raise RuntimeError("simulated crash while writing a world step")
            records.extend(ply.finish(old, new, merged))
            (folder / "preview.png").write_bytes(preview_png.result())
            if motion is not None:
                motion.write(folder)
            return {"timings": {**timings, "write_s": time.perf_counter() - t, "total_s": time.perf_counter() - t0}}

        blender = blender if blender is not None else opencv_to_blender(camera).to_dict()
        providers = _providers_used(cfg, depth_provider.name, outpaint=True)
        step = store.WorldStep(
            index=index, kind="expand", folder=store.new_step_folder(index),
            camera=store.camera_to_json(camera, blender), prompt=prompt, providers=providers,
            stats={"fallbacks": fallback_notes(cfg.models, providers), "gaussians": len(merged),
                   "new_gaussians": len(new), "missing_fraction": float(missing.mean()),
                   "filled_alpha_min": float(new_alpha[missing].min()),
                   "depth_fit": {"scale": fit.scale, "shift": fit.shift, "overlap_pixels": fit.count,
                                 "median_rel_error": fit.median_rel_error},
                   "seam": {"covered_pixels": int((missing & ~select).sum()), "under_soft_edges": int(under.sum())},
                   "refine_l1": refine_l1, **({"outpaint_kernels": outpainter.last_kernels}
                                              if hasattr(outpainter, "last_kernels") else {}),
                   **({"motion": motion.stats} if motion is not None else {})})
        progress(0.92, "writing the world")
        committed = store.commit_step(world.root, world, step, write_files, staged=staged)
    except BaseException:  # the commit leaves a staged folder to us: removed once nothing writes into it
        for future in pending:
            with contextlib.suppress(BaseException):
                future.result()
        if ply is not None:
            ply.close()
        store.discard_staged(staged)
        raise
    _remember(committed.file("gaussians.ply"), merged, records)
    return committed


class _StagedPly:
    """The new step's ``gaussians.ply`` (old + new Gaussians) written in two parts, byte for byte what
    ``_write_world_ply`` writes. When the old Gaussians' records of the last write are kept (``_records_of``),
    the header (its count known once the new Gaussians are lifted) and those records, the bulk of the file, are
    written and flushed to disk on the background thread while the GPU refines; ``finish`` appends the new
    Gaussians' records. Otherwise (or when the new records' layout differs) ``finish`` writes the whole file."""

    def __init__(self, path: Path, old: Gaussians, n_new: int):
        self.path, self.n_new = path, n_new
        self.old_parts = _records_of(old)
        self.future = None
        if self.old_parts and sum(len(p) for p in self.old_parts) == len(old):
            self.future = _background().submit(self._begin, len(old) + n_new)

    def _begin(self, n: int):
        f = open(self.path, "wb")  # noqa: SIM115 - kept open for ``finish`` (closed there or on failure)
        try:
            f.write(ply_records_header(self.old_parts[0].dtype, n))
            f.writelines(np.ascontiguousarray(part).data for part in self.old_parts)
            f.flush()
            os.fsync(f.fileno())  # on disk while the GPU works: the commit's flush is then the new records only
        except BaseException:
            f.close()
            raise
        return f

    def finish(self, old: Gaussians, new: Gaussians, merged: Gaussians) -> list:
        """Complete the file; returns the record parts it holds (for ``_remember``)."""
        if self.future is not None:
            f = self.future.result()
            with f:
                new_records = gaussians_to_records(new)
                if new_records.dtype == self.old_parts[0].dtype and len(new_records) == self.n_new:
                    f.write(new_records.data)
                    return [*self.old_parts, new_records]
        return _write_world_ply(self.path, old, new, merged)  # replaces a partial file atomically

    def close(self) -> None:
        """After a failure: wait for the background part and close its file (the folder is then removed)."""
        if self.future is not None:
            with contextlib.suppress(BaseException):
                self.future.result().close()


def _stage_step_files(folder: Path, image, missing, depth, sky, water) -> None:
    """``_encode_step_files`` written into a staged step folder and flushed to disk."""
    for name, data in _encode_step_files(image, missing, depth, sky, water).items():
        with open(folder / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def undo_world(root: str | Path) -> store.World:
    """Step back to the previous version (``store.undo``)."""
    return store.undo(root)
