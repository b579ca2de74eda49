"""Benchmark: 1M Gaussians into Blender (import of a 3DGS PLY) and per-frame playback of a .lw4d, either display.

    .venv-blender/bin/python bench/blender_import_playback.py [--count 1000000] [--degree 3] [--frames 40]
    .venv-blender52/bin/python bench/blender_import_playback.py ...      (the quad display of Blender 4.2-5.2)

The display is the one this Blender gives new carriers: native splat point clouds on 5.3+, quads before.
Every figure is given as wall time and process CPU time (all threads): on the shared 2-core machine the wall
time mostly measures the other processes, the CPU time what the work costs.

Figures (one table):
  import  ``bpy.ops.lw.import_gaussians`` of an INRIA PLY of N Gaussians at SH degree ``--degree`` (the add-on
          reads the file itself: header, one np.fromfile, a strided copy per attribute, foreach_set), then the
          first depsgraph evaluation; median of 3. On 5.3 also Blender's own ``wm.ply_import`` of the same file.
  frame   headless ``scene.frame_set`` (whole sequence frames) of a sequence where every channel of every dynamic
          Gaussian changes each frame, median over the frames: the handler alone (read, scatter, foreach_set) and
          the whole frame_set (handler + evaluation); position, rotation, scale, opacity (what MoE results
          animate) with all Gaussians dynamic, the same plus colour, and the four with half of them dynamic.
          Quads: viewport points and quads, Cycles and EEVEE (drawn in the numpy back-to-front order).
  memory  VmRSS growth over the frames (streaming: pages of played frames are released).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SANDBOX = Path(tempfile.mkdtemp(prefix="lw-bench-blender-"))
os.environ["BLENDER_USER_RESOURCES"] = str(SANDBOX / "user")
os.environ["XDG_CACHE_HOME"] = str(SANDBOX / "cache")

import bpy
import numpy as np

sys.path.insert(0, str(REPO / "scripts"))
import build_extension

ADDON = "bl_ext.user_default.livingworld"
SH_C0 = 0.28209479177387814
CHANNELS = {"position": 3, "opacity": 1, "rotation": 4, "scale": 3, "color": 3}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def install():
    zip_path = build_extension.build(REPO, SANDBOX / "dist")
    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    import importlib

    return importlib.import_module(ADDON)


def random_gaussians(lw, n: int, degree: int):
    """N random Gaussians (decoded arrays) in a 10 m box."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    k = (degree + 1) ** 2
    return lw.lw_blender.splats.data.DecodedGaussians(
        position=rng.uniform(-5, 5, size=(n, 3)).astype(np.float32),
        scale=rng.uniform(0.005, 0.05, size=(n, 3)).astype(np.float32),
        rotation=q / np.linalg.norm(q, axis=1, keepdims=True),
        opacity=rng.uniform(0.2, 1, size=n).astype(np.float32),
        sh=(rng.normal(size=(n, k, 3)) * 0.3).astype(np.float32))


