"""The decoded Gaussians folder: what the backend hands the Blender add-on, and what the add-on exports back.

Layout (docs/ARCHITECTURE.md, "Decoded Gaussians folder"); every array C-contiguous little-endian float32,
ready for ``foreach_set``:

    manifest.json  {"version": 1, "count": N, "sh_degree": d, "source": str, "sequence": null | abs .lw4d path}
    position.npy   (N, 3)     means
    scale.npy      (N, 3)     s = exp(log_scale)
    rotation.npy   (N, 4)     q / |q|, (w, x, y, z)
    opacity.npy    (N,)       a = sigmoid(logit) = 1 / (1 + exp(-logit))
    color.npy      (N, 3)     clamp(0.5 + SH_C0 * sh[:, 0], 0, 1)   (display only)
    sh.npy         (N, K, 3)  raw SH coefficients, DC included, K = (d + 1)^2

``read_decoded`` inverts it: log_scale = log(max(s, tiny)), logit = log(a / (1 - a)) with a clipped to
[1e-7, 1 - 1e-7] (so fully opaque or transparent splats do not become +-inf), quats = rotation. ``sh.npy``
is authoritative for colour; a folder without it is read as degree 0 with DC = (color - 0.5) / SH_C0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, NotFound
from ..gaussians import Gaussians, rgb_to_sh_dc, sh_dc_to_rgb, sh_degree_for
from .arrays import load_array
from .atomic import atomic_dir
from .outputs import OutputKind, only_files

VERSION = 1
ARRAY_FILES = ("position.npy", "scale.npy", "rotation.npy", "opacity.npy", "color.npy", "sh.npy")
OPACITY_EPS = 1e-7


def is_decoded_folder(path: Path) -> bool:
    """``path`` is a decoded folder ``write_decoded`` made: a manifest and the array files, nothing else."""
    return only_files(path, {"manifest.json", *ARRAY_FILES}.__contains__) and (path / "manifest.json").is_file()


DECODED = OutputKind("a decoded Gaussians folder", is_decoded_folder)


@dataclass(frozen=True)
class DecodedManifest:
    """``manifest.json`` of a decoded folder."""

    count: int
    sh_degree: int
    source: str
    sequence: str | None = None
    version: int = VERSION


# Activations and their inverses (shared with .lw4d channels) -------------------------------------------------

def decode_scale(log_scales: np.ndarray) -> np.ndarray:
    """s = exp(log_scale), float32."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(log_scales, dtype=np.float32))


def encode_scale(scales: np.ndarray) -> np.ndarray:
    """log_scale = log(max(s, tiny)), float32 (a zero scale maps to log(tiny) ~ -87, not -inf)."""
    return np.log(np.maximum(np.asarray(scales, dtype=np.float32), np.finfo(np.float32).tiny))


