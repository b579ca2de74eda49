"""Figure: backend start-up and empty-job round trip as the add-on sees them (headless Blender, bpy wheel).

    .venv-blender/bin/python bench/addon_backend_start.py [--repeat 5]

Installs the extension zip into a sandboxed Blender user folder, then times
  start:      bpy.ops.lw.backend_start() from nothing to CONNECTED (process spawn + imports + ready line + health)
  restart:    bpy.ops.lw.backend_restart()
  job (ops):  bpy.ops.lw.job_run(kind="sleep", seconds=0) blocking, submit -> succeeded
  job (ui):   jobs.submit_job + drain_updates() until on_done ran (worker thread + main-thread drain)
and prints median / min / max in milliseconds.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SANDBOX = Path(tempfile.mkdtemp(prefix="lw-bench-addon-"))
os.environ["BLENDER_USER_RESOURCES"] = str(SANDBOX / "user")
os.environ["XDG_CACHE_HOME"] = str(SANDBOX / "cache")

import bpy

sys.path.insert(0, str(REPO / "scripts"))
import build_extension

MODULE = "bl_ext.user_default.livingworld"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    zip_path = build_extension.build(REPO, SANDBOX / "dist")
    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.backend_python = str(REPO / ".venv" / "bin" / "python")
    prefs.workspace = str(SANDBOX / "workspace")
    import importlib

    jobs = importlib.import_module(MODULE + ".lw_blender.connection.jobs")
    rt = bpy.context.window_manager.lw_runtime
    rows = {"start (operator -> connected)": [], "restart": [], "empty job, blocking (bpy.ops.lw.job_run)": [],
            "empty job, UI path (submit_job + drain_updates)": []}
    for _ in range(a.repeat):
        bpy.ops.lw.backend_stop()
        rows["start (operator -> connected)"].append(timed(bpy.ops.lw.backend_start))
        assert rt.connection == "CONNECTED"
    for _ in range(a.repeat):
        rows["restart"].append(timed(bpy.ops.lw.backend_restart))
    bpy.ops.lw.job_run(kind="sleep", params='{"seconds": 0, "steps": 1}')  # warm-up
    for _ in range(a.repeat):
        rows["empty job, blocking (bpy.ops.lw.job_run)"].append(
            timed(lambda: bpy.ops.lw.job_run(kind="sleep", params='{"seconds": 0, "steps": 1}')))
        assert rt.job_state == "succeeded"

    def ui_job():
        job_id = jobs.submit_job(bpy.context, "sleep", {"seconds": 0, "steps": 1})
        while job_id in jobs.pending_jobs():
            jobs.drain_updates()
            time.sleep(0.001)

    for _ in range(a.repeat):
        rows["empty job, UI path (submit_job + drain_updates)"].append(timed(ui_job))
    bpy.ops.lw.backend_stop()
    print(f"bpy {bpy.app.version_string}, {os.cpu_count()} CPUs, repeat {a.repeat}")
    print(f"| {'what':<50} | median ms | min ms | max ms |")
    print(f"| {'-' * 50} | --------: | -----: | -----: |")
    for name, ms in rows.items():
        print(f"| {name:<50} | {statistics.median(ms):9.0f} | {min(ms):6.0f} | {max(ms):6.0f} |")


if __name__ == "__main__":
    main()
