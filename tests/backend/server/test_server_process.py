"""The real `lw serve` process, talked to over HTTP with httpx: start-up line, jobs, cancel, kill -9, restart,
signals, --parent-pid; and `lw jobs run`."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from backend.cli import process_alive


def test_serve_announces_a_listening_url_token_and_pid_and_stops_cleanly_on_sigterm(backend_factory, workspace,
                                                                                   wait_job):
    backend = backend_factory(workspace)
    assert backend.pid == backend.proc.pid
    assert backend.url.startswith("http://127.0.0.1:") and not backend.url.endswith(":0")
    assert len(backend.token) >= 32 and Path(backend.workspace) == workspace.resolve()
    assert httpx.get(f"{backend.url}/health").json()["pid"] == backend.pid
    assert httpx.get(f"{backend.url}/jobs").status_code == 401
    with backend.client() as c:
        job_id = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0.1, "steps": 2}}).json()["id"]
        assert wait_job(c, job_id)["state"] == "succeeded"
    t0 = time.monotonic()
    assert backend.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 10
    assert backend.proc.stdout.read() == ""  # exactly one line on stdout


def test_given_token_and_port_are_used(backend_factory, workspace):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = backend_factory(workspace, "--port", str(port), "--token", "my-own-token")
    assert backend.url == f"http://127.0.0.1:{port}" and backend.token == "my-own-token"
    assert httpx.get(f"{backend.url}/kinds", headers={"Authorization": "Bearer my-own-token"}).status_code == 200
    assert backend.stop(signal.SIGINT) == 0


def test_cancel_round_trip_over_http(backend_factory, workspace, wait_job):
    backend = backend_factory(workspace)
    with backend.client() as c:
        job_id = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 600}}).json()["id"]
        wait_job(c, job_id, until=lambda j: j["state"] == "running" and j["progress"] > 0)
        assert c.post(f"/jobs/{job_id}/cancel").json()["cancel_requested"] is True
        job = wait_job(c, job_id)
        assert job["state"] == "cancelled" and 0 < job["progress"] < 1
        failed = wait_job(c, c.post("/jobs", json={"kind": "fail", "params": {"message": "no"}}).json()["id"])
        assert failed["state"] == "failed" and failed["error"]["message"] == "no"


def test_a_backend_killed_mid_job_restarts_on_the_same_workspace_with_the_job_interrupted(backend_factory, workspace,
                                                                                           wait_job):
    first = backend_factory(workspace)
    with first.client() as c:
        done = wait_job(c, c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0, "steps": 1}}).json()["id"])
        job_id = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 60}}).json()["id"]
        wait_job(c, job_id, until=lambda j: j["state"] == "running")
    first.proc.kill()  # SIGKILL: no shutdown code runs
    first.proc.wait(10)

    second = backend_factory(workspace)
    assert second.url != first.url or second.pid != first.pid
    with second.client() as c:
        jobs = {j["id"]: j for j in c.get("/jobs").json()}
        assert jobs[job_id]["state"] == "interrupted" and "submit it again" in jobs[job_id]["message"]
        assert jobs[done["id"]]["state"] == "succeeded"
        again = wait_job(c, c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0, "steps": 1}}).json()["id"])
        assert again["state"] == "succeeded"
    assert second.stop() == 0


def test_serve_exits_when_its_parent_process_dies(backend_factory, workspace):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    backend = backend_factory(workspace, "--parent-pid", str(parent.pid))
    assert httpx.get(f"{backend.url}/health").status_code == 200
    parent.kill()
    parent.wait(10)
    assert not process_alive(parent.pid)
    assert backend.proc.wait(15) == 0
    assert "parent process" in backend.stderr_path.read_text()


def run_lw(*args: str, workspace: Path) -> subprocess.CompletedProcess:
    lw = Path(sys.executable).parent / "lw"  # the console script of the editable install
    command = [str(lw)] if lw.exists() else [sys.executable, "-m", "backend.cli"]
    return subprocess.run([*command, *args, "--workspace", str(workspace)], capture_output=True, text=True,
                          timeout=120)


def test_lw_jobs_run_runs_a_job_inline_and_reports_lw_errors_with_exit_code_2(workspace):
    ok = run_lw("jobs", "run", "sleep", "--params", '{"seconds": 0.02, "steps": 2}', workspace=workspace)
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["artifacts"] == [] and (workspace / "jobs" / result["job_id"]).is_dir()
    assert "step 2/2" in ok.stderr

    failed = run_lw("jobs", "run", "fail", "--params", '{"message": "bad input here"}', workspace=workspace)
    assert failed.returncode == 2 and failed.stderr.strip().endswith("bad input here") and failed.stdout == ""
    for bad in (["jobs", "run", "teleport"], ["jobs", "run", "sleep", "--params", "{nope"],
                ["jobs", "run", "sleep", "--params", '{"seconds": -1}']):
        result = run_lw(*bad, workspace=workspace)
        assert result.returncode == 2 and result.stderr.startswith("lw: error:"), (bad, result.stderr)
        assert "Traceback" not in result.stderr


def test_serve_on_a_port_in_use_is_an_error_with_exit_code_2(workspace):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = run_lw("serve", "--port", str(s.getsockname()[1]), workspace=workspace)
    assert result.returncode == 2 and "cannot listen" in result.stderr and result.stdout == ""


def test_a_second_serve_on_the_same_workspace_exits_2_and_the_first_keeps_its_job(backend_factory, workspace,
                                                                                   wait_job):
    first = backend_factory(workspace)
    with first.client() as c:
        job_id = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 60}}).json()["id"]
        wait_job(c, job_id, until=lambda j: j["state"] == "running")
        second = run_lw("serve", workspace=workspace)
        assert second.returncode == 2 and "another backend" in second.stderr and second.stdout == ""
        assert c.get(f"/jobs/{job_id}").json()["state"] == "running"
    assert first.stop() == 0


def test_the_listening_socket_is_declared_tcp_so_asyncio_disables_nagle():
    import socket

    from backend.cli import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] != 0
    finally:
        sock.close()
