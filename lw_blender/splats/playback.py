"""Play ``.lw4d`` sequences on the timeline: a persistent frame handler writes the changing Gaussians.

Time. Every carrier with a sequence has ``Object.lw_seq`` (LWSequenceSettings). Its ``time`` (in sequence
frames) comes from, in order of precedence:
  1. keyframes on ``lw_seq.time`` (the F-curve is evaluated at the scene frame: keyframes win);
  2. with ``use_scene_time`` on (default): time = (frame - scene.frame_start) * speed + offset;
  3. otherwise the value the user typed.
``loop_mode`` maps time t onto frames 0..T-1: ONCE clamps, LOOP wraps (t mod T, frame T-1 blends into
frame 0, so seamless loops stay seamless), PING_PONG reflects (period 2(T-1)).

Values. For t between frames i0 and i1 = i0 + 1 with w = t - i0, every channel is linearly interpolated,
v = (1 - w) v_i0 + w v_i1; rotations are blended on the same hemisphere and renormalised (nlerp) for the
displays that need unit quaternions (``UNIT_ROTATIONS``: the quads; Blender's splat renderer normalises
quaternions itself, so native splats skip it, which at 1M costs as much as the rest of the frame).
Only the M dynamic Gaussians (``dynamic_index``) are read, two frame rows per channel, from the memory-mapped
arrays; they are scattered into the cached full arrays of the carrier's display (``display``: native splats
write position, rotation, scale and ``radiance:base`` = DC colour + opacity; quads their mesh attributes) and
written with one foreach_set per attribute. A colour channel holds RGB; it is stored as the SH DC coefficient
c_0 = (rgb - 0.5) / C0.

Handlers. ``frame_change_pre`` writes the new frame before the depsgraph evaluates it (so renders get it).
A driver on ``lw_seq.time`` is evaluated by that same depsgraph pass, after the pre handler: driven carriers
are written in ``frame_change_post`` instead (Blender evaluates again when a post handler changed data), so
they do not lag one frame. Native splats need nothing else. The quads' view-dependent state (SH colours,
back-to-front order for EEVEE, view-facing ellipses: ``quads.display``) is refreshed in ``frame_change_post``
(the camera of the new frame is evaluated by then), on depsgraph updates (a moved camera) and by a timer
watching the 3D viewports (navigation is no depsgraph update); every rendered frame is re-sorted because the
Gaussians move.
"""

import json
import mmap
import os
from pathlib import Path

import numpy as np

from . import display, sh
from .data import GaussianDataError, is_carrier, point_count

TIME_PATH = "lw_seq.time"
LOOP_MODES = ("ONCE", "LOOP", "PING_PONG")
# channel -> (carrier attribute, values per Gaussian)
CHANNELS = {"position": 3, "opacity": 1, "rotation": 4, "scale": 3, "color": 3}
VIEW_POLL_S = 0.2  # how often the viewport timer checks the 3D views for a changed view


