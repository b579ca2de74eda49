"""Blender 5.3+ native Gaussian splats: the carrier is a point cloud that Blender's own splat renderer draws.

A ``POINTCLOUD`` object whose ``PointCloud.type`` is ``'GAUSSIAN_SPLAT'``, one point per Gaussian, with the
attributes Blender's PLY importer writes (and EEVEE, Cycles and Workbench read):

    position        FLOAT_VECTOR  (N, 3)  world metres, Blender Z-up
    radiance:base   FLOAT4        (N, 4)  SH DC coefficient (x, y, z) and opacity after the sigmoid (w)
    scale           FLOAT_VECTOR  (N, 3)  linear sigmas
    rotation        QUATERNION    (N, 4)  unit (w, x, y, z)
    radiance:sh_k   FLOAT_VECTOR  (N, 3)  SH coefficient k + 1 (k = 0 .. (d+1)^2 - 2): sh_k = (f_rest[k],
                                          f_rest[K-1+k], f_rest[2(K-1)+k]) of the PLY, K = (d+1)^2

Blender evaluates the SH for the view, sorts and blends the splats itself: nothing here depends on the view
(no quads, no draw order, no per-view ellipses, no material; a material the user adds overrides the colour and
keeps the Gaussian opacity). Playback writes position, rotation, scale and ``radiance:base`` (opacity in w, the
colour channel as the DC coefficient in xyz) with ``foreach_set`` and tags the point cloud.
"""

import bpy
import numpy as np

from .data import (
    SOURCE_PROPERTY,
    DecodedGaussians,
    point_count,
    read_attribute,
    read_stored,
    unit_quaternions,
    write_attribute,
    write_stored,
)

TYPE = "POINTCLOUD"
SPLAT_TYPE = "GAUSSIAN_SPLAT"
VERSION = (5, 3, 0)  # the first Blender with native splats
BASE = "radiance:base"
DIRECT = ("position", "rotation", "scale")  # playback channels written as they come (no full array needed)
UNIT_ROTATIONS = False  # Blender's splat renderer normalises quaternions itself (same picture for q and q / 2)
SH_PREFIX = "radiance:sh_"
# playback channel -> (attribute, Blender type, foreach key, values per Gaussian)
ATTRIBUTES = {"position": ("position", "FLOAT_VECTOR", "vector", 3), "scale": ("scale", "FLOAT_VECTOR", "vector", 3),
              "rotation": ("rotation", "QUATERNION", "value", 4), "base": (BASE, "FLOAT4", "vector", 4)}


def sh_attribute(k: int) -> str:
    """The attribute of SH coefficient k >= 1 (k = 0, the DC term, is ``radiance:base`` xyz)."""
    return f"{SH_PREFIX}{k - 1}"


def _write(data, channel: str, values: np.ndarray) -> None:
    name, kind, key, _ = ATTRIBUTES[channel]
    write_attribute(data, name, kind, key, values)


def _read(data, channel: str) -> np.ndarray:
    name, _, key, width = ATTRIBUTES[channel]
    return read_attribute(data, name, width, key)


def new_data(name: str, gaussians: DecodedGaussians):
    """A new splat point cloud holding ``gaussians`` (and their PLY values when known); removed again if filling
    it fails."""
    cloud = bpy.data.pointclouds.new(name)
    try:
        cloud.resize(gaussians.count)
        _write(cloud, "position", gaussians.position)
        base = np.empty((gaussians.count, 4), np.float32)
        base[:, :3] = gaussians.sh[:, 0]
        base[:, 3] = gaussians.opacity
        _write(cloud, "base", base)
        _write(cloud, "scale", gaussians.scale)
        _write(cloud, "rotation", gaussians.rotation)
        for k in range(1, gaussians.sh.shape[1]):
            write_attribute(cloud, sh_attribute(k), "FLOAT_VECTOR", "vector", gaussians.sh[:, k])
        write_stored(cloud, gaussians.stored)
        cloud.type = SPLAT_TYPE
    except BaseException:
        bpy.data.pointclouds.remove(cloud)
        raise
    return cloud


def sh_degree(obj) -> int:
    """SH degree of a splat object, from its ``radiance:sh_*`` attributes (also for clouds Blender made)."""
    rest = sum(1 for a in obj.data.attributes if a.name.startswith(SH_PREFIX))
    return {0: 0, 3: 1, 8: 2, 15: 3}.get(rest, 0)


def read(obj) -> DecodedGaussians:
    """The splat object's current Gaussians (the shown frame of a sequence) as decoded arrays."""
    data = obj.data
    base = _read(data, "base")
    k = (sh_degree(obj) + 1) ** 2
    coefficients = np.empty((point_count(data), k, 3), np.float32)
    coefficients[:, 0] = base[:, :3]
    for j in range(1, k):
        coefficients[:, j] = read_attribute(data, sh_attribute(j), 3, "vector")
    return DecodedGaussians(position=_read(data, "position"), scale=_read(data, "scale"),
                            rotation=unit_quaternions(_read(data, "rotation")),
                            opacity=np.ascontiguousarray(base[:, 3]),
                            sh=coefficients,
                            source=str(obj.get(SOURCE_PROPERTY, "")), stored=read_stored(data))


def channel_arrays(obj, names) -> dict[str, np.ndarray]:
    """Writable full arrays of the playback channels ``names`` (the cloud's current values): position (N, 3),
    rotation (N, 4), scale (N, 3); opacity (N,) and color (N, 3, the SH DC) are views into one ``radiance:base``
    array (N, 4), kept under "base"."""
    data = obj.data
    out = {name: _read(data, name) for name in names if name in ("position", "rotation", "scale")}
    if "opacity" in names or "color" in names:
        base = _read(data, "base")
        out["base"], out["opacity"], out["color"] = base, base[:, 3], base[:, :3]
    return out


def write_channels(obj, arrays: dict[str, np.ndarray], names) -> None:
    """Write the channels ``names`` from ``channel_arrays``' arrays and tag the cloud for re-evaluation."""
    data = obj.data
    for name in ("position", "rotation", "scale"):
        if name in names:
            _write(data, name, arrays[name])
    if "opacity" in names or "color" in names:
        _write(data, "base", arrays["base"])
    data.update_tag()


def show(context, obj) -> None:
    """Nothing to set up: Blender draws the splat type itself."""


def view_colors(scene, obj, time=None, force: bool = False) -> None:
    """Nothing to do: Blender evaluates the SH for every view."""


def update_view(scene, obj, force: bool = False, rendering: bool = False, moving: bool = False) -> bool:
    """Nothing depends on the view: Blender orders and blends the splats itself."""
    return False


def forget() -> None:
    """Nothing is kept per view."""
