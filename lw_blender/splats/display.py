"""Which display a carrier uses: Blender's native splats from 5.3 on, the quads before (chosen by version).

Both are modules with the same functions (``splats.native``, ``splats.quads.display``):

    TYPE                                   Object.type of their carriers ("POINTCLOUD" | "MESH")
    new_data(name, gaussians) -> ID        a filled data block (removed again when filling fails)
    read(obj) -> DecodedGaussians          the carrier's current Gaussians
    sh_degree(obj) -> int
    DIRECT                                 playback channels its attributes hold as they are
    UNIT_ROTATIONS                         whether blended rotations must be renormalised for it
    channel_arrays(obj, names) -> dict     writable full arrays of playback channels (color as the SH DC)
    write_channels(obj, arrays, names)     foreach_set them (DIRECT ones may be any array) and tag the data
    show(context, obj)                     what the display needs on a new carrier (the quads' modifier)
    view_colors(scene, obj, time, force)   view-dependent colour kept in Python (quads, SH degree > 0)
    update_view(scene, obj, force, rendering) -> bool   draw order and view-facing quads (quads)
    forget()                               drop per-view caches (a file was loaded)

``for_new()`` is the display new carriers get in this Blender; ``of(obj)`` the one an existing carrier has (a
quad carrier saved by Blender 5.2 keeps its quads when the file is opened in 5.3).
"""

import bpy

from . import native
from .quads import display as quads

DISPLAYS = (native, quads)


def native_available() -> bool:
    """Whether this Blender draws native Gaussian splats (5.3 and later)."""
    return bpy.app.version >= native.VERSION


def for_new():
    """The display of new carriers: native splats from Blender 5.3 on, quads before."""
    return native if native_available() else quads


def of(obj):
    """The display of the existing carrier ``obj`` (by its object type)."""
    return native if obj.type == native.TYPE else quads
