"""The quad display as a carrier layout (Blender 4.2-5.2): the same functions as ``splats.native``.

A vertex-only mesh (``mesh``) shown by the "LW Splats" Geometry Nodes modifier (``nodes``) with the splat
material (``material``). What the native splats get from Blender is done here in Python: the colour of SH
degree > 0 is evaluated in numpy for the scene camera (``view_colors``), and the back-to-front order and
view-facing ellipses are kept for the current view (``update_view`` -> ``sorting``).
"""

import bpy
import numpy as np

from .. import sh
from ..data import DEGREE_PROPERTY, DecodedGaussians, point_count, read_attribute, write_attribute
from . import material, nodes, sorting
from .mesh import fill_mesh, get_core, read_carrier, read_sh, set_color, set_core

TYPE = "MESH"
DIRECT = ("position", "rotation", "scale", "opacity")  # playback channels written as they come
UNIT_ROTATIONS = True  # blended rotations are renormalised for the quads' instance rotation
# Cycles stops a ray after this many transparent surfaces; overlapping quad layers (a world's sky from several
# views, a trained cloud) need far more than Blender's default 8, or they render with black holes. (Native splats
# do not count as transparent bounces.)
TRANSPARENT_BOUNCES = 128
_VIEW: dict[int, tuple] = {}  # session_uid -> (camera location, sequence time) of the colours last written


def new_data(name: str, gaussians: DecodedGaussians):
    """A new carrier mesh holding ``gaussians`` with the splat material; removed again if filling it fails."""
    mesh = bpy.data.meshes.new(name)
    try:
        fill_mesh(mesh, gaussians)
    except BaseException:
        bpy.data.meshes.remove(mesh)
        raise
    mesh.materials.append(bpy.data.materials.get(material.MATERIAL_NAME) or material.build_material())
    return mesh


def sh_degree(obj) -> int:
    return int(obj.get(DEGREE_PROPERTY, 0))


def read(obj) -> DecodedGaussians:
    """The carrier's current Gaussians (the shown frame of a sequence) as decoded arrays."""
    return read_carrier(obj)


def channel_arrays(obj, names) -> dict[str, np.ndarray]:
    """Writable full arrays of the playback channels ``names``: the mesh's current position (N, 3), opacity (N,),
    rotation (N, 4), scale (N, 3); color (N, 3) is the SH DC coefficient ``sh_0``."""
    mesh = obj.data
    return {name: read_attribute(mesh, material.sh_attribute(0), 3, "vector") if name == "color"
            else get_core(mesh, name) for name in names}


def write_channels(obj, arrays: dict[str, np.ndarray], names) -> None:
    """Write the channels ``names``; the DC of ``color`` also becomes the shown colour when the SH degree is 0."""
    mesh = obj.data
    for name in names:
        if name == "color":
            write_attribute(mesh, material.sh_attribute(0), "FLOAT_VECTOR", "vector", arrays[name])
            if sh_degree(obj) == 0:
                set_color(mesh, sh.dc_to_rgb(arrays[name]))
        else:
            set_core(mesh, name, arrays[name])
    mesh.update()


def show(context, obj) -> None:
    """The "LW Splats" modifier with the carrier's material, and enough Cycles transparent bounces for stacked
    quads (``raise_transparent_bounces``)."""
    nodes.add_modifier(obj, obj.data.materials[0])
    raise_transparent_bounces(context.scene)


def raise_transparent_bounces(scene) -> bool:
    """Raise Cycles' transparent bounce limit of ``scene`` to TRANSPARENT_BOUNCES (never lowers it); True when
    it was raised."""
    cycles = getattr(scene, "cycles", None)
    if cycles is None or cycles.transparent_max_bounces >= TRANSPARENT_BOUNCES:
        return False
    cycles.transparent_max_bounces = TRANSPARENT_BOUNCES
    return True


def view_colors(scene, obj, time=None, force: bool = False) -> None:
    """Evaluate SH (degree > 0) for the scene camera and write the shown colour; no-op for degree 0, and when
    neither the camera location nor the sequence ``time`` changed since the last call (unless ``force``)."""
    degree = sh_degree(obj)
    camera = scene.camera
    if degree == 0 or camera is None:
        return
    key = (tuple(camera.matrix_world.translation), time)
    if not force and _VIEW.get(obj.session_uid) == key:
        return
    mesh = obj.data
    eye = np.array(camera.matrix_world.translation, dtype=np.float32)
    set_color(mesh, sh.sh_to_rgb(read_sh(mesh, degree), get_core(mesh, "position"), eye))
    mesh.update()
    _VIEW[obj.session_uid] = key


def update_view(scene, obj, force: bool = False, rendering: bool = False, moving: bool = False) -> bool:
    """Draw order and view-facing quads for the current view (``sorting.update_view``). ``moving``: a new frame
    of a playing sequence: recomputed whatever the view while rendering, and in the viewport for carriers of up
    to ``sorting.PLAYBACK_FACING_MAX`` Gaussians (larger ones keep those of the last view change)."""
    if moving:
        force = force or rendering or point_count(obj.data) <= sorting.PLAYBACK_FACING_MAX
    return sorting.update_view(scene, obj, force=force, rendering=rendering)


def forget() -> None:
    """Drop what was computed for earlier views (after loading a file)."""
    _VIEW.clear()
    sorting.forget()
