"""Starting the backend with wrong settings gives errors a user can act on; remote mode downloads artifacts."""

import json
import subprocess
import sys

import bpy
import pytest


@pytest.fixture
def stopped(addon):
    bpy.ops.lw.backend_stop()
    yield
    bpy.ops.lw.backend_stop()


def test_missing_backend_python_names_the_preference_to_set(prefs, stopped):
    prefs.backend_python = "/nonexistent/python"
    with pytest.raises(RuntimeError, match="Preferences > Add-ons > LivingWorld"):
        bpy.ops.lw.backend_start()
    rt = bpy.context.window_manager.lw_runtime
    assert rt.connection == "ERROR" and "/nonexistent/python" in rt.last_error


def test_python_without_the_backend_package_is_explained(prefs, stopped):
    prefs.backend_python = sys.executable  # Blender's test Python: no `backend` package installed
    with pytest.raises(RuntimeError, match="no LivingWorld `backend` package"):
        bpy.ops.lw.backend_start()


@pytest.fixture
def remote_backend(tmp_path, backend_python):
    """A backend this Blender did not start (as on a GPU server), with a file in its workspace."""
    ws = tmp_path / "remote_ws"
    (ws / "jobs" / "j1").mkdir(parents=True)
    (ws / "jobs" / "j1" / "result.bin").write_bytes(bytes(range(256)) * 100)
    proc = subprocess.Popen([str(backend_python), "-m", "backend.cli", "serve", "--port", "0", "--workspace", str(ws),
                             "--token", "s3cret"], stdout=subprocess.PIPE, cwd=ws, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        yield info
    finally:
        proc.terminate()
        proc.wait(10)


def test_remote_backend_connects_with_token_and_downloads_artifacts_once(lw, prefs, stopped, remote_backend):
    prefs.backend_url = remote_backend["url"]
    prefs.backend_token = "wrong"
    with pytest.raises(RuntimeError, match="Unauthorized"):
        bpy.ops.lw.job_run(kind="sleep", params='{"seconds": 0, "steps": 1}')
    prefs.backend_token = "s3cret"
    assert bpy.ops.lw.backend_start() == {"FINISHED"}
    rt = bpy.context.window_manager.lw_runtime
    assert rt.connection == "CONNECTED" and rt.remote and rt.backend_pid == 0
    assert lw.lw_blender.connection.process.current() is None  # nothing started locally

    result = lw.lw_blender.connection.jobs.run_job_blocking(bpy.context, "sleep", {"seconds": 0.05, "steps": 1})
    local = result.path("jobs/j1/result.bin")
    assert result.workspace in local.parents  # the cache, not the remote workspace
    assert local.read_bytes() == bytes(range(256)) * 100
    mtime = local.stat().st_mtime_ns
    assert result.path("jobs/j1/result.bin").stat().st_mtime_ns == mtime  # cached, not fetched again
    client = lw.lw_blender.connection.jobs.ensure_backend(bpy.context)
    with pytest.raises(lw.lw_blender.connection.client.BackendError, match="not a relative path"):
        client.artifact_path("../outside.txt")
    with pytest.raises(lw.lw_blender.connection.client.BackendError) as info:
        client.artifact_path("jobs/j1/missing.bin")
    assert info.value.status == 404


def _drain_start(jobs, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while bpy.context.window_manager.lw_runtime.connection == "STARTING":
        assert time.monotonic() < deadline, "backend start did not finish"
        jobs.drain_updates()
        time.sleep(0.02)


def test_ui_mode_start_runs_on_a_worker_and_drain_applies_the_outcome(lw, prefs, stopped):
    jobs = lw.lw_blender.connection.jobs
    rt = bpy.context.window_manager.lw_runtime
    jobs.start_backend_async(bpy.context)
    assert rt.connection == "STARTING"  # returned before the backend is up
    assert bpy.app.timers.is_registered(jobs.drain_updates)
    _drain_start(jobs)
    assert rt.connection == "CONNECTED" and rt.backend_pid > 0
    assert jobs.ensure_backend(bpy.context).url == rt.url  # the started backend is the one in use

    bpy.ops.lw.backend_stop()
    prefs.backend_python = "/nonexistent/python"
    jobs.start_backend_async(bpy.context)
    _drain_start(jobs)
    assert rt.connection == "ERROR" and "Preferences > Add-ons > LivingWorld" in rt.last_error
