"""The MoE jobs on a run folder: a crafted checkpoint never runs code (the job entry points moe_export, moe_router and
the cluster's step probe refuse it with a one-line error; issue 21, point 1), an export outside the workspace
succeeds without a traceback (point 4), and a second router run replaces only its own bake (point 2)."""

from __future__ import annotations

import builtins
import shutil

import pytest
import torch

from backend.errors import InvalidInput
from backend.io.lw4d import read_sequence
from backend.jobs import run_inline


class _Planted:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if anything unpickles it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _plant(path, marker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"expert": "deformation", "step": 1, "model": _Planted(marker)}, path)


def test_the_planted_file_would_run_code_when_unpickled(tmp_path):
    """The planted checkpoint is live: an unrestricted load creates the marker (so the tests below can fail)."""
    marker = tmp_path / "ran"
    _plant(tmp_path / "checkpoint.pt", marker)
    torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind,planted", [
    ("moe_export", "deformation/checkpoint.pt"),
    ("moe_router", "keyframe/checkpoint.pt"),
    ("moe_router", "mixture/mixture.pt"),  # a resumed mixture
])
def test_jobs_refuse_a_planted_checkpoint_without_running_it(half_run, tmp_path, kind, planted):
    ws = tmp_path / "ws"
    run = ws / "run"
    shutil.copytree(half_run, run)
    marker = tmp_path / "ran"
    _plant(run / planted, marker)
    params = {"run": "run", "iterations": 2, "bake": False} if kind == "moe_router" else {"run": "run"}
    with pytest.raises(InvalidInput) as err:
        run_inline(kind, params, ws)
    msg = str(err.value)
    assert str(run / planted) in msg and "never unpickled" in msg and "\n" not in msg
    assert not marker.exists()


def test_cluster_step_probe_refuses_a_planted_checkpoint(tmp_path):
    pytest.importorskip("ray")
    from backend.cluster.moe import checkpoint_step

    marker = tmp_path / "ran"
    _plant(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(InvalidInput, match="never unpickled"):
        checkpoint_step(tmp_path / "checkpoint.pt")
    assert not marker.exists()


def test_export_outside_the_workspace_succeeds_and_lists_no_artifact(half_run, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(half_run, ws / "run")
    out = tmp_path / "elsewhere" / "deformation.lw4d"
    assert run_inline("moe_export", {"run": "run", "out": str(out)}, ws) == []
    assert read_sequence(out).frame_count == 2
    with pytest.raises(InvalidInput, match="pass replace=true"):
        run_inline("moe_export", {"run": "run", "out": str(out)}, ws)
    assert run_inline("moe_export", {"run": "run", "out": str(out), "replace": True}, ws) == []


def test_a_second_router_run_replaces_its_own_bake(half_run, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(half_run, ws / "run")
    for _ in range(2):
        arts = run_inline("moe_router", {"run": "run", "iterations": 2}, ws)
        assert "run/mixture/mixture.lw4d/manifest.json" in arts
    assert read_sequence(ws / "run" / "mixture" / "mixture.lw4d").frame_count == 2


@pytest.mark.parametrize("times,frames,expect", [
    ([0.0, 1.0], [0, -1], ("frames.1", "greater than or equal to 0")),
    ([0.0, 1.0], [3, 3], ("", "frame numbers [3] appear more than once")),
    ([0.0, float("nan")], [0, 1], ("times.1", "finite number")),
    ([float("inf"), 1.0], [0, 1], ("times.0", "finite number")),
])
def test_moe_render_refuses_negative_or_repeated_frames_and_non_finite_times(times, frames, expect):
    """A negative frame number names no file, a repeated one overwrites another camera's frame, a NaN or infinite
    time is no dataset frame: each is one validation error naming the field, before the job runs."""
    from pydantic import ValidationError

    from backend.moe.jobs_mixture import MoeRenderParams

    with pytest.raises(ValidationError) as err:
        MoeRenderParams.model_validate({"run": "r", "cameras": [{}, {}], "times": times, "frames": frames})
    (e,) = err.value.errors()
    assert ".".join(map(str, e["loc"])) == expect[0] and expect[1] in e["msg"] and "\n" not in e["msg"]
    MoeRenderParams.model_validate({"run": "r", "cameras": [{}, {}], "times": [0.0, 0.5], "frames": [0, 7]})