def decode_opacity(logits: np.ndarray) -> np.ndarray:
    """a = 1 / (1 + exp(-logit)), float32."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float32)))).astype(np.float32)


def encode_opacity(opacities: np.ndarray) -> np.ndarray:
    """logit = log(a / (1 - a)) with a clipped to [eps, 1 - eps], computed in float64, returned float32."""
    a = np.clip(np.asarray(opacities, dtype=np.float64), OPACITY_EPS, 1.0 - OPACITY_EPS)
    return np.log(a / (1.0 - a)).astype(np.float32)


def normalize_quats(quats: np.ndarray) -> np.ndarray:
    """q / |q| along the last axis, float32; a zero quaternion becomes the identity (1, 0, 0, 0)."""
    q = np.asarray(quats, dtype=np.float32)
    with np.errstate(over="ignore"):
        norm = np.sqrt(np.einsum("...i,...i->...", q, q))  # einsum: no (..., 4) temporary, ~3x faster than linalg.norm
    big = ~np.isfinite(norm)
    if big.any():  # |q| over ~1.8e19 overflows the squares: those rows in float64
        q64 = q[big].astype(np.float64)
        norm[big] = np.sqrt(np.einsum("...i,...i->...", q64, q64)).astype(np.float32)
    zero = norm == 0
    out = q / np.where(zero, np.float32(1), norm)[..., None]
    if zero.any():
        out[zero] = (1.0, 0.0, 0.0, 0.0)
    return out


def sh_to_color(sh_dc: np.ndarray) -> np.ndarray:
    """Display colour clamp(0.5 + SH_C0 * dc, 0, 1), float32."""
    return np.clip(sh_dc_to_rgb(np.asarray(sh_dc, dtype=np.float32)), 0.0, 1.0).astype(np.float32)


# The folder --------------------------------------------------------------------------------------------------

def write_decoded(folder: str | os.PathLike, gaussians: Gaussians, source: str | os.PathLike = "",
                  sequence: str | os.PathLike | None = None, replace: bool = False) -> Path:
    """Write ``gaussians`` (numpy or torch) as a decoded folder at ``folder``, atomically; an earlier decoded
    folder there is replaced only with ``replace``, anything else is refused (``outputs.check_output``).

    ``source`` is where the Gaussians came from (shown to the user); ``sequence`` the absolute path of the
    ``.lw4d`` these are the base of, or None. Returns ``folder``.
    """
    g = gaussians.to_numpy()
    try:
        g.validate()
    except ValueError as exc:
        raise InvalidInput(f"cannot decode these Gaussians: {exc}") from None
    folder = Path(folder)
    arrays = {
        "position.npy": g.means,
        "scale.npy": decode_scale(g.log_scales),
        "rotation.npy": normalize_quats(g.quats),
        "opacity.npy": decode_opacity(g.opacity_logits),
        "color.npy": sh_to_color(g.sh[:, 0]),
        "sh.npy": g.sh,
    }
    for name, values in arrays.items():
        bad = ~np.isfinite(values)
        if bad.any():
            rows = int(bad.reshape(len(values), -1).any(axis=1).sum())
            raise InvalidInput(f"{source or 'these Gaussians'}: {rows} of {len(g)} Gaussians decode to NaN or "
                               f"infinite {name.removesuffix('.npy')} values; the file is corrupt")
    manifest = {"version": VERSION, "count": len(g), "sh_degree": g.sh_degree, "source": str(source),
                "sequence": None if sequence is None else str(Path(sequence).absolute())}
    with atomic_dir(folder, DECODED, replace) as tmp:
        for name, values in arrays.items():
            np.save(tmp / name, np.ascontiguousarray(values, dtype="<f4"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def read_decoded_manifest(folder: str | os.PathLike) -> DecodedManifest:
    """Parse and check ``<folder>/manifest.json``."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise NotFound(f"{folder} is not a decoded Gaussians folder: no manifest.json")
    try:
        m = json.loads(path.read_text())
        version = m["version"]
        if version != VERSION:
            raise InvalidInput(f"{path}: decoded folder version {version} is not supported (this LivingWorld "
                               f"reads version {VERSION})")
        return DecodedManifest(count=int(m["count"]), sh_degree=int(m["sh_degree"]), source=str(m.get("source", "")),
                               sequence=m.get("sequence"), version=version)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path}: bad manifest ({type(exc).__name__}: {exc})") from None


def _load(folder: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    path = folder / name
    a = load_array(path)
    if a.dtype.kind != "f":
        raise InvalidInput(f"{path}: dtype {a.dtype}, expected float32")
    if a.shape != shape:
        raise InvalidInput(f"{path}: shape {a.shape}, expected {shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        raise InvalidInput(f"{path}: {int(bad.reshape(len(a), -1).any(axis=1).sum())} of {len(a)} rows hold NaN or "
                           "infinite values")
    return a


def read_decoded(folder: str | os.PathLike) -> Gaussians:
    """Read a decoded folder back into raw (INRIA) numpy ``Gaussians`` — the inverse of ``write_decoded``."""
    folder = Path(folder)
    m = read_decoded_manifest(folder)
    n = m.count
    needed = ["position.npy", "scale.npy", "rotation.npy", "opacity.npy"]
    needed.append("sh.npy" if (folder / "sh.npy").is_file() else "color.npy")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise InvalidInput(f"{folder}: decoded folder lacks {', '.join(missing)}")
    scale = _load(folder, "scale.npy", (n, 3))
    opacity = _load(folder, "opacity.npy", (n,))
    if scale.min() < 0:
        raise InvalidInput(f"{folder / 'scale.npy'}: {int((scale < 0).sum())} negative scales")
    if opacity.min() < 0 or opacity.max() > 1:
        raise InvalidInput(f"{folder / 'opacity.npy'}: {int(((opacity < 0) | (opacity > 1)).sum())} opacities "
                           "outside 0..1")
    if needed[-1] == "sh.npy":
        k = (m.sh_degree + 1) ** 2
        sh = _load(folder, "sh.npy", (n, k, 3))
    else:
        sh = rgb_to_sh_dc(_load(folder, "color.npy", (n, 3))).astype(np.float32)[:, None, :]
    sh_degree_for(sh.shape[1])
    return Gaussians(
        means=_load(folder, "position.npy", (n, 3)),
        quats=_load(folder, "rotation.npy", (n, 4)),
        log_scales=encode_scale(scale),
        opacity_logits=encode_opacity(opacity),
        sh=np.ascontiguousarray(sh),
    )