def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M,) dot products of the rows of a and b (M, 4), column by column: faster than einsum over rows of 4."""
    dot = a[:, 0] * b[:, 0]
    for c in range(1, a.shape[1]):
        dot += a[:, c] * b[:, c]
    return dot


def copy_rows(full: np.ndarray, values: np.ndarray):
    """full[:] = values; into a strided (N, C) view (the colour columns of native splats' (N, 4) radiance:base)
    one column at a time, which numpy does ~2x faster than rows of C elements."""
    if full.ndim == 1 or full.flags.c_contiguous:
        np.copyto(full, values)
        return
    for c in range(full.shape[1]):
        np.copyto(full[:, c], values[:, c])


def scatter(full: np.ndarray, index: np.ndarray, values: np.ndarray):
    """full[index] = values for row arrays, through a one-element-per-row byte view (a row copy per index,
    several times faster than numpy's fancy assignment over (M, C) float rows) when the rows are contiguous."""
    if full.ndim == 1 or not full.flags.c_contiguous:
        full[index] = values
        return
    row = np.dtype((np.void, full.dtype.itemsize * full.shape[1]))
    full.view(row).reshape(-1)[index] = np.ascontiguousarray(values).view(row).reshape(-1)


def frame_pair(t: float, frame_count: int, loop_mode: str) -> tuple[int, int, float]:
    """Sequence time t -> (i0, i1, w): show (1 - w) * frame i0 + w * frame i1."""
    last = frame_count - 1
    if frame_count <= 1:
        return 0, 0, 0.0
    if loop_mode == "LOOP":
        u = float(np.mod(t, frame_count))
        i0 = min(int(np.floor(u)), last)
        return i0, (i0 + 1) % frame_count, u - i0
    if loop_mode == "PING_PONG":
        period = 2 * last
        u = float(np.mod(t, period))
        t = period - u if u > last else u
    elif loop_mode != "ONCE":
        raise ValueError(f"unknown loop mode {loop_mode!r}; use one of {LOOP_MODES}")
    u = min(max(float(t), 0.0), float(last))
    i0 = min(int(np.floor(u)), last - 1)
    return i0, i0 + 1, u - i0


def effective_time(t: float, frame_count: int, loop_mode: str) -> float:
    """The time inside 0..T (LOOP) or 0..T-1 (ONCE, PING_PONG) that ``loop_mode`` maps t to."""
    i0, _, w = frame_pair(t, frame_count, loop_mode)
    return i0 + w


class SequenceReader:
    """Memory-mapped channels of one ``.lw4d`` folder (see ARCHITECTURE.md); bpy-free.

    ``frame(channel, i0, i1, w)`` returns the interpolated (M, C) values of the dynamic Gaussians.
    After a frame is read its pages are released (MADV_DONTNEED), so resident memory stays at a few frames
    however long the sequence is.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise GaussianDataError(f"{self.path} has no manifest.json; it is not a .lw4d sequence")
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != "lw4d":
                raise ValueError(f"format is {manifest.get('format')!r}, not 'lw4d'")
            if manifest.get("version") != 1:
                raise ValueError(f"version {manifest.get('version')!r} is not supported (expected 1)")
            self.frame_count = int(manifest["frame_count"])
            self.count = int(manifest["count"])
            self.dynamic_count = int(manifest["dynamic_count"])
            self.fps = float(manifest.get("fps", 24.0))
            self.loop = bool(manifest.get("loop", False))
            names = list(manifest["channels"])
        except (ValueError, KeyError, TypeError) as exc:
            raise GaussianDataError(f"{manifest_path} is not a valid .lw4d manifest: {exc}") from exc
        if self.frame_count < 1:
            raise GaussianDataError(f"{manifest_path}: frame_count must be >= 1")
        unknown = set(names) - set(CHANNELS)
        if unknown:
            raise GaussianDataError(f"{manifest_path}: unknown channels {sorted(unknown)}")
        index = np.load(self.path / "dynamic_index.npy") if (self.path / "dynamic_index.npy").is_file() else None
        if index is None or index.shape != (self.dynamic_count,):
            raise GaussianDataError(f"{self.path}: dynamic_index.npy missing or not ({self.dynamic_count},)")
        if self.dynamic_count and (index.min() < 0 or index.max() >= self.count):
            raise GaussianDataError(f"{self.path}: dynamic_index has indices outside 0..{self.count - 1}")
        self.dynamic_index = index.astype(np.int64)
        self.is_identity = self.dynamic_count == self.count and bool(np.all(index == np.arange(self.count)))
        self.channels = {}
        self._maps = {}
        for name in names:
            self.channels[name] = self._map(name)

    def _map(self, name: str) -> np.ndarray:
        path = self.path / f"{name}.npy"
        width = CHANNELS[name]
        expected = (self.frame_count, self.dynamic_count) + ((width,) if width > 1 else ())
        if not path.is_file():
            raise GaussianDataError(f"{self.path}: channel {name} listed in the manifest but {path.name} is missing")
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
            if shape != expected or fortran or dtype != np.dtype("<f4"):
                raise GaussianDataError(
                    f"{path} is {dtype} {shape}, expected little-endian float32 {expected} in C order"
                )
            size = os.fstat(f.fileno()).st_size
            if size < offset + 4 * int(np.prod(expected)):
                raise GaussianDataError(f"{path} is truncated")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps[name] = (mapped, offset)
        return np.frombuffer(mapped, dtype="<f4", count=int(np.prod(expected)), offset=offset).reshape(expected)

    def _release(self, name: str, i: int):
        """Drop the resident pages of frame i of a channel (they are re-read from the page cache if needed)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        mapped, offset = self._maps[name]
        row = self.channels[name][0].nbytes
        start = offset + i * row
        page = mmap.PAGESIZE
        lo = (start + page - 1) // page * page
        hi = (start + row) // page * page
        if hi > lo:
            mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def frame(self, name: str, i0: int, i1: int, w: float, out: np.ndarray | None = None) -> np.ndarray:
        """Values of channel ``name`` for the dynamic Gaussians at (1 - w) frame i0 + w frame i1: (M, C) float32
        (opacity (M,)), written into ``out``; without ``out``, a whole frame (w = 0) is the read-only memory-mapped
        row itself (no copy). Call ``release(i0, i1)`` once the values are used."""
        data = self.channels[name]
        a = data[i0]
        if w == 0.0 or i0 == i1:
            if out is None:
                return a
            np.copyto(out, a)
            return out
        if out is None:
            out = np.empty(a.shape, dtype=np.float32)
        b = data[i1]
        if name == "rotation":
            # the blend on the hemisphere of a, q = a + w (s b - a) with s = sign(a . b), unnormalised (SequencePlayer
            # normalises it for the displays that need it)
            np.multiply(b, np.where(row_dot(a, b) < 0.0, np.float32(-1.0), np.float32(1.0))[:, None], out=out)
            out -= a
            out *= w
            out += a
        else:
            np.subtract(b, a, out=out)
            out *= w
            out += a
        return out

    def release(self, i0: int, i1: int):
        """Drop the resident pages of frames i0 and i1 of every channel (the page cache keeps them for a reread),
        so resident memory stays at a few frames however long the sequence is."""
        for name in self.channels:
            for i in {i0, i1}:
                self._release(name, i)

    def close(self):
        """Unmap the channels. A whole-frame row handed out by ``frame`` may still be referenced (a traceback
        keeps it, a script holds it): then that map is left to close when its last row is released, instead of
        ``mmap.close`` raising BufferError (from add-on unregister or file load)."""
        self.channels.clear()
        for mapped, _ in self._maps.values():
            try:
                mapped.close()
            except BufferError:
                pass  # rows of it are still alive; the mapping is freed with the last of them
        self._maps.clear()


class SequencePlayer:
    """A sequence bound to one carrier: the full per-Gaussian arrays of its display to scatter the dynamic
    subset into."""

    def __init__(self, obj, path: str):
        self.reader = SequenceReader(path)
        self.path = path
        count = point_count(obj.data)
        if count != self.reader.count:
            raise GaussianDataError(f"{path} animates {self.reader.count} Gaussians but {obj.name!r} has {count}")
        self.display = display.of(obj)
        self.names = list(self.reader.channels)
        self.full = self.display.channel_arrays(obj, self.names)
        self.scratch = {name: np.empty(arr.shape[1:], np.float32) for name, arr in self.reader.channels.items()}
        self.time = None

    def apply(self, obj, t: float, loop_mode: str):
        """Write the sequence state at time t into the carrier's attributes.

        A channel the display writes as it is (``display.DIRECT``) of a sequence where every Gaussian moves is
        handed over without a copy: the memory-mapped row of a whole frame, or the interpolated scratch array;
        everything else is scattered into the display's full arrays (``channel_arrays``)."""
        i0, i1, w = frame_pair(t, self.reader.frame_count, loop_mode)
        index, identity = self.reader.dynamic_index, self.reader.is_identity
        arrays = dict(self.full)
        for name in self.names:
            if name == "color":  # RGB in the sequence, the SH DC coefficient c0 = (rgb - 0.5) / C0 on the carrier
                rgb = self.reader.frame(name, i0, i1, w, out=None if w == 0.0 else self.scratch[name])
                values = np.subtract(rgb, np.float32(0.5), out=self.scratch[name])
                values *= np.float32(1.0 / sh.SH_C0)
            else:
                values = self.reader.frame(name, i0, i1, w, out=None if w == 0.0 else self.scratch[name])
                if name == "rotation" and w != 0.0 and self.display.UNIT_ROTATIONS:
                    values /= np.sqrt(row_dot(values, values))[:, None]
            if identity and name in self.display.DIRECT:
                arrays[name] = values
            elif identity:
                copy_rows(self.full[name], values)
            else:
                scatter(self.full[name], index, values)
        self.display.write_channels(obj, arrays, self.names)
        self.reader.release(i0, i1)
        self.time = t


_PLAYERS: dict[int, SequencePlayer] = {}


def player(obj) -> SequencePlayer:
    """The cached player of ``obj``'s sequence, (re)opened lazily when missing or when the path changed."""
    import bpy

    path = bpy.path.abspath(obj.lw_seq.path)
    found = _PLAYERS.get(obj.session_uid)
    if found is None or found.path != path:
        if found is not None:
            found.reader.close()
        found = _PLAYERS[obj.session_uid] = SequencePlayer(obj, path)
    return found


def drop_players():
    for found in _PLAYERS.values():
        found.reader.close()
    _PLAYERS.clear()


def played_time(obj) -> float | None:
    """The sequence time last written to ``obj``, or None (no sequence played on it)."""
    found = _PLAYERS.get(obj.session_uid)
    return None if found is None else found.time


def time_fcurve(obj):
    """The F-curve keyframing ``lw_seq.time`` on ``obj``, or None."""
    from bpy_extras import anim_utils

    bag = anim_utils.animdata_get_channelbag_for_assigned_slot(obj.animation_data)
    return bag.fcurves.find(TIME_PATH) if bag is not None else None


def time_driver(obj):
    """The driver F-curve of ``lw_seq.time`` on ``obj``, or None."""
    data = obj.animation_data
    return data.drivers.find(TIME_PATH) if data is not None else None


def sequence_time(scene, obj, frame: float) -> float:
    """Sequence time of ``obj`` at scene ``frame`` (keyframes > driver > scene mapping > typed value).

    A driven time is the value the depsgraph last computed: call this after the frame's evaluation
    (``frame_change_post``) to get the value of ``frame``.
    """
    settings = obj.lw_seq
    fcurve = time_fcurve(obj)
    if fcurve is not None:
        return float(fcurve.evaluate(frame))
    if time_driver(obj) is not None:
        return float(settings.time)
    if settings.use_scene_time:
        t = (frame - scene.frame_start) * settings.speed + settings.offset
        if settings.time != t:
            settings.time = t
        return t
    return float(settings.time)


def sequence_objects(scene):
    return [obj for obj in scene.objects if obj.lw_seq.path and is_carrier(obj)]


def carriers(scene):
    return [obj for obj in scene.objects if is_carrier(obj)]


_RENDERING = [False]


def rendering() -> bool:
    """True between render_init and render_complete/cancel (handlers then run on the render thread)."""
    return _RENDERING[0]


def show_frame(scene, obj, frame: float):
    """Bring ``obj`` to the sequence state of scene ``frame``."""
    found = player(obj)
    found.apply(obj, sequence_time(scene, obj, frame), obj.lw_seq.loop_mode)
    found.display.view_colors(scene, obj, found.time)


def check_sequence(path: str, count: int) -> SequenceReader:
    """Validate the ``.lw4d`` folder ``path`` for a carrier of ``count`` Gaussians; returns a closed reader."""
    reader = SequenceReader(path)
    reader.close()
    if reader.count != count:
        raise GaussianDataError(f"{path} animates {reader.count} Gaussians but the object has {count}")
    return reader


def attach_sequence(scene, obj, path: str):
    """Attach the ``.lw4d`` folder ``path`` to carrier ``obj`` and show the current frame."""
    reader = check_sequence(path, point_count(obj.data))
    settings = obj.lw_seq
    settings.path = str(path)
    settings.frame_count = reader.frame_count
    settings.loop_mode = "LOOP" if reader.loop else "ONCE"
    # Frame handlers run on the render thread during renders: keep the UI from touching the mesh meanwhile.
    scene.render.use_lock_interface = True
    show_frame(scene, obj, scene.frame_current + scene.frame_subframe)


def on_frame_change(scene, depsgraph=None):
    """frame_change_pre: write every sequence that does not depend on a driver."""
    frame = scene.frame_current + scene.frame_subframe
    for obj in sequence_objects(scene):
        if time_driver(obj) is None or time_fcurve(obj) is not None:
            show_frame(scene, obj, frame)


def on_frame_change_post(scene, depsgraph=None):
    """frame_change_post: write driven sequences (their driver has just been evaluated) and refresh the
    view-dependent state of the quads for the new frame (``quads.display.update_view``: a playing sequence
    moves its Gaussians)."""
    frame = scene.frame_current + scene.frame_subframe
    for obj in sequence_objects(scene):
        if time_driver(obj) is not None and time_fcurve(obj) is None:
            show_frame(scene, obj, frame)
    for obj in carriers(scene):
        display.of(obj).update_view(scene, obj, rendering=rendering(), moving=bool(obj.lw_seq.path))


def on_load(_filepath=None, *_args):
    drop_players()
    for shown in display.DISPLAYS:
        shown.forget()


def on_depsgraph_update(scene, depsgraph=None):
    for obj in carriers(scene):
        shown = display.of(obj)
        shown.view_colors(scene, obj, played_time(obj))
        if not rendering():
            shown.update_view(scene, obj)


def on_render_init(scene=None, *_args):
    """render_init: from now on handlers sort for the render camera; sort every carrier for it now (a still
    render runs no frame handler)."""
    import bpy

    _RENDERING[0] = True
    scene = scene if scene is not None and hasattr(scene, "render") else bpy.context.scene
    for obj in carriers(scene):
        display.of(obj).update_view(scene, obj, force=True, rendering=True)


def on_render_end(*_args):
    _RENDERING[0] = False


def poll_views():
    """Timer body: re-sort carriers whose viewport view changed (navigation does not update the depsgraph)."""
    import bpy

    context = bpy.context
    scene = getattr(context, "scene", None)
    if scene is not None and not rendering():
        for obj in carriers(scene):
            display.of(obj).update_view(scene, obj)
    return VIEW_POLL_S


def _settings_class():
    import bpy
    from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

    class LWSequenceSettings(bpy.types.PropertyGroup):
        """Playback settings of an animated Gaussians carrier (Object.lw_seq)."""

        path: StringProperty(name="Sequence", description="The .lw4d sequence folder played on this object",
                             subtype="DIR_PATH")
        time: FloatProperty(name="Time", description="Sequence time in sequence frames; keyframe it to take "
                            "over from the scene frame", default=0.0)
        use_scene_time: BoolProperty(name="Follow Scene Frame", default=True,
                                     description="Time = (frame - start frame) * speed + offset, "
                                     "unless the time is keyframed")
        speed: FloatProperty(name="Speed", description="Sequence frames per scene frame", default=1.0)
        offset: FloatProperty(name="Offset", description="Sequence time at the scene's start frame", default=0.0)
        loop_mode: EnumProperty(
            name="Loop",
            items=(
                ("ONCE", "Once", "Hold the first and last frames outside the sequence"),
                ("LOOP", "Loop", "Repeat; the last frame blends into the first"),
                ("PING_PONG", "Ping-Pong", "Play forwards then backwards"),
            ),
            default="LOOP",
        )
        frame_count: IntProperty(name="Frames", description="Frames in the sequence", min=0)

    return LWSequenceSettings


_CLASSES = []


def register():
    import bpy
    from bpy.app.handlers import persistent

    cls = _settings_class()
    bpy.utils.register_class(cls)
    _CLASSES.append(cls)
    bpy.types.Object.lw_seq = bpy.props.PointerProperty(type=cls)
    for handlers, fn in _handlers():
        persistent(fn)
        if fn not in handlers:
            handlers.append(fn)
    if not bpy.app.background and not bpy.app.timers.is_registered(poll_views):
        bpy.app.timers.register(poll_views, first_interval=VIEW_POLL_S, persistent=True)


def unregister():
    import bpy

    for handlers, fn in _handlers():
        if fn in handlers:
            handlers.remove(fn)
    if bpy.app.timers.is_registered(poll_views):
        bpy.app.timers.unregister(poll_views)
    on_load()
    del bpy.types.Object.lw_seq
    while _CLASSES:
        bpy.utils.unregister_class(_CLASSES.pop())


def _handlers():
    import bpy

    h = bpy.app.handlers
    return ((h.frame_change_pre, on_frame_change), (h.frame_change_post, on_frame_change_post), (h.load_post, on_load),
            (h.depsgraph_update_post, on_depsgraph_update), (h.render_init, on_render_init),
            (h.render_complete, on_render_end), (h.render_cancel, on_render_end))
