"""Benchmark: 1M Gaussians into Blender (import to a displayable object) and per-frame playback of a .lw4d.

    .venv-blender/bin/python bench/blender_import_playback.py [--count 1000000] [--frames 100] [--backend]

Figures (one table):
  import  decoded folder -> carrier + GN splat modifier (lw_blender.splats.carrier.load_decoded), then the first
          depsgraph evaluation (instances built); with --backend also bpy.ops.lw.import_gaussians on a 3DGS PLY
          (backend job + load) through the installed extension and a local backend.
          The import uses the default display (viewport points from 500k Gaussians on); the first evaluation
          is also timed with quads forced.
  frame   headless scene.frame_set of a sequence where every Gaussian moves (position, opacity, rotation,
          scale), median over the frames: the handler alone (attribute writes) and the whole frame_set (handler
          + Geometry Nodes display) per display path: viewport points or oriented quads, under Cycles (no
          draw order) or EEVEE (quads drawn through the numpy back-to-front order, lw_blender.splats.quads.sorting); also half
          the Gaussians dynamic. Wall time and process CPU time (all threads) are both given: on a shared
          2-core machine the wall time mostly measures the other processes.
  memory  VmRSS growth over the frames (streaming: pages of played frames are released).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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


def make_decoded(folder: Path, n: int, sequence: Path | None) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    color = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
    arrays = {
        "position": rng.uniform(-5, 5, size=(n, 3)).astype(np.float32),
        "scale": rng.uniform(0.005, 0.05, size=(n, 3)).astype(np.float32),
        "rotation": q / np.linalg.norm(q, axis=1, keepdims=True),
        "opacity": rng.uniform(0.2, 1, size=n).astype(np.float32),
        "color": color,
        "sh": ((color - 0.5) / 0.28209479177387814)[:, None, :].astype(np.float32),
    }
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(a, dtype="<f4"))
    (folder / "manifest.json").write_text(json.dumps({"version": 1, "count": n, "sh_degree": 0, "source": "bench",
                                                      "sequence": None if sequence is None else str(sequence)}))
    return folder


def make_sequence(folder: Path, n: int, m: int, frames: int) -> Path:
    """A .lw4d (no base.ply: only the backend reads it) with all four channels, streamed frame by frame."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    index = np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64) if m < n else np.arange(n, dtype=np.int64)
    np.save(folder / "dynamic_index.npy", index)
    widths = {"position": 3, "opacity": 1, "rotation": 4, "scale": 3}
    maps = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype="<f4",
                                           shape=(frames, m) + ((w,) if w > 1 else ())) for name, w in widths.items()}
    start = rng.uniform(-5, 5, size=(m, 3)).astype(np.float32)
    q = np.tile(np.array([1, 0, 0, 0], np.float32), (m, 1))
    for t in range(frames):
        maps["position"][t] = start + 0.01 * t
        maps["opacity"][t] = 0.5 + 0.4 * np.sin(0.1 * t)
        maps["rotation"][t] = q
        maps["scale"][t] = 0.01 + 0.0001 * t
    for a in maps.values():
        a.flush()
    del maps
    manifest = {"format": "lw4d", "version": 1, "frame_count": frames, "fps": 24.0, "loop": True,
                "coordinate_frame": "blender_z_up_m", "count": n, "dynamic_count": m,
                "channels": {name: "float32" for name in widths}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def ms(wall: list[float], cpu: list[float]) -> str:
    return f"{np.median(wall) * 1e3:.1f} ms (CPU {np.median(cpu) * 1e3:.1f} ms)"


def clean():
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    if ADDON not in bpy.context.preferences.addons:
        bpy.ops.preferences.addon_enable(module=ADDON)


def bench_import(lw, n: int, work: Path, rows: list):
    folder = make_decoded(work / "decoded", n, None)
    loads, totals, quads = [], [], []
    for _ in range(3):
        clean()
        obj, t_load = timed(lw.lw_blender.splats.carrier.load_decoded, bpy.context, folder, "bench")
        _, t_eval = timed(bpy.context.evaluated_depsgraph_get)
        loads.append(t_load)
        totals.append(t_load + t_eval)
        nodes = lw.lw_blender.splats.quads.nodes
        nodes.set_input(obj.modifiers[nodes.MODIFIER_NAME], nodes.POINTS_INPUT, False)
        _, t_quads = timed(bpy.context.view_layer.update)
        quads.append(t_quads)
    rows.append(("import: decoded folder -> carrier + GN modifier (median of 3)", f"{np.median(loads) * 1e3:.0f} ms"))
    rows.append(("import: + first evaluation (default display)", f"{np.median(totals) * 1e3:.0f} ms"))
    if n >= lw.lw_blender.splats.quads.nodes.POINTS_DEFAULT_COUNT:  # else the default display is the quads already
        rows.append(("import: evaluation with quads forced instead", f"{np.median(quads) * 1e3:.0f} ms"))


def bench_backend_import(lw, n: int, work: Path, rows: list):
    clean()
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.backend_python = str(REPO / ".venv" / "bin" / "python")
    prefs.workspace = str(work / "workspace")
    ply = work / "bench.ply"
    script = ("import sys, numpy as np; from backend.gaussians import Gaussians; from backend.io.ply import write_ply;"
              "n=int(sys.argv[2]); r=np.random.default_rng(0); q=r.normal(size=(n,4)).astype(np.float32);"
              "write_ply(sys.argv[1], Gaussians(means=r.uniform(-5,5,(n,3)).astype(np.float32), quats=q,"
              "log_scales=r.uniform(-5,-3,(n,3)).astype(np.float32), opacity_logits=r.normal(size=n).astype(np.float32),"
              "sh=r.normal(size=(n,1,3)).astype(np.float32)))")
    subprocess.run([prefs.backend_python, "-c", script, str(ply), str(n)], cwd=REPO, check=True)
    bpy.ops.lw.backend_start()
    _, t = timed(lambda: bpy.ops.lw.import_gaussians(filepath=str(ply)))
    rows.append(("import: bpy.ops.lw.import_gaussians(.ply) via backend job", f"{t * 1e3:.0f} ms"))
    bpy.ops.lw.backend_stop()


MODES = (  # (label, render engine, viewport points)
    ("Cycles, viewport points", "CYCLES", True),
    ("EEVEE, viewport points", "BLENDER_EEVEE", True),
    ("Cycles, quads", "CYCLES", False),
    ("EEVEE, quads in lw_order", "BLENDER_EEVEE", False),
)


def bench_frames(lw, n: int, m: int, frames: int, work: Path, rows: list, label: str):
    clean()
    seq = make_sequence(work / f"seq_{m}.lw4d", n, m, frames)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location = (0, -20, 0)
    cam.rotation_euler = (1.5708, 0, 0)
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, make_decoded(work / f"dec_{m}", n, seq), "bench")
    playback, nodes = lw.lw_blender.splats.playback, lw.lw_blender.splats.quads.nodes
    modifier = obj.modifiers[nodes.MODIFIER_NAME]

    def run(mode: str, engine: str, points: bool, handler_only: bool) -> tuple[list[float], list[float]]:
        scene.render.engine = engine
        nodes.set_input(modifier, nodes.POINTS_INPUT, points)
        bpy.context.view_layer.update()  # the depsgraph handler keeps or drops lw_order for the engine
        scene.frame_set(1)
        wall, cpu = [], []
        rss[mode] = [rss_mb()]
        for f in range(2, frames + 1):
            c0, t0 = time.process_time(), time.perf_counter()
            if handler_only:
                playback.show_frame(scene, obj, float(f))
            else:
                scene.frame_set(f)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        rss[mode].append(rss_mb())
        return wall, cpu

    rss = {}
    handler = run("handler", "CYCLES", True, True)
    rows.append((f"frame ({label}): handler, attribute writes", ms(*handler)))
    for mode, engine, points in MODES:
        result = run(mode, engine, points, False)
        rows.append((f"frame ({label}): frame_set, {mode}", ms(*result)))
        if engine == "BLENDER_EEVEE" and not points:
            assert "lw_order" in obj.data.attributes and nodes.get_input(modifier, nodes.SORT_INPUT), "no order kept"
    growth = max(after - before for before, after in rss.values())
    rows.append((f"memory ({label}): largest VmRSS growth over {frames - 1} played frames", f"{growth:+.0f} MB"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--backend", action="store_true", help="also import a PLY through the backend job")
    args = parser.parse_args()
    lw = install()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="lw-bench-data-") as tmp:
        work = Path(tmp)
        bench_import(lw, args.count, work, rows)
        if args.backend:
            bench_backend_import(lw, args.count, work, rows)
        bench_frames(lw, args.count, args.count, args.frames, work, rows, "all dynamic")
        bench_frames(lw, args.count, args.count // 2, args.frames, work, rows, "half dynamic")
    bpy.ops.preferences.addon_disable(module=ADDON)
    print(f"\nN = {args.count:,} Gaussians, {args.frames} frames, bpy {bpy.app.version_string}, {os.cpu_count()} cores")
    width = max(len(r[0]) for r in rows)
    print(f"| {'figure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
