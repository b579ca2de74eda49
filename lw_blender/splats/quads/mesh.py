"""The quad display's carrier data (Blender 4.2-5.2): a vertex-only mesh, one vertex per Gaussian.

Point attributes, named like Blender 5.3's native splats where they mean the same:

    position (native)  (N, 3)  world metres, Blender Z-up
    scale     FLOAT_VECTOR  (N, 3)  linear sigmas (exp of the PLY log-scale)
    rotation  QUATERNION    (N, 4)  unit (w, x, y, z)
    opacity   FLOAT         (N,)    0..1 (sigmoid of the PLY logit)
    sh_k      FLOAT_VECTOR  (N, 3)  raw SH coefficient k = 0..K-1 (sh_0 is the DC term), K = (degree+1)^2
    gs_color  FLOAT_COLOR   (N, 4)  colour the material shows: the DC colour, or SH evaluated for the camera

and, after a PLY import, the file's own values (``data.STORED_ATTRIBUTES``) for an exact export.
"""

import numpy as np

from ..data import (
    DEGREE_PROPERTY,
    SOURCE_PROPERTY,
    DecodedGaussians,
    read_attribute,
    read_stored,
    write_attribute,
    write_stored,
)
from . import material

# (attribute name, Blender type, foreach key, values per Gaussian)
CORE_ATTRIBUTES = (
    ("position", "FLOAT_VECTOR", "vector", 3),
    ("scale", "FLOAT_VECTOR", "vector", 3),
    ("rotation", "QUATERNION", "value", 4),
    ("opacity", "FLOAT", "value", 1),
)
KEYS = {name: (kind, key, width) for name, kind, key, width in CORE_ATTRIBUTES}
KEYS[material.COLOR_ATTRIBUTE] = ("FLOAT_COLOR", "color", 4)


def set_core(mesh, name: str, values: np.ndarray) -> None:
    """Write one of the CORE_ATTRIBUTES (or the colour) of ``mesh``."""
    kind, key, _ = KEYS[name]
    write_attribute(mesh, name, kind, key, values)


def get_core(mesh, name: str) -> np.ndarray:
    """Read one of the CORE_ATTRIBUTES of ``mesh``: (N, C) float32, (N,) for opacity."""
    _, key, width = KEYS[name]
    return read_attribute(mesh, name, width, key)


def rgba(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 4) float32 with alpha 1, the layout of a FLOAT_COLOR attribute."""
    out = np.ones((rgb.shape[0], 4), dtype=np.float32)
    out[:, :3] = rgb
    return out


def set_color(mesh, rgb: np.ndarray):
    """Write the displayed colour (N, 3) 0..1."""
    set_core(mesh, material.COLOR_ATTRIBUTE, rgba(rgb))


def read_sh(mesh, degree: int) -> np.ndarray:
    """The raw SH coefficients (N, (degree+1)^2, 3) float32."""
    return np.stack([read_attribute(mesh, material.sh_attribute(k), 3, "vector") for k in range((degree + 1) ** 2)],
                    axis=1)


def fill_mesh(mesh, gaussians: DecodedGaussians):
    """Make ``mesh`` a carrier of ``gaussians`` (it must be empty)."""
    mesh.vertices.add(gaussians.count)
    for name, kind, key, _ in CORE_ATTRIBUTES:
        write_attribute(mesh, name, kind, key, getattr(gaussians, name))
    for k in range(gaussians.sh.shape[1]):
        write_attribute(mesh, material.sh_attribute(k), "FLOAT_VECTOR", "vector", gaussians.sh[:, k])
    set_color(mesh, gaussians.color)
    write_stored(mesh, gaussians.stored)


def read_carrier(obj) -> DecodedGaussians:
    """The carrier's current attributes (the current frame of a sequence) as decoded arrays."""
    mesh = obj.data
    arrays = {name: get_core(mesh, name) for name, _, _, _ in CORE_ATTRIBUTES}
    coefficients = read_sh(mesh, int(obj.get(DEGREE_PROPERTY, 0)))
    return DecodedGaussians(sh=np.ascontiguousarray(coefficients),
                            source=str(obj.get(SOURCE_PROPERTY, "")), stored=read_stored(mesh), **arrays)
