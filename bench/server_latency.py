"""Backend start-up time and empty-job round-trip latency.

Start-up: spawn `lw serve` on a fresh workspace; time until its JSON line is on stdout, and until GET /health
answers 200 (median of N runs); for reference, the same for a bare `import torch` (the job modules import it)
and `import backend.server`. Round trip: one running backend; submit `sleep` with seconds=0, steps=1 and poll
GET /jobs/{id} (no pause between polls) until it is `succeeded` (median of M jobs); GET /health alone for
reference. Prints a Markdown table.

    .venv/bin/python bench/server_latency.py [--starts 10] [--jobs 50]
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def lw_serve_command(workspace: Path) -> list[str]:
    lw = Path(sys.executable).parent / "lw"
    base = [str(lw)] if lw.exists() else [sys.executable, "-m", "backend.cli"]
    return [*base, "serve", "--workspace", str(workspace)]


def start(workspace: Path) -> tuple[subprocess.Popen, dict, float, float]:
    """(process, announced info, seconds to the JSON line, seconds to the first 200 from /health)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(lw_serve_command(workspace), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    info = json.loads(proc.stdout.readline())
    t_line = time.perf_counter() - t0
    while True:
        try:
            if httpx.get(f"{info['url']}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
    return proc, info, t_line, time.perf_counter() - t0


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lines, healths = [], []
        for i in range(args.starts):
            proc, _, t_line, t_health = start(Path(tmp) / f"ws{i}")
            lines.append(t_line)
            healths.append(t_health)
            stop(proc)
        rows.append(("start-up: spawn -> JSON line", lines))
        rows.append(("start-up: spawn -> /health 200", healths))
        # What the job modules' imports cost on their own (the registry is imported before the line is printed).
        for label, code in (("reference: python -c 'import torch'", "import torch"),
                            ("reference: python -c 'import backend.server'", "import backend.server")):
            times = []
            for _ in range(args.starts):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
                times.append(time.perf_counter() - t0)
            rows.append((label, times))

        proc, info, _, _ = start(Path(tmp) / "ws-jobs")
        try:
            with httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {info['token']}"}) as c:
                health = []
                for _ in range(args.jobs):
                    t0 = time.perf_counter()
                    c.get("/health").raise_for_status()
                    health.append(time.perf_counter() - t0)
                trips, polls = [], []
                for _ in range(args.jobs):
                    t0 = time.perf_counter()
                    job = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0, "steps": 1}}).json()
                    n = 0
                    while job["state"] not in ("succeeded", "failed", "cancelled", "interrupted"):
                        job = c.get(f"/jobs/{job['id']}").json()
                        n += 1
                    assert job["state"] == "succeeded", job
                    trips.append(time.perf_counter() - t0)
                    polls.append(n)
            rows.append(("GET /health round trip", health))
            rows.append(("empty job: submit -> succeeded", trips))
        finally:
            stop(proc)

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(f"polls per empty job: median {statistics.median(polls):.0f}")
    print()
    print("| measure | n | median (ms) | p90 (ms) | min (ms) |")
    print("|---|---|---|---|---|")
    for name, values in rows:
        ms = [v * 1000 for v in values]
        print(f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {percentile(ms, 90):.1f} | {min(ms):.1f} |")


if __name__ == "__main__":
    main()
