"""Gaussians as a Blender object: decoded arrays <-> one carrier object (vertex-only mesh + splat display).

A carrier is a mesh with one vertex per Gaussian and point attributes named like Blender 5.3's native splats:

    position (native)  (N, 3)  world metres, Blender Z-up
    scale     FLOAT_VECTOR  (N, 3)  linear sigmas (exp of the PLY log-scale)
    rotation  QUATERNION    (N, 4)  unit (w, x, y, z)
    opacity   FLOAT         (N,)    0..1 (sigmoid of the PLY logit)
    sh_k      FLOAT_VECTOR  (N, 3)  raw SH coefficient k = 0..K-1 (sh_0 is the DC term), K = (degree+1)^2
    gs_color  FLOAT_COLOR   (N, 4)  colour the material shows: the DC colour, or SH evaluated for the camera

Arrays cross into Blender only through ``attributes[name].data.foreach_set`` / ``foreach_get`` with flat
C-contiguous float32 buffers (no per-vertex Python). Custom properties ``lw_source`` and ``lw_sh_degree``
record where the Gaussians came from; an attached ``.lw4d`` sequence lives in ``Object.lw_seq`` (playback).
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import splat_material

SOURCE_PROPERTY = "lw_source"
DEGREE_PROPERTY = "lw_sh_degree"
# (attribute name, Blender type, foreach key, values per Gaussian)
CORE_ATTRIBUTES = (
    ("position", "FLOAT_VECTOR", "vector", 3),
    ("scale", "FLOAT_VECTOR", "vector", 3),
    ("rotation", "QUATERNION", "value", 4),
    ("opacity", "FLOAT", "value", 1),
)
_KEYS = {name: (kind, key, width) for name, kind, key, width in CORE_ATTRIBUTES}
_KEYS[splat_material.COLOR_ATTRIBUTE] = ("FLOAT_COLOR", "color", 4)


class GaussianDataError(Exception):
    """A decoded folder, a carrier object or a sequence is missing data or has inconsistent shapes."""


@dataclass(frozen=True)
class DecodedGaussians:
    """Decoded arrays of ARCHITECTURE.md, all float32 C-contiguous.

    position (N, 3), scale (N, 3), rotation (N, 4) wxyz, opacity (N,), color (N, 3) 0..1, sh (N, K, 3).
    """

    position: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    opacity: np.ndarray
    color: np.ndarray
    sh: np.ndarray
    source: str = ""
    sequence: str | None = None

    @property
    def count(self) -> int:
        return int(self.position.shape[0])

    @property
    def sh_degree(self) -> int:
        return round(float(np.sqrt(self.sh.shape[1]))) - 1


def _load_array(folder: Path, name: str, shape_tail: tuple, count: int) -> np.ndarray:
    path = folder / f"{name}.npy"
    if not path.is_file():
        raise GaussianDataError(f"decoded folder {folder} has no {name}.npy")
    array = np.load(path)
    if array.shape != (count, *shape_tail):
        raise GaussianDataError(f"{path} has shape {array.shape}, expected {(count, *shape_tail)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def read_decoded(folder: str | os.PathLike) -> DecodedGaussians:
    """Read a decoded folder (manifest.json + .npy files) written by the backend's import_gaussians job."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise GaussianDataError(f"{folder} is not a decoded Gaussians folder (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
        count = int(manifest["count"])
        degree = int(manifest["sh_degree"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GaussianDataError(f"{manifest_path} is not a valid decoded manifest: {exc}") from exc
    k = (degree + 1) ** 2
    return DecodedGaussians(
        position=_load_array(folder, "position", (3,), count),
        scale=_load_array(folder, "scale", (3,), count),
        rotation=_load_array(folder, "rotation", (4,), count),
        opacity=_load_array(folder, "opacity", (), count),
        color=_load_array(folder, "color", (3,), count),
        sh=_load_array(folder, "sh", (k, 3), count),
        source=str(manifest.get("source") or ""),
        sequence=manifest.get("sequence"),
    )


def write_decoded(gaussians: DecodedGaussians, folder: str | os.PathLike) -> Path:
    """Write ``gaussians`` as a decoded folder (the input of the backend's export_gaussians job)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("position", "scale", "rotation", "opacity", "color", "sh"):
        np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(gaussians, name), dtype="<f4"))
    manifest = {
        "version": 1,
        "count": gaussians.count,
        "sh_degree": gaussians.sh_degree,
        "source": gaussians.source,
        "sequence": gaussians.sequence,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def _set(mesh, name: str, values: np.ndarray, kind: str | None = None, key: str | None = None):
    """foreach_set a float32 array into a point attribute (created when missing)."""
    if kind is None:
        kind, key, _ = _KEYS[name]
    attr = mesh.attributes.get(name)
    if attr is None:
        attr = mesh.attributes.new(name, kind, "POINT")
    attr.data.foreach_set(key, np.ascontiguousarray(values, dtype=np.float32).reshape(-1))


def _get(mesh, name: str, width: int, key: str) -> np.ndarray:
    attr = mesh.attributes.get(name)
    if attr is None:
        raise GaussianDataError(f"mesh {mesh.name!r} has no attribute {name!r}; is it a LivingWorld carrier?")
    out = np.empty(len(mesh.vertices) * width, dtype=np.float32)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def rgba(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 4) float32 with alpha 1, the layout of a FLOAT_COLOR attribute."""
    out = np.ones((rgb.shape[0], 4), dtype=np.float32)
    out[:, :3] = rgb
    return out


def set_color(mesh, rgb: np.ndarray):
    """Write the displayed colour (N, 3) 0..1."""
    _set(mesh, splat_material.COLOR_ATTRIBUTE, rgba(rgb))


def fill_mesh(mesh, gaussians: DecodedGaussians):
    """Make ``mesh`` a carrier of ``gaussians`` (it must be empty)."""
    mesh.vertices.add(gaussians.count)
    for name, kind, key, _ in CORE_ATTRIBUTES:
        _set(mesh, name, getattr(gaussians, name), kind, key)
    for k in range(gaussians.sh.shape[1]):
        _set(mesh, splat_material.sh_attribute(k), np.ascontiguousarray(gaussians.sh[:, k]), "FLOAT_VECTOR", "vector")
    set_color(mesh, gaussians.color)


def read_carrier(obj) -> DecodedGaussians:
    """The carrier's current attributes (the current frame of a sequence) as decoded arrays."""
    mesh = obj.data
    degree = int(obj.get(DEGREE_PROPERTY, 0))
    arrays = {name: _get(mesh, name, width, key) for name, _, key, width in CORE_ATTRIBUTES}
    sh = np.stack(
        [_get(mesh, splat_material.sh_attribute(k), 3, "vector") for k in range((degree + 1) ** 2)], axis=1
    )
    return DecodedGaussians(
        color=splat_material.dc_to_rgb(sh[:, 0]),
        sh=np.ascontiguousarray(sh),
        source=str(obj.get(SOURCE_PROPERTY, "")),
        sequence=None,
        **arrays,
    )


def is_carrier(obj) -> bool:
    return obj is not None and obj.type == "MESH" and SOURCE_PROPERTY in obj


# Cycles stops a ray after this many transparent surfaces; overlapping splat layers (a world's sky from several
# views, a trained cloud) need far more than Blender's default 8, or they render with black holes.
TRANSPARENT_BOUNCES = 128


def raise_transparent_bounces(scene) -> bool:
    """Raise Cycles' transparent bounce limit of ``scene`` to TRANSPARENT_BOUNCES (never lowers it); True when
    it was raised."""
    cycles = getattr(scene, "cycles", None)
    if cycles is None or cycles.transparent_max_bounces >= TRANSPARENT_BOUNCES:
        return False
    cycles.transparent_max_bounces = TRANSPARENT_BOUNCES
    return True


def use_standard_view(scene) -> None:
    """The Standard view transform and no look: a render shows the splats' stored colours (splat_material)."""
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"


def prefer_standard_view(scene) -> bool:
    """``use_standard_view`` when the first carrier arrives in a ``scene`` that holds nothing else but cameras and
    empties, so a user's own look (or a view transform chosen after the first import) is never changed; True
    when it was set."""
    carriers = 0
    for obj in scene.objects:
        if is_carrier(obj):
            carriers += 1
        elif obj.type not in ("CAMERA", "EMPTY"):
            return False
    if carriers != 1 or scene.view_settings.view_transform == "Standard":
        return False
    use_standard_view(scene)
    return True


def load_decoded(context, folder: str | os.PathLike, name: str):
    """Create a carrier object from a decoded folder, linked to the active collection; returns the object.

    The object gets the splat display (Geometry Nodes modifier + material). When the folder's manifest names
    a ``.lw4d`` sequence, it is attached for playback and the current frame is shown.
    """
    import bpy

    from . import playback

    gaussians = read_decoded(folder)
    if gaussians.sequence:
        playback.check_sequence(gaussians.sequence, gaussians.count)
    mesh = bpy.data.meshes.new(name)
    fill_mesh(mesh, gaussians)
    obj = bpy.data.objects.new(name, mesh)
    obj[SOURCE_PROPERTY] = gaussians.source
    obj[DEGREE_PROPERTY] = gaussians.sh_degree
    material = bpy.data.materials.get(splat_material.MATERIAL_NAME) or splat_material.build_material()
    mesh.materials.append(material)
    context.collection.objects.link(obj)
    show_carrier(context, obj, material, gaussians.sequence, gaussians.sh_degree)
    return obj


def show_carrier(context, obj, material, sequence: str | None, sh_degree: int) -> None:
    """What every carrier gets once its mesh is filled and it is in the scene (an import, the world object):
    the splat modifier, selection, its sequence or view-dependent colours, draw order and view-facing quads,
    and the splat scene settings (``prefer_standard_view``, ``raise_transparent_bounces``)."""
    from . import playback, sorting, splat_nodes

    scene = context.scene
    splat_nodes.add_modifier(obj, material)
    for other in context.selected_objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    if sequence:
        playback.attach_sequence(scene, obj, sequence)
    elif sh_degree > 0:
        playback.update_view_colors(scene, obj, force=True)
    sorting.update_view(scene, obj)
    prefer_standard_view(scene)
    raise_transparent_bounces(scene)


def decoded_folder(result) -> Path:
    for name in result.artifacts:
        if name.endswith("manifest.json") and "decoded" in name:
            return result.path(name).parent
    for name in result.artifacts:
        path = result.path(name)
        if path.is_dir() and (path / "manifest.json").is_file():
            return path
    raise GaussianDataError(f"the import job returned no decoded folder (artifacts: {list(result.artifacts)})")


def check_import_path(filepath: str) -> str:
    """Validate a user's import path: a .ply file, a .lw4d folder or its manifest.json; returns the path to send."""
    path = Path(bpy_abspath(filepath))
    if path.name == "manifest.json" and path.parent.suffix == ".lw4d":
        path = path.parent
    if not path.exists():
        raise GaussianDataError(f"{path} does not exist")
    if path.suffix.lower() == ".ply" and path.is_file():
        return str(path)
    if path.suffix == ".lw4d" and path.is_dir():
        if not (path / "manifest.json").is_file():
            raise GaussianDataError(f"{path} has no manifest.json; it is not a .lw4d sequence")
        return str(path)
    raise GaussianDataError(f"{path} is neither a .ply file nor a .lw4d sequence folder")


def bpy_abspath(filepath: str) -> str:
    import bpy

    return bpy.path.abspath(filepath)


def import_gaussians(context, filepath: str):
    """Import a 3DGS PLY or a ``.lw4d`` sequence through the backend's ``import_gaussians`` job.

    Background mode: blocks and returns the new carrier object. With a UI: returns None at once; the object
    appears when the job ends (a failure is shown in the sidebar through ``wm.lw_runtime.last_error``).
    """
    import bpy

    from . import jobs

    path = check_import_path(filepath)
    name = Path(path).stem or "Gaussians"
    if bpy.app.background:
        result = jobs.run_job_blocking(context, "import_gaussians", {"path": path})
        return load_decoded(context, decoded_folder(result), name)

    def finished(result):
        if result.ok:
            load_decoded(bpy.context, decoded_folder(result), name)

    jobs.submit_job(context, "import_gaussians", {"path": path}, finished)
    return None


def export_gaussians(context, obj, filepath: str):
    """Write the carrier's current frame to a 3DGS PLY through the backend's ``export_gaussians`` job."""
    from . import jobs

    if not is_carrier(obj):
        raise GaussianDataError("select a LivingWorld Gaussians object to export")
    out = Path(bpy_abspath(filepath))
    if out.suffix.lower() != ".ply":
        out = out.with_suffix(".ply")
    folder = Path(tempfile.mkdtemp(prefix="lw_export_")) / "decoded"
    write_decoded(read_carrier(obj), folder)
    jobs.run_job_blocking(context, "export_gaussians", {"decoded": str(folder), "path": str(out)})
    return out


# Render through the backend ---------------------------------------------------------------------------------

RENDER_IMAGE = "LW Render"


def camera_spec(scene, camera) -> dict:
    """The Blender camera spec of ARCHITECTURE.md for ``camera`` (an Object) as the scene renders it now."""
    data, render = camera.data, scene.render
    return {
        "matrix_world": [list(row) for row in camera.matrix_world],
        "lens": data.lens,
        "sensor_width": data.sensor_width,
        "sensor_height": data.sensor_height,
        "sensor_fit": data.sensor_fit,
        "shift_x": data.shift_x,
        "shift_y": data.shift_y,
        "clip_start": data.clip_start,
        "clip_end": data.clip_end,
        "resolution_x": render.resolution_x,
        "resolution_y": render.resolution_y,
        "resolution_percentage": render.resolution_percentage,
        "pixel_aspect_x": render.pixel_aspect_x,
        "pixel_aspect_y": render.pixel_aspect_y,
    }


def render_params(scene, obj, frames: list[int], out_dir: str = "render") -> dict:
    """Parameters of the backend ``render_splats`` job for carrier ``obj`` seen by the scene camera at ``frames``.

    For a sequence, ``times`` are the sequence times the timeline shows at each frame (keyframes, speed,
    offset and loop mode applied); the scene is stepped through the frames for the (possibly animated) camera.
    """
    from . import playback

    if not is_carrier(obj):
        raise GaussianDataError("select a LivingWorld Gaussians object to render")
    if scene.camera is None:
        raise GaussianDataError("the scene has no active camera to render from")
    sequence = bpy_abspath(obj.lw_seq.path) if obj.lw_seq.path else ""
    source = sequence or str(obj.get(SOURCE_PROPERTY, ""))
    if not source or not Path(source).exists():
        raise GaussianDataError(f"{obj.name!r} has no source file on disk to render ({source or 'none recorded'})")
    current = (scene.frame_current, scene.frame_subframe)
    cameras, times = [], []
    try:
        for frame in frames:
            scene.frame_set(frame)
            cameras.append(camera_spec(scene, scene.camera))
            if sequence:
                t = playback.sequence_time(scene, obj, float(frame))
                times.append(playback.effective_time(t, obj.lw_seq.frame_count, obj.lw_seq.loop_mode))
    finally:
        scene.frame_set(current[0], subframe=current[1])
    fps = scene.render.fps / scene.render.fps_base
    return {"source": source, "cameras": cameras, "frames": list(frames), "times": times if sequence else None,
            "out_dir": out_dir, "write_mp4": len(frames) > 1, "fps": fps}


def render_splats(context, obj, animation: bool = False):
    """Render ``obj`` with the backend rasterizer from the scene camera (blocking).

    A still (the current frame) lands in the Image datablock "LW Render"; an animation (scene frame range)
    becomes a PNG sequence + MP4, added to the scene's sequence editor as a movie strip. Returns the image or
    the strip.
    """
    import bpy

    from . import jobs

    scene = context.scene
    frames = list(range(scene.frame_start, scene.frame_end + 1, scene.frame_step)) if animation else [scene.frame_current]
    result = jobs.run_job_blocking(context, "render_splats", render_params(scene, obj, frames))
    paths = [result.path(name) for name in result.artifacts]
    if not animation:
        pngs = [p for p in paths if p.suffix.lower() == ".png"]
        if not pngs:
            raise GaussianDataError(f"the render job returned no image (artifacts: {result.artifacts})")
        image = bpy.data.images.get(RENDER_IMAGE)
        if image is not None:
            bpy.data.images.remove(image)
        image = bpy.data.images.load(str(pngs[0]))
        image.name = RENDER_IMAGE
        image.pack()  # the job folder is temporary; keep the pixels with the .blend
        return image
    movies = [p for p in paths if p.suffix.lower() == ".mp4"]
    if not movies:
        raise GaussianDataError(f"the render job returned no movie (artifacts: {result.artifacts})")
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    channel = 1 + max((s.channel for s in strips), default=0)
    return strips.new_movie(name=f"{obj.name} splats", filepath=str(movies[0]), channel=channel,
                            frame_start=scene.frame_start)
