"""Fixtures for the backend service: an in-process app (FastAPI TestClient) and a real `lw serve` process."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.jobs import registry
from backend.server import create_app

REPO = Path(__file__).resolve().parents[3]
TOKEN = "test-token-0123456789"
FINISHED = {"succeeded", "failed", "cancelled", "interrupted"}


@pytest.fixture
def token():
    return TOKEN


@pytest.fixture
def builtin_kinds():
    """The job kinds of backend.server.builtin_jobs (what these tests exercise; others test their own)."""
    return {name: spec for name, spec in registry().items() if name in ("sleep", "fail")}


@pytest.fixture
def workspace(tmp_path):
    return tmp_path / "workspace"


@pytest.fixture
def make_client(builtin_kinds):
    """``make_client(workspace, kinds=builtin, token=TOKEN, **create_app_kwargs)``: a TestClient context manager
    (entering it runs the app's lifespan, i.e. the job worker) that sends ``token``."""

    def make(workspace, kinds=None, token=TOKEN, **kwargs):
        app = create_app(workspace, TOKEN, kinds=builtin_kinds if kinds is None else kinds, **kwargs)
        return TestClient(app, headers={} if token is None else {"Authorization": f"Bearer {token}"})

    return make


@pytest.fixture
def client(make_client, workspace):
    """A TestClient that sends the right token, with the app's lifespan (job worker) running."""
    with make_client(workspace) as c:
        yield c


@pytest.fixture
def wait_job():
    return wait_for_job


def wait_for_job(client, job_id: str, until=lambda job: job["state"] in FINISHED, timeout: float = 20.0) -> dict:
    """Poll GET /jobs/{id} until ``until(job)``; returns the job record."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job did not reach the expected state in {timeout} s: {job}")
        time.sleep(0.01)


@dataclass
class Backend:
    """A running `lw serve` process and what it announced on its JSON line."""

    proc: subprocess.Popen
    url: str
    token: str
    pid: int
    workspace: str
    stderr_path: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10.0,
                            **kwargs)

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def lw_command() -> list[str]:
    return [sys.executable, "-m", "backend.cli"]


def start_backend(workspace: Path, *args: str, timeout: float = 60.0) -> Backend:
    """Start `lw serve` on ``workspace`` and read its one JSON line."""
    workspace.mkdir(parents=True, exist_ok=True)
    stderr_path = workspace.parent / f"serve-{time.monotonic_ns()}.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([*lw_command(), "serve", "--workspace", str(workspace), *args], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"lw serve printed nothing in {timeout} s; stderr:\n{stderr_path.read_text()}")
    if not line:
        proc.wait(10)
        raise AssertionError(f"lw serve exited ({proc.returncode}) without its JSON line; stderr:\n"
                             f"{stderr_path.read_text()}")
    info = json.loads(line)
    return Backend(proc, info["url"], info["token"], info["pid"], info["workspace"], stderr_path)


@pytest.fixture
def backend_factory():
    """Start real backends; every one still running at the end is killed."""
    started: list[Backend] = []

    def start(workspace: Path, *args: str) -> Backend:
        backend = start_backend(workspace, *args)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        if backend.proc.poll() is None:
            backend.proc.kill()
            backend.proc.wait(10)


@pytest.fixture(scope="module")
def live_backend(tmp_path_factory):
    """One `lw serve` process shared by a test module; stopped with SIGTERM at the end."""
    backend = start_backend(tmp_path_factory.mktemp("live") / "workspace")
    yield backend
    backend.stop()
