"""Carrier objects: decoded Gaussians -> one object in the scene with its splat display, and back out.

``place`` puts Gaussians on a carrier object (a new one, or the world object refilled in place) in the display
of this Blender (``display``: native splat point clouds from 5.3, quads before) and gives it its selection,
sequence and scene settings. ``import_gaussians`` reads a 3DGS PLY in the add-on (``ply``: fast, exact, no
backend needed) or runs the backend's ``import_gaussians`` job for a ``.lw4d`` sequence (every frame checked);
``export_gaussians`` writes any carrier, a splat object made by Blender's own importers included, to an INRIA
PLY (``ply.write_ply``: a PLY import round-trips bit for bit).
"""

import json
import os
from pathlib import Path, PurePosixPath

import bpy

from ..connection import jobs
from . import display, playback, ply
from .data import DEGREE_PROPERTY, SOURCE_PROPERTY, DecodedGaussians, GaussianDataError, is_carrier, read_decoded


def use_standard_view(scene) -> None:
    """The Standard view transform and no look: a render shows the splats' stored (3DGS, sRGB) colours."""
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

    When the folder's manifest names a ``.lw4d`` sequence, it is attached for playback and the current frame is
    shown.
    """
    gaussians = read_decoded(folder)
    return place(context, None, name, gaussians, gaussians.sequence)


def place(context, obj, name: str, gaussians: DecodedGaussians, sequence: str | None = None, collection=None):
    """Show ``gaussians`` (and the local ``.lw4d`` ``sequence``) on ``obj``, or on a new object ``name`` linked
    to ``collection`` (default: the active one) when ``obj`` is None; returns the object.

    An existing object gets new data (its old data is removed when nothing else uses it); one whose type does
    not fit this Blender's display (a quad world saved by 5.2, opened in 5.3) is replaced by a new object of
    the same name in the same collections. Everything that can fail on bad data (the sequence check, filling
    the new data) happens before the scene changes.
    """
    if sequence:
        playback.check_sequence(sequence, gaussians.count)
    shown = display.for_new()
    new = shown.new_data(name, gaussians)
    if obj is not None and obj.type != shown.TYPE:
        collections, parent, basis = list(obj.users_collection), obj.parent, obj.matrix_basis.copy()
        playback.drop_players()  # the removed object's player (its open sequence files); others reopen lazily
        drop_object(obj)
        obj = bpy.data.objects.new(name, new)
        obj.parent, obj.matrix_basis = parent, basis
        for owner in collections:
            owner.objects.link(obj)
    elif obj is not None:
        obj.lw_seq.path = ""
        playback.drop_players()  # the cached player of the old data (reopened lazily for other objects)
        old = obj.data
        obj.data = new
        if old.users == 0:
            remove_data(old)
            new.name = name
    else:
        obj = bpy.data.objects.new(name, new)
        (collection or context.collection).objects.link(obj)
    obj[SOURCE_PROPERTY] = gaussians.source
    obj[DEGREE_PROPERTY] = gaussians.sh_degree
    show_carrier(context, obj, sequence)
    return obj


def remove_data(data) -> None:
    """Remove a carrier's mesh or point cloud data block."""
    (bpy.data.pointclouds if data.id_type == "POINTCLOUD" else bpy.data.meshes).remove(data)


def drop_object(obj) -> None:
    """Remove ``obj`` and, when nothing else uses it, its data."""
    data = obj.data
    bpy.data.objects.remove(obj)
    if data.users == 0:
        remove_data(data)


def show_carrier(context, obj, sequence: str | None) -> None:
    """What every carrier gets once its data is filled and it is in the scene (an import, the world object): its
    display's set-up, selection, its sequence or view-dependent state, and ``prefer_standard_view``."""
    scene = context.scene
    shown = display.of(obj)
    shown.show(context, obj)
    for other in context.selected_objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    if sequence:
        playback.attach_sequence(scene, obj, sequence)
    else:
        shown.view_colors(scene, obj, force=True)
    shown.update_view(scene, obj)
    prefer_standard_view(scene)


