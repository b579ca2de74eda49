"""Render a carrier with the backend's exact rasterizer from the Blender camera (``lw.render_splats``).

``camera_spec`` is the Blender camera spec of ARCHITECTURE.md (also what world steps send); ``render_params``
the ``render_splats`` job parameters; ``render_splats`` runs the job and brings back an Image or a movie strip.
"""

from pathlib import Path

import bpy
from mathutils import Matrix

from ..connection import jobs
from . import carrier, playback, ply
from .data import GaussianDataError, is_carrier

RENDER_IMAGE = "LW Render"


def camera_spec(scene, camera, seen_by=None) -> dict:
    """The Blender camera spec of ARCHITECTURE.md for ``camera`` (an Object) as the scene renders it now.

    ``seen_by``: a splat object; the camera is then given in that object's local space, where its Gaussians
    live, so a moved, turned or uniformly scaled object renders where Blender shows it: with the object's
    matrix M = T R s, the camera matrix C becomes M^-1 C without its scale, and the clip distances are divided
    by s (a pinhole image is unchanged by scaling the scene about the camera).
    """
    data, render = camera.data, scene.render
    matrix, clip = camera.matrix_world, 1.0
    if seen_by is not None:
        scale = seen_by.matrix_world.to_scale()
        if max(scale) - min(scale) > 1e-4 * max(scale):
            raise GaussianDataError(f"{seen_by.name!r} is scaled unevenly ({scale.x:g}, {scale.y:g}, {scale.z:g}): "
                                    "apply the scale (Ctrl+A) before rendering it with the backend")
        location, rotation, _ = (seen_by.matrix_world.inverted() @ matrix).decompose()
        matrix, clip = Matrix.LocRotScale(location, rotation, None), 1.0 / scale.x
    return {
        "matrix_world": [list(row) for row in matrix],
        "lens": data.lens,
        "sensor_width": data.sensor_width,
        "sensor_height": data.sensor_height,
        "sensor_fit": data.sensor_fit,
        "shift_x": data.shift_x,
        "shift_y": data.shift_y,
        "clip_start": data.clip_start * clip,
        "clip_end": data.clip_end * clip,
        "resolution_x": render.resolution_x,
        "resolution_y": render.resolution_y,
        "resolution_percentage": render.resolution_percentage,
        "pixel_aspect_x": render.pixel_aspect_x,
        "pixel_aspect_y": render.pixel_aspect_y,
    }


def render_source(obj, workspace: Path | None, cache: Path | None = None) -> str:
    """What the backend renders for ``obj``: its ``.lw4d`` sequence, or else its current Gaussians (whatever made
    them: an import, the world, Blender's own importers) written to ``<workspace>/blender/<name>.ply``.
    ``workspace`` is the local backend's (None for a remote backend, which cannot read this machine's files);
    ``cache`` a remote backend's download folder: a sequence downloaded there is named by its artifact name (its
    path relative to the cache is its path in the server's workspace)."""
    remote = (f"a remote backend cannot read {obj.name!r} from this machine: render it with a local backend "
              "(clear Remote URL in the add-on preferences)")
    if obj.lw_seq.path:
        path = Path(bpy.path.abspath(obj.lw_seq.path))
        if workspace is not None:
            return str(path)
        if cache is not None and path.resolve().is_relative_to(Path(cache).resolve()):
            return path.resolve().relative_to(Path(cache).resolve()).as_posix()
        raise GaussianDataError(remote)
    if workspace is None:
        raise GaussianDataError(remote)
    folder = workspace / "blender"
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in obj.name)
    return str(ply.write_ply(folder / f"{stem}.ply", carrier.read(obj), overwrite=True))  # the add-on's own file


def render_params(scene, obj, frames: list[int], source: str, out_dir: str = "render") -> dict:
    """Parameters of the backend ``render_splats`` job for splat object ``obj`` (its Gaussians in ``source``,
    ``render_source``) seen by the scene camera at ``frames``.

    For a sequence, ``times`` are the sequence times the timeline shows at each frame (keyframes, speed,
    offset and loop mode applied); the scene is stepped through the frames for the (possibly animated) camera.
    """
    if scene.camera is None:
        raise GaussianDataError("the scene has no active camera to render from")
    sequence = bool(obj.lw_seq.path)
    current = (scene.frame_current, scene.frame_subframe)
    cameras, times = [], []
    try:
        for frame in frames:
            scene.frame_set(frame)
            cameras.append(camera_spec(scene, scene.camera, seen_by=obj))
            if sequence:
                t = playback.sequence_time(scene, obj, float(frame))
                times.append(playback.effective_time(t, obj.lw_seq.frame_count, obj.lw_seq.loop_mode))
    finally:
        scene.frame_set(current[0], subframe=current[1])
    fps = scene.render.fps / scene.render.fps_base
    return {"source": source, "cameras": cameras, "frames": list(frames), "times": times if sequence else None,
            "out_dir": out_dir, "write_mp4": len(frames) > 1, "fps": fps}


def render_splats(context, obj, animation: bool = False):
    """Render splat object ``obj`` with the backend's exact rasterizer from the scene camera (blocking).

    A still (the current frame) lands in the Image datablock "LW Render"; an animation (scene frame range)
    becomes a PNG sequence + MP4, added to the scene's sequence editor as a movie strip. Returns the image or
    the strip.
    """
    if not is_carrier(obj):
        raise GaussianDataError("select a Gaussian splat object to render")
    scene = context.scene
    step = max(scene.frame_step, 1)  # Blender allows a frame step of 0; it renders every frame then
    frames = list(range(scene.frame_start, scene.frame_end + 1, step)) if animation else [scene.frame_current]
    client = jobs.ensure_backend(context)
    source = render_source(obj, client.local_workspace, client.cache_dir)
    result = jobs.run_job_blocking(context, "render_splats", render_params(scene, obj, frames, source))
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
