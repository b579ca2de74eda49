"""The INRIA 3DGS binary PLY in the add-on (bpy-free numpy): read to decoded arrays, write back bit-exactly.

One element ``vertex`` with N rows and the properties

    x y z  nx ny nz  f_dc_0..2  f_rest_0..f_rest_{3(K-1)-1}  opacity  scale_0..2  rot_0..3

K = (degree + 1)^2, SH channel-major as the INRIA code writes them: ``f_rest_i = sh[:, 1 + i % (K-1), i // (K-1)]``.
``opacity`` is the logit, ``scale_*`` the log of the standard deviation, ``rot_*`` the quaternion (w, x, y, z).
Files other tools write are read too: any property order, big- or little-endian, any numeric property type;
extra properties and normals are not part of the Gaussians and are not kept (an export writes zero normals).

Decoding (float32, the same functions for every import and for the exactness checks of an export):

    opacity = 1 / (1 + exp(-logit))     scale = exp(log_scale)     rotation = data.unit_quaternions(q)

Writing is exact both ways. A carrier read from a PLY keeps the file's own logits, log-scales and quaternions
(``data.StoredValues``); ``encode`` writes them back for every Gaussian whose decoded value is unchanged, so
import -> export reproduces the file's numbers bit for bit. Other values (a splat made by Blender's importer, a
played frame) are inverted in float64 and then stepped by one float32 ulp at a time until decoding them gives
the value back (``_invert``): opacity and scale survive export -> import unchanged wherever float32 can
represent them at all.

Why not a library: the backend reads PLYs with ``plyfile``, but the add-on ships no wheels and never imports the
backend (Blender's own ``wm.ply_import`` converts in C++ and drops the file's logits, so it cannot give an exact
export); the header is a few lines of text and the body one ``np.fromfile``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np

from .data import DecodedGaussians, GaussianDataError, StoredValues, unit_quaternions

COMMENT = "written by LivingWorld (INRIA 3DGS layout)"
POSITION = ("x", "y", "z")
NORMALS = ("nx", "ny", "nz")
SH_DC = ("f_dc_0", "f_dc_1", "f_dc_2")
SCALE = ("scale_0", "scale_1", "scale_2")
ROTATION = ("rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = POSITION + SH_DC + ("opacity",) + SCALE + ROTATION
REST_DEGREES = {0: 0, 9: 1, 24: 2, 45: 3}  # number of f_rest_* properties -> SH degree
TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
         "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
         "double": "f8", "float64": "f8"}


def rest_names(k: int) -> list[str]:
    """Names of the ``f_rest_*`` properties for K SH coefficients per channel."""
    return [f"f_rest_{i}" for i in range(3 * (k - 1))]


def sh_columns(k: int) -> list[str]:
    """Property names of sh[:, j, c] in (j, c) order: sh[:, 0] = f_dc, sh[:, j, c] = f_rest_{c (K-1) + j - 1}."""
    return [SH_DC[c] if j == 0 else f"f_rest_{c * (k - 1) + j - 1}" for j in range(k) for c in range(3)]


# Activations and their exact inverses ------------------------------------------------------------------------

def decode_opacity(logit: np.ndarray) -> np.ndarray:
    """opacity = 1 / (1 + exp(-logit)), float32."""
    with np.errstate(over="ignore"):
        return (np.float32(1) / (np.float32(1) + np.exp(-np.asarray(logit, np.float32)))).astype(np.float32)


def decode_scale(log_scale: np.ndarray) -> np.ndarray:
    """scale = exp(log_scale), float32."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(log_scale, np.float32))


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 -> int64 keys in the same order (consecutive floats have consecutive keys)."""
    bits = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _from_ordered(key: np.ndarray) -> np.ndarray:
    bits = np.where(key < 0, (-key) | 0x80000000, key)
    return bits.astype(np.uint32).view(np.float32)


def _invert(decode, target: np.ndarray, start: np.ndarray, low: float, high: float) -> np.ndarray:
    """x with decode(x) == target for a monotonic non-decreasing float32 ``decode``: from ``start`` (a float64
    inverse) one ulp at a time towards the target, then, for what is still off (flat stretches of decode, where
    many floats share a value), a bisection over the floats in [low, high]. Where no float32 decodes to the
    target exactly (decode skips it), x is the float whose value is nearest to it."""
    target = np.asarray(target, np.float32)
    x = np.asarray(start, np.float32).copy()
    for _ in range(4):
        value = decode(x)
        up, down = value < target, value > target
        if not (up.any() or down.any()):
            return x
        x = np.where(up, np.nextafter(x, np.float32(np.inf)), np.where(down, np.nextafter(x, np.float32(-np.inf)), x))
    flat, want = x.reshape(-1), target.reshape(-1)  # decode works element by element
    off = np.flatnonzero(decode(flat) != want)
    if off.size:
        lo = np.full(off.size, _ordered(np.float32(low)), np.int64)
        hi = np.full(off.size, _ordered(np.float32(high)), np.int64)
        while (lo < hi).any():  # the smallest float whose value is >= the target
            mid = (lo + hi) // 2
            below = decode(_from_ordered(mid)) < want[off]
            lo, hi = np.where(below, mid + 1, lo), np.where(below, hi, mid)
        above, below = _from_ordered(lo), _from_ordered(lo - 1)
        closer = np.abs(decode(above) - want[off]) <= np.abs(decode(below) - want[off])
        flat[off] = np.where(closer, above, below)
    return x


def encode_opacity(opacity: np.ndarray) -> np.ndarray:
    """Logits (N,) float32 that ``decode_opacity`` maps back to ``opacity`` (0..1)."""
    a = np.asarray(opacity, np.float64)
    inner = np.clip(a, 1e-12, 1.0 - 1e-12)
    start = np.where(a >= 1.0, 20.0, np.where(a <= 0.0, -110.0, np.log(inner / (1.0 - inner))))
    return _invert(decode_opacity, np.asarray(opacity, np.float32), start.astype(np.float32), -110.0, 20.0)


def encode_scale(scale: np.ndarray) -> np.ndarray:
    """Log-scales (N, 3) float32 that ``decode_scale`` maps back to ``scale`` (> 0; 0 becomes log(tiny))."""
    s = np.asarray(scale, np.float64)
    start = np.log(np.maximum(s, np.finfo(np.float32).tiny)).astype(np.float32)
    return _invert(decode_scale, np.asarray(scale, np.float32), start, -104.0, 89.0)


def _kept(stored: np.ndarray | None, decode, current: np.ndarray) -> np.ndarray:
    """(N,) bool: where the stored file value still decodes to the carrier's current value, bit for bit."""
    if stored is None:
        return np.zeros(len(current), bool)
    same = decode(stored) == current
    return same.reshape(len(current), -1).all(axis=1)


