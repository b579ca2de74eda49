"""Carrier objects: decoded Gaussians -> one object in the scene with its splat display, and back out.

``load_decoded`` makes a carrier from a decoded folder (an import), ``show_carrier`` gives any filled carrier
(an import, the world object) its display, selection, sequence and scene settings; ``import_gaussians`` and
``export_gaussians`` run the backend's io jobs; ``render_splats`` renders through the backend rasterizer.
The data layout and display are the quads' (``quads.mesh``, ``quads.nodes``, ``quads.material``).
"""

import os
import tempfile
from pathlib import Path

import bpy

from ..connection import jobs
from . import playback
from .data import (
    DEGREE_PROPERTY,
    SOURCE_PROPERTY,
    DecodedGaussians,
    GaussianDataError,
    is_carrier,
    read_decoded,
    write_decoded,
)
from .quads import material, nodes, sorting
from .quads.mesh import fill_mesh, read_carrier

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
    """The Standard view transform and no look: a render shows the splats' stored colours (quads.material)."""
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

    The object gets the splat display. When the folder's manifest names a ``.lw4d`` sequence, it is attached
    for playback and the current frame is shown.
    """
    gaussians = read_decoded(folder)
    return place(context, None, name, gaussians, gaussians.sequence)


def _new_data(name: str, gaussians: DecodedGaussians):
    """New carrier data (not yet used by an object) holding ``gaussians``; nothing is left behind on failure."""
    mesh = bpy.data.meshes.new(name)
    try:
        fill_mesh(mesh, gaussians)
    except BaseException:
        bpy.data.meshes.remove(mesh)
        raise
    mesh.materials.append(bpy.data.materials.get(material.MATERIAL_NAME) or material.build_material())
    return mesh


def place(context, obj, name: str, gaussians: DecodedGaussians, sequence: str | None = None, collection=None):
    """Show ``gaussians`` (and the local ``.lw4d`` ``sequence``) on ``obj``, or on a new object ``name`` linked
    to ``collection`` (default: the active one) when ``obj`` is None; returns the object.

    An existing object gets new data (its old data is removed when nothing else uses it); one whose type no
    longer fits the display is replaced by a new object of the same name in the same collections. Everything
    that can fail on bad data (the sequence check, filling the new data) happens before the scene changes.
    """
    if sequence:
        playback.check_sequence(sequence, gaussians.count)
    new = _new_data(name, gaussians)
    if obj is not None and obj.type != new.id_type:
        collections, matrix = list(obj.users_collection), obj.matrix_world.copy()
        drop_object(obj)
        obj = bpy.data.objects.new(name, new)
        obj.matrix_world = matrix
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
    show_carrier(context, obj, sequence, gaussians.sh_degree)
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


def show_carrier(context, obj, sequence: str | None, sh_degree: int) -> None:
    """What every carrier gets once its data is filled and it is in the scene (an import, the world object):
    the splat modifier, selection, its sequence or view-dependent colours, draw order and view-facing quads,
    and the splat scene settings (``prefer_standard_view``, ``raise_transparent_bounces``)."""
    scene = context.scene
    nodes.add_modifier(obj, obj.data.materials[0])
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
    path = Path(bpy.path.abspath(filepath))
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


def import_gaussians(context, filepath: str):
    """Import a 3DGS PLY or a ``.lw4d`` sequence through the backend's ``import_gaussians`` job.

    Background mode: blocks and returns the new carrier object. With a UI: returns None at once; the object
    appears when the job ends (a failure is shown in the sidebar through ``wm.lw_runtime.last_error``).
    """
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
    if not is_carrier(obj):
        raise GaussianDataError("select a LivingWorld Gaussians object to export")
    out = Path(bpy.path.abspath(filepath))
    if out.suffix.lower() != ".ply":
        out = out.with_suffix(".ply")
    folder = Path(tempfile.mkdtemp(prefix="lw_export_")) / "decoded"
    write_decoded(read_carrier(obj), folder)
    jobs.run_job_blocking(context, "export_gaussians", {"decoded": str(folder), "path": str(out)})
    return out
