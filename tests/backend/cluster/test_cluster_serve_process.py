"""A real `lw serve` process given a cluster's address ($LW_RAY, as --ray) joins that running cluster (the
session's), says so on /health, runs jobs there and stops cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]


def test_lw_serve_with_ray_address_runs_jobs_on_the_cluster(ray_cluster, tmp_path):
    stderr = open(tmp_path / "serve.stderr", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--workspace", str(tmp_path / "ws")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "LW_RAY": ray_cluster})
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        line = lines.get(timeout=90)
        assert line, (tmp_path / "serve.stderr").read_text()
        info = json.loads(line)
        with httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {info['token']}"},
                          timeout=10) as client:
            assert client.get("/health").json()["dispatch"] == "ray"
            job = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0.5, "steps": 5}}).json()
            deadline = time.monotonic() + 90
            while job["state"] not in ("succeeded", "failed", "cancelled", "interrupted"):
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
                job = client.get(f"/jobs/{job['id']}").json()
            assert job["state"] == "succeeded" and job["progress"] == 1.0, job
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stderr.close()
