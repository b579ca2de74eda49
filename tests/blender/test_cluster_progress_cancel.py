"""A backend that dispatches its jobs to a Ray cluster (`lw serve --ray local`, as on a studio's GPU server): the
add-on connects to it as a remote backend and sees progress and cancel exactly as with the local worker."""

import json
import queue
import subprocess
import threading
import time

import bpy
import pytest


def _rt():
    return bpy.context.window_manager.lw_runtime


@pytest.fixture
def ray_backend(tmp_path, backend_python, addon):
    bpy.ops.lw.backend_stop()
    stderr = open(tmp_path / "serve.stderr", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([str(backend_python), "-m", "backend.cli", "serve", "--port", "0", "--ray", "local",
                             "--workspace", str(tmp_path / "ws"), "--token", "s3cret"],
                            stdout=subprocess.PIPE, stderr=stderr, cwd=tmp_path, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        line = lines.get(timeout=120)
        assert line, (tmp_path / "serve.stderr").read_text()[-2000:]
        yield json.loads(line)
    finally:
        bpy.ops.lw.backend_stop()
        proc.terminate()
        proc.wait(60)
        stderr.close()


def test_progress_and_cancel_reach_blender_from_a_ray_backend(lw, prefs, ray_backend, drain):
    prefs.backend_url, prefs.backend_token = ray_backend["url"], "s3cret"
    assert bpy.ops.lw.backend_start() == {"FINISHED"}
    assert _rt().connection == "CONNECTED" and _rt().remote
    jobs = lw.lw_blender.connection.jobs
    client = jobs.ensure_backend(bpy.context)
    assert client.health()["dispatch"] == "ray"

    seen, done = [], []
    job_id = jobs.submit_job(bpy.context, "sleep", {"seconds": 3.0, "steps": 30}, done.append)
    drain(job_id, 120, on_each=lambda: seen.append((_rt().job_state, _rt().progress, _rt().message)))
    assert done[0].ok and done[0].state == "succeeded"
    assert any(s == "running" and 0.0 < p < 1.0 for s, p, _ in seen), seen[-5:]

    done.clear()
    job_id = jobs.submit_job(bpy.context, "sleep", {"seconds": 60.0, "steps": 600}, done.append)
    deadline = time.monotonic() + 120
    while not (_rt().job_state == "running" and _rt().progress > 0.0):
        assert time.monotonic() < deadline, (_rt().job_state, _rt().progress)
        jobs.drain_updates()
        time.sleep(0.02)
    assert bpy.ops.lw.job_cancel() == {"FINISHED"}
    drain(job_id, 60)
    assert done[0].state == "cancelled" and _rt().job_state == "cancelled"
    assert client.job(job_id).state == "cancelled"
