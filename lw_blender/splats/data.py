"""Gaussians as arrays, and the one way arrays cross into Blender attributes (no per-point Python).

``DecodedGaussians`` holds the decoded folder of ARCHITECTURE.md (what the backend's ``import_gaussians`` job
writes and ``export_gaussians`` reads), all float32 C-contiguous:

    position (N, 3)  world metres, Blender Z-up        opacity (N,)     0..1 (sigmoid of the PLY logit)
    scale    (N, 3)  linear sigmas (exp of log-scale)  sh      (N, K, 3) raw SH, sh[:, 0] the DC term
    rotation (N, 4)  unit quaternion (w, x, y, z)      color   (N, 3)   0..1 DC colour (display only, from sh)

Arrays cross into Blender only through ``attributes[name].data.foreach_set`` / ``foreach_get`` with flat
C-contiguous float32 buffers (``write_attribute``, ``read_attribute``); this works the same on a mesh (the quad
display of Blender 4.2-5.2) and on a point cloud (Blender 5.3's native splats). A carrier object records where
its Gaussians came from in the custom properties ``lw_source`` and ``lw_sh_degree``.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sh import dc_to_rgb

SOURCE_PROPERTY = "lw_source"
UNIT_TOLERANCE = 1e-6  # |q|^2 - 1 within this: q is kept as it is by unit_quaternions
DEGREE_PROPERTY = "lw_sh_degree"


class GaussianDataError(Exception):
    """A decoded folder, a carrier object or a sequence is missing data or has inconsistent shapes."""


@dataclass(frozen=True)
class StoredValues:
    """A PLY file's own values of the three activated channels, kept so an export can write them back bit for bit
    (``ply.encode``): opacity_logit (N,), log_scale (N, 3), quat (N, 4) as stored (not normalised)."""

    opacity_logit: np.ndarray
    log_scale: np.ndarray
    quat: np.ndarray


@dataclass(frozen=True)
class DecodedGaussians:
    """Decoded arrays of ARCHITECTURE.md, all float32 C-contiguous.

    position (N, 3), scale (N, 3), rotation (N, 4) wxyz, opacity (N,), sh (N, K, 3) (``sh[:, k]`` may be a view of
    a (K, N, 3) array: each coefficient then is one contiguous block, ready for ``foreach_set``); ``stored``: the
    file values behind them when they came from a PLY (or a carrier that kept them), else None.
    """

    position: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    opacity: np.ndarray
    sh: np.ndarray
    source: str = ""
    sequence: str | None = None
    stored: StoredValues | None = None

    @property
    def count(self) -> int:
        return int(self.position.shape[0])

    @property
    def color(self) -> np.ndarray:
        """(N, 3) 0..1 DC colour clamp(C0 sh[:, 0] + 0.5, 0, 1) (display only)."""
        return dc_to_rgb(self.sh[:, 0])

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


def unit_quaternions(quats: np.ndarray) -> np.ndarray:
    """Unit quaternions (N, 4) float32: q (1 / |q|), q itself when already unit (|q|^2 - 1 within
    UNIT_TOLERANCE), the identity for q = 0."""
    q = np.asarray(quats, np.float32)
    norm2 = np.einsum("nc,nc->n", q, q)
    zero = norm2 == 0
    inverse = np.float32(1) / np.sqrt(np.where(zero, np.float32(1), norm2))
    inverse[np.abs(norm2 - np.float32(1)) <= UNIT_TOLERANCE] = 1.0  # q * 1 == q exactly
    out = q * inverse[:, None]
    out[zero] = (1.0, 0.0, 0.0, 0.0)
    return out


def point_count(data) -> int:
    """Points of a carrier's data: vertices of a mesh, points of a point cloud."""
    return len(data.points) if hasattr(data, "points") else len(data.vertices)


def write_attribute(data, name: str, kind: str, key: str, values: np.ndarray) -> None:
    """foreach_set a float32 array into the POINT attribute ``name`` of type ``kind`` (created when missing).

    ``key`` is the foreach key of that type: "vector" (FLOAT_VECTOR, FLOAT4), "value" (FLOAT, QUATERNION),
    "color" (FLOAT_COLOR)."""
    attr = data.attributes.get(name)
    if attr is None:
        attr = data.attributes.new(name, kind, "POINT")
    attr.data.foreach_set(key, np.ascontiguousarray(values, dtype=np.float32).reshape(-1))


def read_attribute(data, name: str, width: int, key: str) -> np.ndarray:
    """The POINT attribute ``name`` as float32 (N, width), or (N,) when width is 1."""
    attr = data.attributes.get(name)
    if attr is None:
        raise GaussianDataError(f"{data.name!r} has no attribute {name!r}; is it a Gaussian splat object?")
    out = np.empty(point_count(data) * width, dtype=np.float32)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


# The PLY values a carrier keeps beside its decoded attributes (``StoredValues``), on either display:
# (attribute, Blender type, foreach key, values per Gaussian, StoredValues field)
STORED_ATTRIBUTES = (("lw_ply_opacity", "FLOAT", "value", 1, "opacity_logit"),
                     ("lw_ply_scale", "FLOAT_VECTOR", "vector", 3, "log_scale"),
                     ("lw_ply_rotation", "QUATERNION", "value", 4, "quat"))


def write_stored(data, stored: StoredValues | None) -> None:
    """Keep a PLY's own values on the carrier data (nothing when there are none)."""
    if stored is not None:
        for name, kind, key, _, field in STORED_ATTRIBUTES:
            write_attribute(data, name, kind, key, getattr(stored, field))


def read_stored(data) -> StoredValues | None:
    """The PLY values kept on the carrier data, or None when it has none."""
    if any(data.attributes.get(name) is None for name, *_ in STORED_ATTRIBUTES):
        return None
    return StoredValues(**{field: read_attribute(data, name, width, key)
                           for name, _, key, width, field in STORED_ATTRIBUTES})


def is_carrier(obj) -> bool:
    """A Gaussian splat object our operators accept: a LivingWorld carrier (a mesh or point cloud that records
    where its Gaussians came from), or any native splat point cloud (one Blender's own PLY, SPZ, USD or glTF
    importer made, Blender 5.3+)."""
    if obj is None or obj.type not in ("MESH", "POINTCLOUD"):
        return False
    return SOURCE_PROPERTY in obj or (obj.type == "POINTCLOUD" and getattr(obj.data, "type", "") == "GAUSSIAN_SPLAT")
