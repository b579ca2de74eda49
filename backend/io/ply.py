"""The INRIA 3DGS binary PLY: ``read_ply`` / ``write_ply`` for SH degree 0..3.

One element ``vertex`` with N rows and the float properties

    x y z  nx ny nz  f_dc_0..2  f_rest_0..f_rest_{3(K-1)-1}  opacity  scale_0..2  rot_0..3

with K = (degree + 1)^2. ``opacity`` is the logit, ``scale_*`` the log of the standard deviation, ``rot_*``
the quaternion (w, x, y, z) and the SH coefficients are channel-major as the INRIA code writes them:

    f_dc_c    = sh[:, 0, c]
    f_rest_i  = sh[:, 1 + i % (K - 1), i // (K - 1)]      for i in range(3 (K - 1))

The header is parsed by ``plyfile``; the body is read with one ``np.fromfile`` into the structured numpy dtype
the header describes (measured faster than ``np.memmap``, whose page faults dominate: bench/io_ply.py), and
every group of columns (means, SH, ...) is copied out in one ``np.take``. Files other tools write
are accepted: any property order, extra properties (kept in ``Gaussians.extra`` and written back), no
normals, big- or little-endian, double properties. Normals are not part of the Gaussian model; they are kept
in ``extra`` only when some are non-zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyListProperty, PlyParseError

from ..errors import InvalidInput, NotFound
from ..gaussians import Gaussians
from .atomic import atomic_file
from .outputs import OutputKind

POSITION = ("x", "y", "z")
NORMALS = ("nx", "ny", "nz")
SH_DC = ("f_dc_0", "f_dc_1", "f_dc_2")
OPACITY = ("opacity",)
SCALE = ("scale_0", "scale_1", "scale_2")
ROTATION = ("rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = POSITION + SH_DC + OPACITY + SCALE + ROTATION
_REST_COUNTS = {0: 0, 9: 1, 24: 2, 45: 3}  # number of f_rest_* properties -> SH degree
WRITER_COMMENT = "written by LivingWorld (INRIA 3DGS layout)"
MAX_LOG_SCALE = 88.0  # exp(88) ~ 1.7e38 is near the float32 maximum (3.4e38); a larger log-scale decodes to inf


def is_livingworld_ply(path: Path) -> bool:
    """``path`` is a PLY file ``write_ply`` made: its header carries ``WRITER_COMMENT``."""
    if not path.is_file() or path.is_symlink():
        return False
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    return head.startswith(b"ply") and end > 0 and f"comment {WRITER_COMMENT}".encode() in head[:end]


PLY = OutputKind("a 3DGS PLY", is_livingworld_ply)


def sh_rest_names(k: int) -> list[str]:
    """Names of the ``f_rest_*`` properties for K SH coefficients per channel."""
    return [f"f_rest_{i}" for i in range(3 * (k - 1))]


def sh_property_index(k: int) -> np.ndarray:
    """(K, 3) int array: position of ``sh[:, j, c]`` in the list ``SH_DC + sh_rest_names(K)``.

    Inverse of ``f_rest_i = sh[:, 1 + i % (K-1), i // (K-1)]``: ``sh[:, j, c]`` (j >= 1) is
    ``f_rest_{c (K-1) + j - 1}``, which sits at list position ``3 + c (K-1) + j - 1``.
    """
    idx = np.empty((k, 3), dtype=np.int64)
    idx[0] = [0, 1, 2]
    j, c = np.meshgrid(np.arange(1, k), np.arange(3), indexing="ij")
    idx[1:] = 3 + c * (k - 1) + j - 1
    return idx


class _VertexTable:
    """The ``vertex`` rows and a fast way to pull float32 columns out of them."""

    def __init__(self, data: np.ndarray):
        self.data = data  # (N,) structured array
        self.names = list(data.dtype.names)
        self._col = {name: i for i, name in enumerate(self.names)}
        field_dtypes = {data.dtype.fields[n][0] for n in self.names}
        uniform = len(field_dtypes) == 1 and next(iter(field_dtypes)).itemsize * len(self.names) == data.dtype.itemsize
        # All properties of one type (the usual case): view the rows as an (N, P) matrix and gather columns.
        self.matrix = data.view(next(iter(field_dtypes))).reshape(len(data), len(self.names)) if uniform else None

    def columns(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """(N, len(names)) float32, C-contiguous copy of the named properties."""
        if self.matrix is not None:
            picked = np.take(self.matrix, [self._col[n] for n in names], axis=1)  # faster than fancy indexing
            return picked.astype(np.float32, copy=False)
        out = np.empty((len(self.data), len(names)), dtype=np.float32)
        for i, n in enumerate(names):
            out[:, i] = self.data[n]
        return out


def _check_finite(path: Path, names: list[str] | tuple[str, ...], values: np.ndarray) -> None:
    """values: (N, len(names)). Raise InvalidInput naming every property that holds NaN or inf."""
    finite = np.isfinite(values)
    if finite.all():
        return
    bad = (~finite).sum(axis=0)
    listed = ", ".join(f"{n} ({int(c)} vertices)" for n, c in zip(names, bad) if c)
    raise InvalidInput(f"{path}: NaN or infinite values in {listed}; the file is corrupt or was saved by a "
                       "diverged optimisation")


def _read_vertex_rows(path: Path) -> np.ndarray:
    """Parse the header with plyfile and read the ``vertex`` element of a binary PLY as a structured array."""
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    with open(path, "rb") as f:
        if f.read(4).rstrip() != b"ply":
            raise InvalidInput(f"{path} is not a PLY file (it does not start with 'ply')")
        f.seek(0)
        try:
            header = PlyData._parse_header(f)  # plyfile's header parser; the body is read below
            for element in header.elements:
                element.dtype(header.byte_order)  # duplicate property names fail here
        except (PlyParseError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{path}: bad PLY header: {str(exc).splitlines()[0][:300]}") from None
        offset = f.tell()
    if header.text:
        raise InvalidInput(f"{path}: ASCII PLY is not supported; save as binary (binary_little_endian)")
    names = [e.name for e in header.elements]
    if "vertex" not in names:
        raise InvalidInput(f"{path}: no 'vertex' element (elements: {', '.join(names) or 'none'})")
    for element in header.elements:
        lists = [p.name for p in element.properties if isinstance(p, PlyListProperty)]
        if element.name == "vertex" and lists:
            raise InvalidInput(f"{path}: list properties in 'vertex' are not 3DGS properties: {', '.join(lists)}")
        if element.name == "vertex":
            vertex = element
            break
        if lists:
            raise InvalidInput(f"{path}: element '{element.name}' with list properties comes before 'vertex'; "
                               "not a 3DGS PLY")
        offset += element.count * element.dtype(header.byte_order).itemsize
    if vertex.count <= 0:
        raise InvalidInput(f"{path}: the PLY header says {vertex.count} vertices; a 3DGS PLY has at least one")
    dtype = vertex.dtype(header.byte_order)
    need = vertex.count * dtype.itemsize
    have = os.path.getsize(path) - offset
    if have < need:
        raise InvalidInput(f"{path}: truncated: the header promises {vertex.count} vertices x {dtype.itemsize} bytes "
                           f"= {need} bytes, the file has {max(have, 0)} bytes ({max(have, 0) // dtype.itemsize} "
                           "whole vertices); the download or save was cut off")
    return np.fromfile(path, dtype=dtype, count=vertex.count, offset=offset)


def read_ply(path: str | os.PathLike) -> Gaussians:
    """Read a binary 3DGS PLY into numpy ``Gaussians`` (float32, C-contiguous).

    Returns means (N,3), quats (N,4) wxyz as stored, log_scales (N,3), opacity_logits (N,), sh (N,K,3) and
    ``extra`` {name: (N,) array in its stored dtype} for every other property. Raises ``InvalidInput`` naming
    the problem for ASCII, truncated, empty, NaN/inf or property-missing files; ``NotFound`` if absent.
    """
    path = Path(path)
    rows = _read_vertex_rows(path)
    table = _VertexTable(rows)
    present = set(table.names)
    missing = [n for n in REQUIRED if n not in present]
    if missing:
        raise InvalidInput(f"{path}: not a 3DGS PLY: missing properties {', '.join(missing)}")
    rest = [n for n in table.names if n.startswith("f_rest_")]
    if len(rest) not in _REST_COUNTS or set(rest) != set(sh_rest_names(len(rest) // 3 + 1)):
        raise InvalidInput(f"{path}: {len(rest)} f_rest_* properties; expected f_rest_0.. f_rest_(R-1) with "
                           "R = 0, 9, 24 or 45 (SH degree 0..3)")
    k = (_REST_COUNTS[len(rest)] + 1) ** 2
    n = len(rows)

    groups = {"position": POSITION, "opacity": OPACITY, "scale": SCALE, "rotation": ROTATION,
              "sh": SH_DC + tuple(sh_rest_names(k))}
    values = {}
    for key, names in groups.items():
        if key == "sh":
            names = [names[i] for i in sh_property_index(k).ravel()]  # (K*3,) in sh[:, j, c] order
        values[key] = table.columns(names)
        _check_finite(path, names, values[key])
    too_big = values["scale"] > MAX_LOG_SCALE
    if too_big.any():
        listed = ", ".join(f"{nm} ({int(c)} vertices)" for nm, c in zip(SCALE, too_big.sum(axis=0)) if c)
        raise InvalidInput(f"{path}: log-scales above {MAX_LOG_SCALE:g} in {listed} decode to infinite sizes "
                           f"(exp overflows float32); the file is corrupt or was saved by a diverged optimisation")

    known = set(REQUIRED) | set(rest) | set(NORMALS)
    extra = {name: np.array(rows[name], dtype=rows.dtype.fields[name][0].newbyteorder("="))
             for name in table.names if name not in known}
    normal_names = [name for name in NORMALS if name in present]
    if normal_names:
        normals = table.columns(normal_names)
        if np.any(normals != 0):
            extra.update({name: normals[:, i].copy() for i, name in enumerate(normal_names)})

    return Gaussians(
        means=values["position"],
        quats=values["rotation"],
        log_scales=values["scale"],
        opacity_logits=values["opacity"].reshape(n),
        sh=values["sh"].reshape(n, k, 3),
        extra=extra,
    )


def gaussians_to_records(gaussians: Gaussians) -> np.ndarray:
    """(N,) little-endian structured array with the INRIA property layout (then ``extra`` properties)."""
    g = gaussians.to_numpy()
    try:
        g.validate()
    except ValueError as exc:
        raise InvalidInput(f"cannot write these Gaussians: {exc}") from None
    n, k = len(g), int(g.sh.shape[1])
    float_names = list(POSITION + NORMALS + SH_DC) + sh_rest_names(k) + list(OPACITY + SCALE + ROTATION)
    extra_names = [name for name in g.extra if name not in NORMALS]
    for name in extra_names:
        if name in float_names:
            raise InvalidInput(f"extra property {name!r} has the name of a 3DGS property")
        if np.shape(g.extra[name]) != (n,):
            raise InvalidInput(f"extra property {name!r} has shape {np.shape(g.extra[name])}, expected ({n},)")
    dtype = np.dtype([(name, "<f4") for name in float_names]
                     + [(name, np.asarray(g.extra[name]).dtype.newbyteorder("<")) for name in extra_names])
    records = np.empty(n, dtype=dtype)
    # The float block is the first len(float_names) * 4 bytes of every row: fill it as one (N, P) matrix.
    floats = np.ndarray((n, len(float_names)), dtype="<f4", buffer=records, strides=(dtype.itemsize, 4))
    r = 3 * (k - 1)
    floats[:, 0:3] = g.means
    for i, name in enumerate(NORMALS):  # INRIA writes zero normals; other tools' normals come back from extra
        floats[:, 3 + i] = g.extra.get(name, 0.0)
    floats[:, 6:9] = g.sh[:, 0]
    floats[:, 9:9 + r] = np.asarray(g.sh[:, 1:]).transpose(0, 2, 1).reshape(n, r)
    floats[:, 9 + r] = g.opacity_logits
    floats[:, 10 + r:13 + r] = g.log_scales
    floats[:, 13 + r:17 + r] = g.quats
    for name in extra_names:
        records[name] = g.extra[name]
    bad = ~np.isfinite(floats)
    if bad.any():
        counts = bad.sum(axis=0)
        listed = ", ".join(f"{nm} ({int(c)})" for nm, c in zip(float_names, counts) if c)
        raise InvalidInput(f"cannot write Gaussians with NaN or infinite values: {listed}")
    return records


def write_ply(path: str | os.PathLike, gaussians: Gaussians) -> Path:
    """Write ``gaussians`` (numpy or torch) as a binary little-endian 3DGS PLY, atomically.

    The file appears complete or not at all (temporary file in the same folder + ``os.replace``).
    """
    path = Path(path)
    records = gaussians_to_records(gaussians)
    try:
        element = PlyElement.describe(records, "vertex")
    except ValueError as exc:  # e.g. an int64 extra property: PLY has no 64-bit integers
        raise InvalidInput(f"cannot write {path}: {exc}") from None
    with atomic_file(path) as f:
        PlyData([element], byte_order="<", comments=[WRITER_COMMENT]).write(f)
    return path


def write_ply_records(path: str | os.PathLike, parts: list[np.ndarray]) -> Path:
    """Write the 3DGS PLY whose vertices are the records of ``parts`` one after the other (each made by
    ``gaussians_to_records``, one dtype), atomically, without joining them in memory: byte for byte what
    ``write_ply`` writes for the concatenated Gaussians. A world step re-writes its old Gaussians' records as
    they are and converts only the new ones."""
    path = Path(path)
    dtype = parts[0].dtype
    if any(p.dtype != dtype for p in parts):
        raise ValueError("write_ply_records: the parts' record layouts differ")
    with atomic_file(path) as f:
        f.write(ply_records_header(dtype, sum(len(p) for p in parts)))
        for p in parts:
            f.write(np.ascontiguousarray(p).data)
    return path


def ply_records_header(dtype: np.dtype, n: int) -> bytes:
    """The header ``write_ply`` gives ``n`` vertices of record layout ``dtype`` (``gaussians_to_records``); the
    records follow it as raw little-endian rows."""
    header = PlyData([PlyElement.describe(np.empty(0, dtype), "vertex")], byte_order="<",
                     comments=[WRITER_COMMENT]).header
    counted = header.replace("\nelement vertex 0\n", f"\nelement vertex {n}\n", 1)
    if counted == header and n:
        raise ValueError("write_ply_records: unexpected PLY header")
    return counted.encode("ascii") + b"\n"


def set_sh_degree(gaussians: Gaussians, degree: int) -> Gaussians:
    """Same Gaussians with SH degree ``degree``: higher bands dropped, or added as zeros."""
    if not 0 <= degree <= 3:
        raise InvalidInput(f"SH degree must be 0..3, got {degree}")
    g = gaussians.to_numpy()
    k_new, k = (degree + 1) ** 2, int(g.sh.shape[1])
    if k_new <= k:
        sh = np.ascontiguousarray(g.sh[:, :k_new])
    else:
        sh = np.zeros((len(g), k_new, 3), dtype=g.sh.dtype)
        sh[:, :k] = g.sh
    return g.with_(sh=sh)
