"""The real `lw serve` process, talked to over HTTP with httpx: start-up line, jobs, cancel, kill -9, restart,
signals, --parent-pid, a busy workspace or port; and `lw jobs run`. Each backend start imports every job module
(torch included), so the tests share processes where they can."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from backend.cli import _listen, process_alive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_lw(*args: str, workspace: Path) -> subprocess.CompletedProcess:
    lw = Path(sys.executable).parent / "lw"  # the console script of the editable install
    command = [str(lw)] if lw.exists() else [sys.executable, "-m", "backend.cli"]
    return subprocess.run([*command, *args, "--workspace", str(workspace)], capture_output=True, text=True,
                          timeout=180, check=False)


def test_serve_announces_itself_runs_and_cancels_jobs_and_stops_cleanly_on_sigterm(backend_factory, workspace,
                                                                                   wait_job):
    port = free_port()
    backend = backend_factory(workspace, "--port", str(port), "--token", "my-own-token")
    assert backend.pid == backend.proc.pid and Path(backend.workspace) == workspace.resolve()
    assert backend.url == f"http://127.0.0.1:{port}" and backend.token == "my-own-token"
    assert httpx.get(f"{backend.url}/health").json()["pid"] == backend.pid
    assert httpx.get(f"{backend.url}/jobs").status_code == 401
    with backend.client() as c:
        done = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0.1, "steps": 2}}).json()["id"]
        assert wait_job(c, done)["state"] == "succeeded"

        long = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 600}}).json()["id"]
        wait_job(c, long, until=lambda j: j["state"] == "running" and j["progress"] > 0)
        assert c.post(f"/jobs/{long}/cancel").json()["cancel_requested"] is True
        cancelled = wait_job(c, long)
        assert cancelled["state"] == "cancelled" and 0 < cancelled["progress"] < 1

        failed = wait_job(c, c.post("/jobs", json={"kind": "fail", "params": {"message": "no"}}).json()["id"])
        assert failed["state"] == "failed" and failed["error"] == {"type": "InvalidInput", "message": "no",
                                                                   "traceback": None}
    t0 = time.monotonic()
    assert backend.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 10
    assert backend.proc.stdout.read() == ""  # exactly one line on stdout


def test_killed_mid_job_then_restarted_the_job_is_interrupted_and_a_second_serve_is_refused(backend_factory,
                                                                                            workspace, wait_job):
    first = backend_factory(workspace)
    assert first.url.startswith("http://127.0.0.1:") and len(first.token) >= 32
    with first.client() as c:
        done = wait_job(c, c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0, "steps": 1}}).json()["id"])
        job_id = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 60}}).json()["id"]
        wait_job(c, job_id, until=lambda j: j["state"] == "running")
    first.proc.kill()  # SIGKILL: no shutdown code runs
    first.proc.wait(10)

    second = backend_factory(workspace)
    with second.client() as c:
        jobs = {j["id"]: j for j in c.get("/jobs").json()}
        assert jobs[job_id]["state"] == "interrupted" and "submit it again" in jobs[job_id]["message"]
        assert jobs[done["id"]]["state"] == "succeeded"
        running = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 60}}).json()["id"]
        wait_job(c, running, until=lambda j: j["state"] == "running")

        third = run_lw("serve", workspace=workspace)
        assert third.returncode == 2 and "another backend" in third.stderr and third.stdout == ""
        assert c.get(f"/jobs/{running}").json()["state"] == "running"
    assert second.stop(signal.SIGINT) == 0
    with httpx.Client() as c:  # the job that was running at the clean stop is recorded as interrupted
        restarted = backend_factory(workspace)
        record = c.get(f"{restarted.url}/jobs/{running}", headers={"Authorization": f"Bearer {restarted.token}"})
        assert record.json()["state"] == "interrupted"


def test_serve_exits_when_its_parent_process_dies(backend_factory, workspace):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    backend = backend_factory(workspace, "--parent-pid", str(parent.pid))
    assert httpx.get(f"{backend.url}/health").status_code == 200
    parent.kill()
    parent.wait(10)
    assert not process_alive(parent.pid)
    assert backend.proc.wait(15) == 0
    assert "parent process" in backend.stderr_path.read_text()


def test_serve_on_a_port_in_use_is_an_error_with_exit_code_2(workspace):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = run_lw("serve", "--port", str(s.getsockname()[1]), workspace=workspace)
    assert result.returncode == 2 and "cannot listen" in result.stderr and result.stdout == ""


def test_lw_jobs_run_runs_a_job_inline_and_reports_lw_errors_with_exit_code_2(workspace):
    ok = run_lw("jobs", "run", "sleep", "--params", '{"seconds": 0.02, "steps": 2}', workspace=workspace)
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["artifacts"] == [] and (workspace / "jobs" / result["job_id"]).is_dir()
    assert "step 2/2" in ok.stderr

    failed = run_lw("jobs", "run", "fail", "--params", '{"message": "bad input here"}', workspace=workspace)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.strip().splitlines()[-1] == "lw: error: bad input here"


def test_the_listening_socket_is_declared_tcp_so_asyncio_disables_nagle():
    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] != 0
    finally:
        sock.close()
