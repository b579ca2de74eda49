"""The spine from headless Blender: installed extension -> bpy.ops.lw.* -> real backend process -> job states."""

import json
import os
import signal
import threading
import time

import bpy
import pytest


def _rt():
    return bpy.context.window_manager.lw_runtime


def _wait_state(client, job_id, states, timeout=20.0):
    deadline = time.monotonic() + timeout
    while (rec := client.job(job_id)).state not in states:
        assert time.monotonic() < deadline, f"job {job_id} stayed {rec.state}"
        time.sleep(0.02)
    return rec


def test_backend_start_operator_connects_to_a_live_local_backend(backend, workspace):
    rt = _rt()
    assert rt.connection == "CONNECTED"
    assert rt.url == backend.url and rt.url.startswith("http://127.0.0.1:")
    assert not rt.remote
    os.kill(rt.backend_pid, 0)  # the process exists
    assert backend.health()["status"] == "ok"
    assert backend.local_workspace.resolve() == workspace.resolve()
    # idempotent: a second start reuses the same process
    assert bpy.ops.lw.backend_start() == {"FINISHED"}
    assert _rt().url == backend.url


def test_sleep_job_through_operator_succeeds_blocking(backend):
    assert bpy.ops.lw.job_run(kind="sleep", params=json.dumps({"seconds": 0.2, "steps": 4})) == {"FINISHED"}
    rt = _rt()
    assert rt.job_kind == "sleep" and rt.job_state == "succeeded"
    assert rt.progress == pytest.approx(1.0)
    assert backend.job(rt.job_id).state == "succeeded"
    assert rt.last_error == ""


def test_submit_job_and_drain_updates_follow_progress_on_the_main_thread(lw, backend, drain):
    jobs = lw.lw_blender.connection.jobs
    done = []
    seen = []

    def on_done(result):
        done.append((result, threading.current_thread() is threading.main_thread()))

    job_id = jobs.submit_job(bpy.context, "sleep", {"seconds": 2.0, "steps": 20}, on_done)
    assert bpy.app.timers.is_registered(jobs.drain_updates)
    drain(job_id, on_each=lambda: seen.append((_rt().job_state, _rt().progress)))
    (result, on_main), = done
    assert on_main
    assert result.ok and result.state == "succeeded" and result.kind == "sleep" and result.id == job_id
    assert any(s == "running" and 0.0 < p < 1.0 for s, p in seen), seen
    assert _rt().job_state == "succeeded" and _rt().progress == pytest.approx(1.0)
    assert jobs.drain_updates() is None  # nothing pending: the timer would stop


def test_failing_job_reports_its_message_and_the_addon_stays_usable(lw, backend):
    with pytest.raises(RuntimeError, match="the sky fell"):
        bpy.ops.lw.job_run(kind="fail", params=json.dumps({"message": "the sky fell"}))
    rt = _rt()
    assert rt.job_state == "failed"
    assert "the sky fell" in rt.last_error and "InvalidInput" in rt.last_error
    err = backend.job(rt.job_id).error
    assert err.type == "InvalidInput" and err.message == "the sky fell"

    with pytest.raises(lw.lw_blender.connection.jobs.JobFailed) as info:
        lw.lw_blender.connection.jobs.run_job_blocking(bpy.context, "fail", {"message": "again"})
    assert info.value.result.state == "failed" and info.value.result.error_type == "InvalidInput"

    assert bpy.ops.lw.job_run(kind="sleep", params='{"seconds": 0.05, "steps": 1}') == {"FINISHED"}
    assert rt.job_state == "succeeded"


@pytest.mark.parametrize("blocking", [True, False])
def test_a_failed_optional_chain_link_hands_its_result_on_and_the_action_ends_without_error(lw, backend, blocking):
    jobs = lw.lw_blender.connection.jobs
    chain = jobs.Chain(RuntimeError)
    seen = []

    def measured(context, result):
        seen.append((result.kind, result.ok, result.error_message))

    def done(context, result):
        seen.append((result.kind, result.ok, result.error_message))
        return jobs.optional("fail", {"message": "not measured"}, measured)

    chain.run(bpy.context, "Optional", ("sleep", {"seconds": 0.05, "steps": 1}, done), blocking)
    deadline = time.monotonic() + 30.0
    while chain.busy:  # the UI path: the links follow each other from drain_updates
        assert time.monotonic() < deadline, "the chain did not end"
        jobs.drain_updates()
        time.sleep(0.02)
    assert seen == [("sleep", True, ""), ("fail", False, "not measured")]
    # the same job as a required link fails the action
    seen.clear()
    if blocking:
        with pytest.raises(jobs.JobFailed, match="not measured"):
            chain.run(bpy.context, "Required", ("fail", {"message": "not measured"}, measured), True)
    else:
        chain.run(bpy.context, "Required", ("fail", {"message": "not measured"}, measured), False)
        while chain.busy:
            assert time.monotonic() < deadline, "the chain did not end"
            jobs.drain_updates()
            time.sleep(0.02)
        assert "not measured" in _rt().last_error
    assert seen == [] and chain.busy == ""


