"""The backend never outlives Blender: a normal exit stops it (atexit), a killed Blender makes it exit
(``--parent-pid``). Each case runs its own Blender (bpy) in a subprocess with the extension installed."""

import os
import signal
import subprocess
import sys
import time

import pytest

_BLENDER = r'''
import atexit, os, sys, time
import bpy

def _after_addon_atexit():  # registered first, so it runs after the add-on's handler (LIFO)
    pid = bpy.context.window_manager.lw_runtime.backend_pid
    try:
        os.waitpid(pid, os.WNOHANG)  # reaped already by the add-on's stop() -> ChildProcessError
        print("BACKEND_AT_EXIT running", flush=True)
    except ChildProcessError:
        print("BACKEND_AT_EXIT stopped", flush=True)

atexit.register(_after_addon_atexit)
bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
prefs = bpy.context.preferences.addons["bl_ext.user_default.livingworld"].preferences
prefs.backend_python, prefs.workspace = sys.argv[2], sys.argv[3]
bpy.ops.lw.backend_start()
print("BACKEND_PID", bpy.context.window_manager.lw_runtime.backend_pid, flush=True)
if sys.argv[4] == "hang":
    time.sleep(120)
'''


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie (our grandchild reparented to init, not yet reaped) also counts as gone
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _blender(extension_zip, backend_python, tmp_path, mode):
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.Popen([sys.executable, "-c", _BLENDER, str(extension_zip), str(backend_python),
                             str(tmp_path / "ws"), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _backend_pid(proc) -> int:
    for line in proc.stdout:
        if line.startswith("BACKEND_PID"):
            return int(line.split()[1])
    pytest.fail(f"Blender subprocess printed no backend pid: {proc.stderr.read()[-2000:]}")


def test_normal_blender_exit_stops_the_backend(extension_zip, backend_python, tmp_path):
    proc = _blender(extension_zip, backend_python, tmp_path, "exit")
    pid = _backend_pid(proc)
    assert pid > 0
    out, err = proc.communicate(timeout=60)
    assert "BACKEND_AT_EXIT stopped" in out, out + err[-2000:]
    assert _gone(pid, 10.0)


def test_killed_blender_leaves_no_backend_behind(extension_zip, backend_python, tmp_path):
    proc = _blender(extension_zip, backend_python, tmp_path, "hang")
    pid = _backend_pid(proc)
    os.kill(pid, 0)  # running while Blender runs
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert _gone(pid, 15.0)  # the backend watches --parent-pid
