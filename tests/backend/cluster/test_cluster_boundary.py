"""Ray is optional: without --ray nothing imports it; asked for without it installed, the error says what to do.
Where jobs run on a cluster (placement) is a pure function of the job kind and the cluster's GPUs."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from backend.cluster.tasks import CPU_KINDS, PLANS, placement

ROOT = Path(__file__).resolve().parents[3]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_serve_without_ray_flag_does_not_import_ray(tmp_path):
    res = run_python(f"""
import sys
from backend.cli import build_parser
from backend.server import create_app
args = build_parser().parse_args(["serve", "--workspace", {str(tmp_path / "ws")!r}])
assert args.ray is None
app = create_app(args.workspace, "token")  # every registered job kind, the local worker
assert type(app.state.worker).__name__ == "Worker", type(app.state.worker)
print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
""")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_ray_asked_for_but_not_installed_is_an_error_naming_the_extra(tmp_path):
    res = run_python(f"""
import sys
sys.modules["ray"] = None  # as if ray were not installed
from backend.cli import main
sys.exit(main(["serve", "--workspace", {str(tmp_path / "ws")!r}, "--ray", "auto"]))
""")
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("lw: error: running on a Ray cluster needs the `ray` package")
    assert "livingworld-backend[cluster]" in last


def test_placement_gpu_jobs_cpu_jobs_and_plans():
    train = placement("render_splats", gpus=True)
    assert (train.num_gpus, train.num_cpus, train.max_retries) == (1.0, 1.0, 0)
    assert placement("render_splats", gpus=False).num_gpus == 0.0
    for kind in CPU_KINDS:
        assert placement(kind, gpus=True).num_gpus == 0.0
    plan = placement("moe_train", gpus=True)  # a coordinator: its expert tasks ask for the GPUs
    assert "moe_train" in PLANS and plan.num_cpus == 0.0 and plan.num_gpus == 0.0 and plan.max_retries > 0


def test_an_address_where_nothing_listens_fails_at_once(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = subprocess.run([sys.executable, "-m", "backend.cli", "serve", "--workspace", str(tmp_path / "ws"),
                          "--ray", f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(f"lw: error: nothing answers at the Ray address "
                                                          f"'127.0.0.1:{port}'")