def test_unknown_kind_and_bad_params_are_reported_with_the_backend_reason(backend):
    with pytest.raises(RuntimeError, match="no_such_kind"):
        bpy.ops.lw.job_run(kind="no_such_kind", params="{}")
    with pytest.raises(RuntimeError, match="seconds"):
        bpy.ops.lw.job_run(kind="sleep", params='{"seconds": -1}')
    with pytest.raises(RuntimeError, match="not valid JSON"):
        bpy.ops.lw.job_run(kind="sleep", params="{seconds")


def test_cancel_round_trip(lw, backend, drain):
    jobs = lw.lw_blender.connection.jobs
    done = []
    job_id = jobs.submit_job(bpy.context, "sleep", {"seconds": 20.0, "steps": 200}, done.append)
    _wait_state(backend, job_id, {"running"})
    assert bpy.ops.lw.job_cancel() == {"FINISHED"}
    drain(job_id, timeout=10.0)
    assert done[0].state == "cancelled" and not done[0].ok
    assert _rt().job_state == "cancelled"
    assert backend.job(job_id).state == "cancelled"


def test_backend_killed_mid_job_is_reported_and_restart_shows_the_job_interrupted(lw, backend, drain):
    jobs = lw.lw_blender.connection.jobs
    done = []
    job_id = jobs.submit_job(bpy.context, "sleep", {"seconds": 30.0, "steps": 300}, done.append)
    _wait_state(backend, job_id, {"running"})
    old_pid = _rt().backend_pid
    os.kill(old_pid, signal.SIGKILL)
    drain(job_id, timeout=15.0)

    rt = _rt()
    assert done[0].state == "interrupted" and done[0].error_type == "BackendUnavailable"
    assert "backend stopped unexpectedly" in rt.last_error
    assert rt.connection == "ERROR" and rt.job_state == "interrupted"

    assert bpy.ops.lw.backend_restart() == {"FINISHED"}
    assert rt.connection == "CONNECTED" and rt.backend_pid not in (0, old_pid)
    client = jobs.ensure_backend(bpy.context)
    assert client.job(job_id).state == "interrupted"  # the new backend read the job store
    assert rt.job_id == job_id and rt.job_state == "interrupted"
    assert bpy.ops.lw.job_run(kind="sleep", params='{"seconds": 0.05, "steps": 1}') == {"FINISHED"}


def test_blocking_job_sees_the_backend_die(lw, backend):
    jobs = lw.lw_blender.connection.jobs
    pid = _rt().backend_pid

    def kill_when_running():  # a plain HTTP client on a thread: the main thread is blocked in the job
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if any(r.state == "running" and r.kind == "sleep" for r in backend.jobs()):
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    with pytest.raises(jobs.JobFailed, match="backend stopped unexpectedly") as info:
        jobs.run_job_blocking(bpy.context, "sleep", {"seconds": 30.0, "steps": 300})
    killer.join()
    assert info.value.result.state == "interrupted"
    assert "backend stopped unexpectedly" in _rt().last_error
    assert bpy.ops.lw.backend_start() == {"FINISHED"}  # ensure_backend starts a new one
    assert _rt().backend_pid != pid


def test_run_job_in_background_mode_blocks_and_calls_on_done(lw, backend):
    jobs = lw.lw_blender.connection.jobs
    assert bpy.app.background
    seen = []
    result = jobs.run_job(bpy.context, "sleep", {"seconds": 0.05, "steps": 2}, seen.append)
    assert result.ok and seen == [result]
    assert result.workspace == backend.local_workspace


def test_a_raising_on_done_is_reported_and_other_jobs_still_finish(lw, backend, drain):
    jobs = lw.lw_blender.connection.jobs
    done = []

    def broken(result):
        raise ValueError("scene data did not fit")

    first = jobs.submit_job(bpy.context, "sleep", {"seconds": 0.05, "steps": 1}, broken)
    _wait_state(backend, first, {"succeeded"})
    second = jobs.submit_job(bpy.context, "sleep", {"seconds": 0.3, "steps": 3}, done.append)
    drain(first)
    assert "applying the result failed: ValueError: scene data did not fit" in _rt().last_error
    drain(second)
    assert done[0].id == second and done[0].ok


def test_blocking_timeout_cancels_the_job(lw, backend):
    jobs = lw.lw_blender.connection.jobs
    with pytest.raises(jobs.JobFailed, match="timed out") as info:
        jobs.run_job_blocking(bpy.context, "sleep", {"seconds": 20.0, "steps": 200}, timeout=0.3)
    assert _wait_state(backend, info.value.result.id, {"cancelled"}).state == "cancelled"


# Kept last in this file so that the tests above share one backend process.
def test_backend_stop_operator_ends_the_process(lw, backend):
    proc = lw.lw_blender.connection.process.current()
    assert bpy.ops.lw.backend_stop() == {"FINISHED"}
    assert proc.popen.poll() is not None
    assert _rt().connection == "DISCONNECTED"
