"""``.lw4d/`` 4D Gaussian sequences: the one format every animated result is delivered in.

A folder (docs/ARCHITECTURE.md, "``.lw4d/`` sequence"):

    manifest.json      {"format": "lw4d", "version": 1, "frame_count": T, "fps": f, "loop": bool,
                        "coordinate_frame": "blender_z_up_m", "count": N, "dynamic_count": M,
                        "channels": {"position": "float32", ...}}
    base.ply           all N Gaussians at rest (INRIA 3DGS PLY)
    dynamic_index.npy  (M,) int64, indices into base of the Gaussians that change
    position.npy       (T, M, 3) float32                  required
    opacity.npy        (T, M)    float32 in 0..1          optional
    rotation.npy       (T, M, 4) float32 unit (w,x,y,z)   optional
    scale.npy          (T, M, 3) float32 linear, >= 0     optional
    color.npy          (T, M, 3) float32 RGB              optional

Channels hold DECODED values so the Blender add-on writes them with ``foreach_set`` straight from a memory map.
Static Gaussians cost nothing per frame. Writers fill ``<name>.tmp-XXXX/`` and rename it into place, so a
reader never sees a half-written sequence; ``SequenceWriter`` preallocates every channel with
``np.lib.format.open_memmap`` (header + full size) and appends frames through a plain file handle, so T x M
never sits in RAM (measured: keeping the memory map open instead grows the mapped pages with the file and is
5x slower, bench/io_lw4d.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InvalidInput, NotFound
from ..gaussians import Gaussians, rgb_to_sh_dc
from .arrays import load_array
from .atomic import commit_dir, temp_dir_for
from .decoded import encode_opacity, encode_scale, normalize_quats
from .outputs import OutputKind, check_output, only_files
from .ply import read_ply, write_ply

FORMAT = "lw4d"
VERSION = 1
COORDINATE_FRAME = "blender_z_up_m"
# channel name -> trailing shape of one Gaussian's value (the array is (T, M) + trailing)
CHANNELS: dict[str, tuple[int, ...]] = {"position": (3,), "opacity": (), "rotation": (4,), "scale": (3,),
                                        "color": (3,)}
REQUIRED_CHANNELS = ("position",)
SEQUENCE_FILES = frozenset({"manifest.json", "base.ply", "dynamic_index.npy", *(f"{c}.npy" for c in CHANNELS)})


def is_sequence_folder(path: Path) -> bool:
    """``path`` is a ``.lw4d`` folder a writer of this module made: a manifest of format ``lw4d`` and no file that a
    sequence does not have (so a user's folder is never taken for one and replaced)."""
    if not only_files(path, SEQUENCE_FILES.__contains__):
        return False
    try:
        return json.loads((path / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


LW4D = OutputKind("a .lw4d sequence", is_sequence_folder)


class Manifest(BaseModel):
    """``manifest.json`` of a ``.lw4d`` folder, every field checked for type and range (strict: ``"3"`` is not a
    frame count, ``true`` is not a number; NaN and infinities are refused). Unknown fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    format: Literal["lw4d"]
    version: int
    frame_count: int = Field(ge=1, le=10_000_000)
    fps: float = Field(gt=0, allow_inf_nan=False)
    loop: bool
    coordinate_frame: str = Field(COORDINATE_FRAME, max_length=200)
    count: int = Field(ge=1, le=1 << 40)
    dynamic_count: int = Field(ge=0, le=1 << 40)
    channels: dict[str, Literal["float32"]]

    @model_validator(mode="after")
    def _consistent(self):
        if self.dynamic_count > self.count:
            raise ValueError(f"dynamic_count {self.dynamic_count} is more than count {self.count}")
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or "position" not in self.channels:
            raise ValueError(f"channels {list(self.channels)}; known channels are {list(CHANNELS)} and position is "
                             "required")
        return self


def _manifest_error(exc: ValidationError) -> str:
    """Pydantic's errors as one line: ``frame_count: Input should be a valid integer; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


@dataclass
class Sequence:
    """A 4D sequence. ``channels[name]`` is (T, M, ...) float32, memory-mapped when read with ``mmap=True``."""

    path: Path
    frame_count: int
    fps: float
    loop: bool
    base: Gaussians
    dynamic_index: np.ndarray  # (M,) int64
    channels: dict[str, np.ndarray]
    coordinate_frame: str = COORDINATE_FRAME
    version: int = VERSION

    @property
    def count(self) -> int:
        return len(self.base)

    @property
    def dynamic_count(self) -> int:
        return int(self.dynamic_index.shape[0])

    @property
    def duration(self) -> float:
        """Seconds: T / fps."""
        return self.frame_count / self.fps


@dataclass(frozen=True)
class Frame:
    """Decoded values of the M dynamic Gaussians at one time; a channel the sequence lacks is None."""

    position: np.ndarray  # (M, 3)
    opacity: np.ndarray | None = None  # (M,)
    rotation: np.ndarray | None = None  # (M, 4) unit wxyz
    scale: np.ndarray | None = None  # (M, 3)
    color: np.ndarray | None = None  # (M, 3)


def _check_index(dynamic_index, count: int, where: str) -> np.ndarray:
    idx = np.asarray(dynamic_index)
    if idx.ndim != 1:
        raise InvalidInput(f"{where}: dynamic_index has shape {idx.shape}, expected (M,)")
    if idx.dtype.kind not in "iu":
        raise InvalidInput(f"{where}: dynamic_index dtype {idx.dtype}, expected int64")
    if idx.size and (idx.min() < 0 or idx.max() >= count):
        bad = int(((idx < 0) | (idx >= count)).sum())
        raise InvalidInput(f"{where}: {bad} dynamic_index values out of range 0..{count - 1} "
                           f"(min {int(idx.min())}, max {int(idx.max())})")
    ordered = np.sort(idx)  # sort-based duplicate count: np.unique's hash path is ~100x slower at 1M
    duplicates = int(np.count_nonzero(ordered[1:] == ordered[:-1]))
    if duplicates:
        raise InvalidInput(f"{where}: dynamic_index lists {duplicates} Gaussians twice")
    return idx.astype(np.int64, copy=False)


def _check_values(name: str, values: np.ndarray, where: str) -> None:
    """Finite everywhere; opacity in 0..1; scale >= 0."""
    finite = np.isfinite(values)
    if not finite.all():
        raise InvalidInput(f"{where}: channel {name} holds {int((~finite).sum())} NaN or infinite values")
    if name == "opacity" and values.size and (values.min() < 0 or values.max() > 1):
        raise InvalidInput(f"{where}: channel opacity holds values outside 0..1 "
                           f"(min {float(values.min())}, max {float(values.max())})")
    if name == "scale" and values.size and values.min() < 0:
        raise InvalidInput(f"{where}: channel scale holds {int((values < 0).sum())} negative values")


class SequenceWriter:
    """Stream a sequence to disk one frame at a time.

        with SequenceWriter(path, base, dynamic_index, frame_count=300, channels=("position", "opacity")) as w:
            for t in range(300):
                w.append(position=p_t, opacity=a_t)      # (M, 3), (M,)

    Arrays are preallocated in ``<path>.tmp-XXXX/``; leaving the ``with`` block normally
    checks that every frame was written, writes the manifest and renames the folder to ``path``; an exception
    deletes the temporary folder and leaves ``path`` as it was. An existing ``path`` is refused when the writer is
    made (``outputs.check_output``) unless it is an earlier sequence and ``replace`` is True; anything else there is
    never touched. Rotations are normalised on write; values must be finite, opacity in 0..1, scale >= 0.
    """

    def __init__(self, path: str | os.PathLike, base: Gaussians, dynamic_index, frame_count: int,
                 channels: Iterable[str] = ("position",), fps: float = 24.0, loop: bool = False,
                 coordinate_frame: str = COORDINATE_FRAME, replace: bool = False):
        self.path = check_output(path, LW4D, replace)
        self.replace = replace
        self.channels = tuple(channels)
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown:
            raise InvalidInput(f"unknown .lw4d channels {unknown}; known: {list(CHANNELS)}")
        if "position" not in self.channels:
            raise InvalidInput("a .lw4d sequence needs the position channel")
        if int(frame_count) != frame_count or frame_count < 1:
            raise InvalidInput(f"frame_count must be a positive integer, got {frame_count}")
        if not (math.isfinite(fps) and fps > 0):
            raise InvalidInput(f"fps must be positive, got {fps}")
        self.base = base.to_numpy()
        self.dynamic_index = _check_index(dynamic_index, len(self.base), str(self.path))
        self.frame_count, self.fps, self.loop = int(frame_count), float(fps), bool(loop)
        self.coordinate_frame = coordinate_frame
        self.frames_written = 0
        m = self.dynamic_count = int(self.dynamic_index.shape[0])
        self._files = {}
        self._tmp = temp_dir_for(self.path)
        try:
            write_ply(self._tmp / "base.ply", self.base)
            np.save(self._tmp / "dynamic_index.npy", self.dynamic_index)
            for name in self.channels:
                file = self._tmp / f"{name}.npy"
                array = np.lib.format.open_memmap(file, mode="w+", dtype="<f4",
                                                  shape=(self.frame_count, m) + CHANNELS[name])
                offset = array.offset  # frame t starts at offset + t * (bytes per frame)
                del array
                self._files[name] = open(file, "r+b")  # noqa: SIM115 (closed in close/abort)
                self._files[name].seek(offset)
        except BaseException:
            self.abort()
            raise

    def append(self, **values: np.ndarray) -> None:
        """Write the next frame: one (M, ...) array per channel of this writer, as keyword arguments."""
        if self.frames_written >= self.frame_count:
            raise InvalidInput(f"{self.path}: all {self.frame_count} frames are already written")
        if set(values) != set(self.channels):
            raise InvalidInput(f"{self.path}: frame {self.frames_written} has channels {sorted(values)}, "
                               f"this sequence has {sorted(self.channels)}")
        where = f"{self.path} frame {self.frames_written}"
        frame = {}
        for name, v in values.items():
            v = np.asarray(v, dtype=np.float32)
            expect = (self.dynamic_count,) + CHANNELS[name]
            if v.shape != expect:
                raise InvalidInput(f"{where}: channel {name} has shape {v.shape}, expected {expect} (M, ...)")
            _check_values(name, v, where)
            frame[name] = np.ascontiguousarray(normalize_quats(v) if name == "rotation" else v, dtype="<f4")
        try:
            for name, v in frame.items():
                self._files[name].write(v.data)
        except BaseException:  # a partly written frame (disk full): the sequence cannot be finished
            self.abort()
            raise
        self.frames_written += 1

    def close(self) -> Path:
        """Finish: every frame written -> manifest, rename into place. Returns the sequence path.

        On failure (frames missing, disk full) the temporary folder is deleted and ``path`` is left as it was.
        """
        try:
            if self.frames_written != self.frame_count:
                raise InvalidInput(f"{self.path}: {self.frames_written} of {self.frame_count} frames written")
            self._close_files()
            manifest = {"format": FORMAT, "version": VERSION, "frame_count": self.frame_count, "fps": self.fps,
                        "loop": self.loop, "coordinate_frame": self.coordinate_frame, "count": len(self.base),
                        "dynamic_count": self.dynamic_count, "channels": {c: "float32" for c in self.channels}}
            (self._tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            commit_dir(self._tmp, self.path, LW4D, self.replace)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; ``path`` stays as it was."""
        self._close_files()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _close_files(self) -> None:
        files, self._files = self._files, {}
        for f in files.values():
            f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_sequence(path: str | os.PathLike, base: Gaussians, dynamic_index, channels: dict[str, np.ndarray],
                   fps: float = 24.0, loop: bool = False, coordinate_frame: str = COORDINATE_FRAME,
                   replace: bool = False) -> Path:
    """Write a whole sequence held in arrays: ``channels[name]`` is (T, M, ...) (see the module docstring);
    ``replace`` as ``SequenceWriter``."""
    if "position" not in channels:
        raise InvalidInput("a .lw4d sequence needs the position channel")
    frame_count = int(np.shape(channels["position"])[0])
    for name, a in channels.items():
        if name in CHANNELS and np.shape(a)[:1] != (frame_count,):
            raise InvalidInput(f"channel {name} has {np.shape(a)[0]} frames, position has {frame_count}")
    with SequenceWriter(path, base, dynamic_index, frame_count, channels=list(channels), fps=fps, loop=loop,
                        coordinate_frame=coordinate_frame, replace=replace) as w:
        for t in range(frame_count):
            w.append(**{name: a[t] for name, a in channels.items()})
    return Path(path)


def read_sequence(path: str | os.PathLike, mmap: bool = True, check_values: bool = False) -> Sequence:
    """Open a ``.lw4d`` folder, checking its manifest, files, dtypes, shapes and index.

    ``mmap=True`` memory-maps the channel arrays (read-only). ``check_values=True`` also scans every frame for
    NaN/inf and out-of-range values (reads the whole sequence once, frame by frame).
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise InvalidInput(f"{path} is not a .lw4d sequence: no manifest.json")
    try:
        m = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InvalidInput(f"{manifest_path}: not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else m
        raise InvalidInput(f"{manifest_path}: not a .lw4d manifest (format is {repr(got)[:100]}, expected 'lw4d')")
    if m.get("version") != VERSION:
        raise InvalidInput(f"{manifest_path}: .lw4d version {str(m.get('version'))[:100]} is not supported (this "
                           f"LivingWorld reads version {VERSION}); update LivingWorld or re-export the sequence")
    try:
        manifest = Manifest.model_validate(m)
    except ValidationError as exc:
        raise InvalidInput(f"{manifest_path}: {_manifest_error(exc)}") from None
    channels = manifest.channels
    files = ["base.ply", "dynamic_index.npy"] + [f"{c}.npy" for c in channels]
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise InvalidInput(f"{path}: missing files {', '.join(missing)}")
    t, n, mdyn = manifest.frame_count, manifest.count, manifest.dynamic_count

    base = read_ply(path / "base.ply")
    if len(base) != n:
        raise InvalidInput(f"{path / 'base.ply'} has {len(base)} Gaussians, the manifest says {n}")
    index = load_array(path / "dynamic_index.npy")
    if index.dtype != np.int64:
        raise InvalidInput(f"{path / 'dynamic_index.npy'}: dtype {index.dtype}, expected int64")
    if index.shape != (mdyn,):
        raise InvalidInput(f"{path / 'dynamic_index.npy'}: shape {index.shape}, expected ({mdyn},) (dynamic_count)")
    index = _check_index(index, n, str(path / "dynamic_index.npy"))

    arrays = {}
    for name in channels:
        file = path / f"{name}.npy"
        a = load_array(file, mmap)
        if a.dtype != np.float32:
            raise InvalidInput(f"{file}: dtype {a.dtype}, expected float32")
        expect = (t, mdyn) + CHANNELS[name]
        if a.shape != expect:
            raise InvalidInput(f"{file}: shape {a.shape}, expected {expect} (T, M, ...) from the manifest")
        arrays[name] = a
    seq = Sequence(path=path, frame_count=t, fps=manifest.fps, loop=manifest.loop, base=base, dynamic_index=index,
                   channels=arrays, coordinate_frame=manifest.coordinate_frame, version=VERSION)
    if check_values:
        check_sequence_values(seq)
    return seq


def check_sequence_values(seq: Sequence, on_progress: Callable[[float], None] | None = None) -> None:
    """Scan every frame of every channel: finite, opacity in 0..1, scale >= 0 (``InvalidInput`` otherwise).

    Reads the whole sequence once, one frame at a time; ``on_progress(fraction)`` is called after each frame
    (a job passes ``ctx.progress`` through it, which also makes the scan cancellable).
    """
    total = len(seq.channels) * seq.frame_count
    for i, (name, a) in enumerate(seq.channels.items()):
        for frame in range(seq.frame_count):
            _check_values(name, np.asarray(a[frame]), f"{seq.path / (name + '.npy')} frame {frame}")
            if on_progress is not None:
                on_progress((i * seq.frame_count + frame + 1) / total)


def frame_weights(seq: Sequence, t: float) -> tuple[int, int, float]:
    """Frames (a, b) and weight w with value(t) = (1 - w) value[a] + w value[b], t in frames (0 = first).

    Looping sequences wrap (t mod T, and the last frame blends into the first); others clamp to [0, T-1].
    """
    n = seq.frame_count
    if seq.loop:
        t = float(t) % n
        a = math.floor(t)
        return a, (a + 1) % n, t - a
    t = min(max(float(t), 0.0), n - 1.0)
    a = math.floor(t)
    return a, min(a + 1, n - 1), t - a


def frame_gaussians(seq: Sequence, t: float) -> Frame:
    """Decoded values of the dynamic Gaussians at time ``t`` (in frames, fractional allowed).

    Linear interpolation x(t) = (1 - w) x[a] + w x[b] for position, opacity, scale and colour; rotation by
    nlerp: q = normalize((1 - w) q[a] + w s q[b]) with s = sign(q[a] . q[b]) (the shorter arc).
    """
    a, b, w = frame_weights(seq, t)
    out = {}
    for name, arr in seq.channels.items():
        xa = np.asarray(arr[a], dtype=np.float32)
        if w == 0.0:
            out[name] = np.array(xa)
            continue
        xb = np.asarray(arr[b], dtype=np.float32)
        if name == "rotation":
            wb = np.where(np.einsum("mi,mi->m", xa, xb) < 0, np.float32(-w), np.float32(w))  # shorter arc
            out[name] = normalize_quats(np.float32(1.0 - w) * xa + wb[:, None] * xb)
        else:
            out[name] = ((1.0 - w) * xa + w * xb).astype(np.float32)
    return Frame(**out)


def gaussians_at(seq: Sequence, t: float) -> Gaussians:
    """All N Gaussians at time ``t`` as raw (INRIA) numpy ``Gaussians``: the base with the dynamic subset
    replaced (scale -> log, opacity -> logit, colour -> SH DC = (rgb - 0.5) / SH_C0, higher SH bands kept)."""
    f = frame_gaussians(seq, t)
    base, idx = seq.base, seq.dynamic_index
    means, quats = base.means.copy(), base.quats.copy()
    log_scales, logits, sh = base.log_scales.copy(), base.opacity_logits.copy(), base.sh.copy()
    means[idx] = f.position
    if f.rotation is not None:
        quats[idx] = f.rotation
    if f.scale is not None:
        log_scales[idx] = encode_scale(f.scale)
    if f.opacity is not None:
        logits[idx] = encode_opacity(f.opacity)
    if f.color is not None:
        sh[idx, 0] = rgb_to_sh_dc(f.color)
    return Gaussians(means=means, quats=quats, log_scales=log_scales, opacity_logits=logits, sh=sh,
                     extra=dict(base.extra))
