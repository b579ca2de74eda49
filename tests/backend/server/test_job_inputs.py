"""Job parameters a careless user or an attacker sends: refused at submit or in one line, before work starts."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import InvalidInput
from backend.gaussians import Gaussians
from backend.io.ply import write_ply
from backend.jobs import registry, run_inline

CAMERA = {"matrix_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]], "lens": 50, "sensor_width": 36,
          "sensor_height": 24, "sensor_fit": "AUTO", "shift_x": 0, "shift_y": 0, "clip_start": 0.1, "clip_end": 100,
          "resolution_x": 32, "resolution_y": 24, "resolution_percentage": 100, "pixel_aspect_x": 1,
          "pixel_aspect_y": 1}


@pytest.mark.parametrize("kind,params", [
    ("world_bake", {"world": "w", "device": "tpu"}),
    ("motion_update", {"world": "w", "device": "cuda; rm -rf /"}),
    ("world_new", {"image": "p.png", "models": {"device": "gpu0"}}),
    ("world_metrics", {"world": "w", "device": "cuda:01"}),  # torch.device raised mid-job (schemathesis found it)
])
def test_a_device_torch_cannot_take_is_refused_at_submit(make_client, tmp_path, kind, params):
    with make_client(tmp_path / "ws", kinds={kind: registry()[kind]}) as c:
        r = c.post("/jobs", json={"kind": kind, "params": params})
        assert r.status_code == 422 and "device" in r.json()["error"]["message"], r.text
        fixed = {**params, "models": {"device": "cpu"}} if "models" in params else {**params, "device": "cuda:0"}
        ok = c.post("/jobs", json={"kind": kind, "params": fixed})
        assert ok.status_code == 201, ok.text


def test_a_render_larger_than_8k_is_refused_before_anything_is_allocated(tmp_path):
    ws = tmp_path / "ws"
    n = 3
    write_ply(ws / "g.ply", Gaussians(means=np.zeros((n, 3), np.float32), quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
                                      log_scales=np.full((n, 3), -2.0, np.float32), opacity_logits=np.zeros(n, np.float32),
                                      sh=np.zeros((n, 1, 3), np.float32)))
    huge = {**CAMERA, "resolution_x": 100_000, "resolution_y": 100_000}
    with pytest.raises(InvalidInput, match="renders 100000x100000 pixels; frames must have 1 to 67,108,864"):
        run_inline("render_splats", {"source": "g.ply", "cameras": [huge], "frames": [0]}, ws, "r")
    arts = run_inline("render_splats", {"source": "g.ply", "cameras": [CAMERA], "frames": [0], "out_dir": ".."},
                      ws, "r2")
    assert arts == ["jobs/r2/render/frame_0000.png"]  # ".." names no folder outside the job's own


@pytest.mark.parametrize("out,expect", [
    ("~0", "home folder of an unknown user"),  # found by the schemathesis run: was a 500
    ("~no_such_user_here/x.lw4d", "home folder of an unknown user"),
    ("a\x00b.lw4d", "contains a NUL character"),
    ("x" * 5000, "cannot be used"),
    ("d/" * 3000 + "x.lw4d", "cannot be used"),
])
def test_odd_output_paths_are_400_not_500(make_client, tmp_path, out, expect):
    with make_client(tmp_path / "ws", kinds={"world_bake": registry()["world_bake"]}) as c:
        r = c.post("/jobs", json={"kind": "world_bake", "params": {"world": "w", "out": out}})
    assert r.status_code == 400 and expect in r.json()["error"]["message"], r.text
    assert len(r.json()["error"]["message"]) < 500


def test_a_path_with_a_line_break_keeps_the_error_on_one_line(make_client, tmp_path, wait_job):
    """Found by the slow schemathesis run: a NotFound naming such a path was two lines."""
    with make_client(tmp_path / "ws", kinds={"import_gaussians": registry()["import_gaussians"]}) as c:
        job = c.post("/jobs", json={"kind": "import_gaussians", "params": {"path": "a\nb.ply"}}).json()
        done = wait_job(c, job["id"])
    assert done["state"] == "failed" and "a\\nb.ply does not exist" in done["message"]
    assert "\n" not in done["message"] and "\n" not in done["error"]["message"]