def read(obj) -> DecodedGaussians:
    """The current Gaussians of a carrier (or of a splat object Blender's own importers made)."""
    if not is_carrier(obj):
        raise GaussianDataError(f"{getattr(obj, 'name', 'nothing')!r} is not a Gaussian splat object: import a "
                                "3DGS .ply or pick a splat object")
    return display.of(obj).read(obj)


def decoded_folder(result) -> Path:
    """The decoded folder an ``import_gaussians`` job returned, with every file of it on this machine (a remote
    backend's files are downloaded once into the cache: the arrays too, not only the manifest, and the ``.lw4d``
    sequence it plays, whose local copy its cached manifest then names)."""
    for name in result.artifacts:
        if name.endswith("manifest.json") and "decoded" in name:
            folder = name[: -len("manifest.json")]
            for other in result.artifacts:
                if other.startswith(folder):
                    result.path(other)
            local = result.path(name).parent
            if result.remote:
                _fetch_sequence(result, local)
            return local
    for name in result.artifacts:
        path = result.path(name)
        if path.is_dir() and (path / "manifest.json").is_file():
            return path
    raise GaussianDataError(f"the import job returned no decoded folder (artifacts: {list(result.artifacts)})")


def _fetch_sequence(result, decoded: Path) -> None:
    """Download the ``.lw4d`` sequence a remote backend's decoded folder names and point the cached manifest at the
    local copy (the backend's path means nothing on this machine)."""
    manifest_path = decoded / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    sequence = manifest.get("sequence")
    if not sequence or Path(sequence).is_dir() and Path(sequence).is_relative_to(result.workspace):
        return
    seq_name = PurePosixPath(sequence.replace("\\", "/")).name
    files = [n for n in result.artifacts if PurePosixPath(n).parent.name == seq_name]
    if not any(n.endswith("/manifest.json") for n in files):
        raise GaussianDataError(f"the sequence {sequence} is on the remote backend outside its workspace, where it "
                                "cannot be downloaded to play here; bake or copy it into the backend's workspace")
    local = None
    for n in files:
        local = result.path(n).parent
    manifest["sequence"] = str(local)
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, manifest_path)


def check_import_path(filepath: str) -> Path:
    """Validate a user's import path: a .ply file, a .lw4d folder or its manifest.json; returns the path to read."""
    path = Path(bpy.path.abspath(filepath))
    if path.name == "manifest.json" and path.parent.suffix == ".lw4d":
        path = path.parent
    if not path.exists():
        raise GaussianDataError(f"{path} does not exist")
    if path.suffix.lower() == ".ply" and path.is_file():
        return path
    if path.suffix == ".lw4d" and path.is_dir():
        if not (path / "manifest.json").is_file():
            raise GaussianDataError(f"{path} has no manifest.json; it is not a .lw4d sequence")
        return path
    raise GaussianDataError(f"{path} is neither a .ply file nor a .lw4d sequence folder")


def import_gaussians(context, filepath: str):
    """Import a 3DGS PLY (read here, at once) or a ``.lw4d`` sequence (the backend's ``import_gaussians`` job).

    Returns the new carrier object; for a sequence with a UI, None at once, and the object appears when the job
    ends (a failure is shown in the sidebar through ``wm.lw_runtime.last_error``).
    """
    path = check_import_path(filepath)
    name = path.stem or "Gaussians"
    if path.suffix.lower() == ".ply":
        return place(context, None, name, ply.read_ply(path))
    params = {"path": str(path)}
    if bpy.app.background:
        result = jobs.run_job_blocking(context, "import_gaussians", params)
        return load_decoded(context, decoded_folder(result), name)

    def finished(result):
        if result.ok:
            load_decoded(bpy.context, decoded_folder(result), name)

    jobs.submit_job(context, "import_gaussians", params, finished)
    return None


def export_gaussians(obj, filepath: str, overwrite: bool = False) -> Path:
    """Write the carrier's current frame (or any splat object's Gaussians) to a 3DGS PLY; returns its path.

    The output path is checked before anything is read: an existing file is refused unless ``overwrite``, and
    then replaced only when the new one is complete.
    """
    out = ply.check_output(bpy.path.abspath(filepath), overwrite)
    return ply.write_ply(out, read(obj), overwrite)