def encode(gaussians: DecodedGaussians) -> dict[str, np.ndarray]:
    """The PLY values of ``gaussians``: {"logit" (N,), "log_scale" (N, 3), "quat" (N, 4)}, the stored file values
    where they still decode to the current ones, exact inverses elsewhere (module docstring)."""
    stored = gaussians.stored
    logit = encode_opacity(gaussians.opacity)
    log_scale = encode_scale(gaussians.scale)
    quat = np.asarray(gaussians.rotation, np.float32).copy()
    if stored is not None:
        keep = _kept(stored.opacity_logit, decode_opacity, gaussians.opacity)
        logit[keep] = stored.opacity_logit[keep]
        keep = _kept(stored.log_scale, decode_scale, gaussians.scale)
        log_scale[keep] = stored.log_scale[keep]
        keep = _kept(stored.quat, unit_quaternions, gaussians.rotation)
        quat[keep] = stored.quat[keep]
    return {"logit": logit, "log_scale": log_scale, "quat": quat}


# Reading -----------------------------------------------------------------------------------------------------

def _header(path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """(byte order '<' | '>', [(element, count, [(property, numpy type)])], body offset) of a binary PLY."""
    if not path.exists():
        raise GaussianDataError(f"{path} does not exist")
    if not path.is_file():
        raise GaussianDataError(f"{path} is not a file")
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    order = ""
    with open(path, "rb") as f:
        if f.readline().rstrip(b"\r\n") != b"ply":
            raise GaussianDataError(f"{path} is not a PLY file (it does not start with 'ply')")
        while True:
            line = f.readline()
            if not line:
                raise GaussianDataError(f"{path}: the PLY header has no end_header line")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                return order, elements, f.tell()
            if words[0] == "format" and len(words) >= 2:
                formats = {"binary_little_endian": "<", "binary_big_endian": ">"}
                if words[1] not in formats:
                    raise GaussianDataError(f"{path}: {words[1]} PLY is not supported; save it as binary "
                                            "(binary_little_endian)")
                order = formats[words[1]]
            elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and elements and len(words) == 3 and words[1] in TYPES:
                elements[-1][2].append((words[2], TYPES[words[1]]))
            elif words[0] == "property" and elements and words[1:2] == ["list"]:
                elements[-1][2].append((words[-1], "list"))
            else:
                raise GaussianDataError(f"{path}: bad PLY header line {line.strip()[:80]!r}")


def _vertex_rows(path: Path) -> np.ndarray:
    """The ``vertex`` element of a binary PLY as an (N,) structured array in native byte order."""
    order, elements, offset = _header(path)
    if not order:
        raise GaussianDataError(f"{path}: the PLY header names no format")
    for name, count, properties in elements:
        lists = [p for p, kind in properties if kind == "list"]
        if lists:
            raise GaussianDataError(f"{path}: element {name!r} has list properties ({', '.join(lists)}); "
                                    "not a 3D Gaussian splat PLY")
        dtype = np.dtype([(p, order + kind) for p, kind in properties])
        if name == "vertex":
            break
        offset += count * dtype.itemsize
    else:
        raise GaussianDataError(f"{path}: no 'vertex' element; not a 3D Gaussian splat PLY")
    if count == 0:
        raise GaussianDataError(f"{path}: the PLY has 0 vertices (no Gaussians)")
    have = path.stat().st_size - offset
    if have < count * dtype.itemsize:
        raise GaussianDataError(f"{path}: truncated: the header promises {count} vertices, the file holds "
                                f"{max(have, 0) // dtype.itemsize}; the download or save was cut off")
    return np.fromfile(path, dtype=dtype, count=count, offset=offset)


class _Table:
    """The ``vertex`` rows, and contiguous float32 copies of their columns. When every property is a native float32
    (the usual case) the rows are viewed as one (N, P) matrix and each copy gathers only its own columns (one
    pass per attribute over the cache lines that hold them, no full reordered copy of the file)."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self.index = {n: i for i, n in enumerate(rows.dtype.names)}
        uniform = all(rows.dtype.fields[n][0] == np.dtype(np.float32) for n in rows.dtype.names)
        self.matrix = rows.view(np.float32).reshape(len(rows), len(self.index)) if uniform else None

    def columns(self, names, out: np.ndarray | None = None) -> np.ndarray:
        """(N, len(names)) float32 C-contiguous (into ``out`` when given)."""
        if self.matrix is not None:
            index = [self.index[n] for n in names]
            step = index[1] - index[0] if len(index) > 1 else 1
            if step > 0 and index == list(range(index[0], index[-1] + 1, step)):  # a strided view: a plain copy
                view = self.matrix[:, index[0]:index[-1] + 1:step]
                return view.copy() if out is None else np.copyto(out, view) or out
            return np.take(self.matrix, index, axis=1, out=out)
        if out is None:
            out = np.empty((len(self.rows), len(names)), np.float32)
        for i, n in enumerate(names):
            out[:, i] = self.rows[n]
        return out

    def check_finite(self, path: Path, names) -> None:
        """Raise GaussianDataError naming every property among ``names`` that holds NaN or infinite values."""
        if self.matrix is not None:  # one summing pass; only columns whose sum is not finite are looked at
            sums = np.add.reduce(self.matrix, axis=0)
            names = [n for n in names if not np.isfinite(sums[self.index[n]])]
        _report_non_finite(path, {n: int((~np.isfinite(self.columns([n]))).sum()) for n in names})


def _report_non_finite(path: Path, counts: dict[str, int]) -> None:
    listed = ", ".join(f"{n} ({c})" for n, c in counts.items() if c)
    if listed:
        raise GaussianDataError(f"{path}: NaN or infinite values in {listed}; the file is corrupt or was saved by a "
                                "diverged optimisation")


def read_ply(path: str | os.PathLike) -> DecodedGaussians:
    """Decoded Gaussians of a 3DGS PLY, with the file's own values in ``stored`` (for an exact export).

    Raises GaussianDataError naming the problem (missing, not a PLY, ASCII, truncated, 0 vertices, missing
    3DGS properties, an SH band count that is not degree 0..3, NaN or infinite values).
    """
    path = Path(path)
    rows = _vertex_rows(path)
    names = set(rows.dtype.names)
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise GaussianDataError(f"{path}: not a 3D Gaussian splat PLY: missing properties {', '.join(missing)}")
    rest = [n for n in rows.dtype.names if n.startswith("f_rest_")]
    if len(rest) not in REST_DEGREES or set(rest) != set(rest_names(len(rest) // 3 + 1)):
        raise GaussianDataError(f"{path}: {len(rest)} f_rest_* properties; expected f_rest_0 .. f_rest_(R-1) with "
                                "R = 0, 9, 24 or 45 (SH degree 0..3)")
    k = (REST_DEGREES[len(rest)] + 1) ** 2
    table = _Table(rows)
    columns = sh_columns(k)
    table.check_finite(path, [*POSITION, "opacity", *SCALE, *ROTATION, *columns])
    coefficients = np.empty((k, len(rows), 3), np.float32)  # (K, N, 3): one contiguous block per coefficient
    for j in range(k):
        table.columns(columns[3 * j:3 * j + 3], out=coefficients[j])
    logit = table.columns(["opacity"]).reshape(-1)
    log_scale = table.columns(SCALE)
    quat = table.columns(ROTATION)
    return DecodedGaussians(
        position=table.columns(POSITION),
        scale=decode_scale(log_scale),
        rotation=unit_quaternions(quat),
        opacity=decode_opacity(logit),
        sh=coefficients.transpose(1, 0, 2),
        source=str(path),
        stored=StoredValues(opacity_logit=logit, log_scale=log_scale, quat=quat),
    )


# Writing -----------------------------------------------------------------------------------------------------

def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The .ply path an export will write (".ply" appended when the name does not end in it: "garden.v2" becomes
    "garden.v2.ply"); raises GaussianDataError before any work when its folder is missing or not writable, the
    path is a folder, or the file exists and ``overwrite`` is false."""
    out = Path(path)
    if out.suffix.lower() != ".ply":
        out = out.with_name(out.name + ".ply")
    if out.is_dir():
        raise GaussianDataError(f"{out} is a folder; pick a .ply file name")
    if not out.parent.is_dir():
        raise GaussianDataError(f"cannot write {out}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise GaussianDataError(f"cannot write {out}: the folder {out.parent} is not writable")
    if not overwrite and (out.exists() or out.is_symlink()):
        raise _exists(out)
    return out


def _exists(out: Path) -> GaussianDataError:
    return GaussianDataError(f"{out} exists: tick Overwrite (overwrite=True) to replace it, or pick another name")


def write_ply(path: str | os.PathLike, gaussians: DecodedGaussians, overwrite: bool = False) -> Path:
    """Write ``gaussians`` as a binary little-endian INRIA 3DGS PLY (the layout and header the backend writes),
    atomically: a temporary file in the same folder becomes ``path`` only when complete. An existing file is
    replaced only with ``overwrite`` (else GaussianDataError, also when one appears while writing). Returns the
    path."""
    out = check_output(path, overwrite)
    n, k = gaussians.count, int(gaussians.sh.shape[1])
    encoded = encode(gaussians)
    names = [*POSITION, *NORMALS, *SH_DC, *rest_names(k), "opacity", *SCALE, *ROTATION]
    table = np.zeros((n, len(names)), dtype="<f4")
    r = 3 * (k - 1)
    table[:, 0:3] = gaussians.position
    table[:, 6:9] = gaussians.sh[:, 0]
    table[:, 9:9 + r] = np.asarray(gaussians.sh[:, 1:]).transpose(0, 2, 1).reshape(n, r)
    table[:, 9 + r] = encoded["logit"]
    table[:, 10 + r:13 + r] = encoded["log_scale"]
    table[:, 13 + r:17 + r] = encoded["quat"]
    _report_non_finite(out, dict(zip(names, (~np.isfinite(table)).sum(axis=0).tolist())))
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"comment {COMMENT}", f"element vertex {n}",
                        *(f"property float {name}" for name in names), "end_header"]) + "\n"
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as f:  # the user's umask applies, as to any file they save
            f.write(header.encode("ascii"))
            table.tofile(f)
        if overwrite:
            os.replace(tmp, out)
        else:
            _place_new(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _place_new(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out`` only if nothing is there: a hard link fails on an existing name
    (atomically); where the file system has no hard links, a last check, then a rename."""
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise _exists(out) from None
    except OSError:
        if out.exists() or out.is_symlink():
            raise _exists(out) from None
        os.replace(tmp, out)
        return
    tmp.unlink()