def make_sequence(folder: Path, n: int, m: int, frames: int, channels: tuple[str, ...]) -> Path:
    """A .lw4d (no base.ply: only the backend reads it) with ``channels``, written frame by frame."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    index = np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64) if m < n else np.arange(n, dtype=np.int64)
    np.save(folder / "dynamic_index.npy", index)
    maps = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype="<f4",
                                           shape=(frames, m) + ((w,) if w > 1 else ())) for name, w in CHANNELS.items()
            if name in channels}
    start = rng.uniform(-5, 5, size=(m, 3)).astype(np.float32)
    q = rng.normal(size=(m, 4)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    values = {"position": lambda t: start + 0.01 * t, "opacity": lambda t: 0.5 + 0.4 * np.sin(0.1 * t),
              "rotation": lambda t: q if t % 2 == 0 else -q, "scale": lambda t: 0.01 + 0.0001 * t,
              "color": lambda t: 0.5 + 0.4 * np.cos(0.1 * t)}
    for t in range(frames):
        for name, out in maps.items():
            out[t] = values[name](t)
    for a in maps.values():
        a.flush()
    del maps
    manifest = {"format": "lw4d", "version": 1, "frame_count": frames, "fps": 24.0, "loop": True,
                "coordinate_frame": "blender_z_up_m", "count": n, "dynamic_count": m,
                "channels": {name: "float32" for name in channels}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def timed(fn, *args, **kwargs):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def ms(wall: list[float], cpu: list[float]) -> str:
    return f"{np.median(wall) * 1e3:.1f} ms (CPU {np.median(cpu) * 1e3:.1f} ms)"


def clean():
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    if ADDON not in bpy.context.preferences.addons:
        bpy.ops.preferences.addon_enable(module=ADDON)


def bench_import(lw, n: int, degree: int, work: Path, rows: list):
    ply = lw.lw_blender.splats.ply.write_ply(work / "bench.ply", random_gaussians(lw, n, degree))
    size = ply.stat().st_size / 1e6
    ours, evals = ([], []), ([], [])
    for _ in range(3):
        clean()
        _, wall, cpu = timed(bpy.ops.lw.import_gaussians, filepath=str(ply))
        ours[0].append(wall)
        ours[1].append(cpu)
        _, wall, cpu = timed(bpy.context.evaluated_depsgraph_get)
        evals[0].append(wall)
        evals[1].append(cpu)
    obj = bpy.context.active_object
    label = f"{obj.type}{' ' + obj.data.type if obj.type == 'POINTCLOUD' else ''}"
    rows.append((f"import: lw.import_gaussians, {size:.0f} MB PLY -> {label} (median of 3)", ms(*ours)))
    rows.append(("import: first evaluation after it", ms(*evals)))
    if lw.lw_blender.splats.display.native_available():
        theirs = ([], [])
        for _ in range(3):
            clean()
            _, wall, cpu = timed(bpy.ops.wm.ply_import, filepath=str(ply))
            theirs[0].append(wall)
            theirs[1].append(cpu)
        rows.append(("import: Blender's own wm.ply_import of the same file (reference)", ms(*theirs)))


QUAD_MODES = (  # (label, render engine, viewport points)
    ("Cycles, viewport points", "CYCLES", True),
    ("EEVEE, viewport points", "BLENDER_EEVEE", True),
    ("Cycles, quads", "CYCLES", False),
    ("EEVEE, quads in lw_order", "BLENDER_EEVEE", False),
)


def bench_frames(lw, n: int, m: int, frames: int, work: Path, rows: list, channels: tuple[str, ...]):
    clean()
    label = f"{'all' if m == n else f'{m:,} of {n:,}'} dynamic, {len(channels)} channels"
    seq = make_sequence(work / f"seq_{m}_{len(channels)}.lw4d", n, m, frames, channels)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location = (0, -20, 0)
    cam.rotation_euler = (1.5708, 0, 0)
    splats = lw.lw_blender.splats
    obj = splats.carrier.place(bpy.context, None, "bench", random_gaussians(lw, n, 0), str(seq))
    native = obj.type == "POINTCLOUD"

    def run(engine: str, points: bool | None, handler_only: bool) -> tuple[list[float], list[float]]:
        scene.render.engine = engine
        if points is not None:
            nodes = splats.quads.nodes
            nodes.set_input(obj.modifiers[nodes.MODIFIER_NAME], nodes.POINTS_INPUT, points)
        bpy.context.view_layer.update()  # the depsgraph handler keeps or drops lw_order for the engine
        scene.frame_set(1)
        wall, cpu = [], []
        before = rss_mb()
        for f in range(2, frames + 1):
            c0, t0 = time.process_time(), time.perf_counter()
            if handler_only:
                splats.playback.show_frame(scene, obj, float(f))
            else:
                scene.frame_set(f)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        growth.append(rss_mb() - before)
        return wall, cpu

    growth: list[float] = []
    rows.append((f"frame ({label}): handler, channels read and written", ms(*run("CYCLES", None, True))))
    if native:
        rows.append((f"frame ({label}): frame_set, native splats (any engine)", ms(*run("CYCLES", None, False))))
    else:
        for mode, engine, points in QUAD_MODES:
            rows.append((f"frame ({label}): frame_set, {mode}", ms(*run(engine, points, False))))
    rows.append((f"memory ({label}): largest VmRSS growth over {frames - 1} played frames", f"{max(growth):+.0f} MB"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--degree", type=int, default=3, help="SH degree of the imported PLY")
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    lw = install()
    rows: list[tuple[str, str]] = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lw-bench-data-") as tmp:
        work = Path(tmp)
        bench_import(lw, args.count, args.degree, work, rows)
        four = ("position", "rotation", "scale", "opacity")  # what MoE results animate (the world: 2 of them)
        bench_frames(lw, args.count, args.count, args.frames, work, rows, four)
        bench_frames(lw, args.count, args.count, args.frames, work, rows, (*four, "color"))
        bench_frames(lw, args.count, args.count // 2, args.frames, work, rows, four)
    bpy.ops.preferences.addon_disable(module=ADDON)
    print(f"\nN = {args.count:,} Gaussians, SH degree {args.degree}, {args.frames} frames, bpy {bpy.app.version_string}, "
          f"{os.cpu_count()} cores, load average {load:.1f} before / {os.getloadavg()[0]:.1f} after")
    width = max(len(r[0]) for r in rows)
    print(f"| {'figure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
