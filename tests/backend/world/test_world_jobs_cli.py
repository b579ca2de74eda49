"""The world_* job kinds (run inline) and the `lw world` CLI on the sample image with the built-in providers."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np

from backend.io.ply import read_ply
from backend.jobs import registry, run_inline
from backend.render.cameras import opencv_to_blender
from backend.world import store
from backend.world.samples.make_landscape import SAMPLE_PATH

BUILTIN = {"depth": "builtin", "segmentation": "builtin", "outpaint": "builtin", "device": "cpu"}


def test_world_jobs_new_expand_undo_return_ply_preview_and_step(tmp_path, turn):
    assert {"world_new", "world_expand", "world_undo"} <= set(registry())
    ws = tmp_path / "ws"
    arts = run_inline("world_new", {"image": str(SAMPLE_PATH), "out": "worlds/demo", "resolution": 64,
                                    "models": BUILTIN}, ws, job_id="j1")
    assert sorted(a.rsplit("/", 1)[1] for a in arts) == ["gaussians.ply", "preview.png", "step.json"]
    step = json.loads((ws / arts[2]).read_text())
    assert step["world"] == str((ws / "worlds" / "demo").resolve()) and step["step"] == 0
    assert step["camera"]["resolution_x"] == 64 and len(read_ply(ws / arts[0])) == 64 * 64
    assert cv2.imread(str(ws / arts[1])).shape == (64, 64, 3)
    cam = turn(store.load_world(ws / "worlds/demo").current.opencv_camera(), 30)
    spec = opencv_to_blender(cam).to_dict()
    spec["resolution_x"], spec["resolution_y"] = 640, 640  # another size: scaled to the world's 64 px
    arts = run_inline("world_expand", {"world": "worlds/demo", "camera": spec}, ws, job_id="j2")
    step = json.loads((ws / arts[2]).read_text())
    assert step["step"] == 1 and step["stats"]["new_gaussians"] > 0
    assert len(read_ply(ws / arts[0])) == 64 * 64 + step["stats"]["new_gaussians"]
    arts = run_inline("world_undo", {"world": "worlds/demo"}, ws, job_id="j3")
    assert json.loads((ws / arts[2]).read_text())["steps"] == 1
    assert len(read_ply(ws / arts[0])) == 64 * 64


def test_lw_world_cli_new_expand_undo(tmp_path, turn):
    out = tmp_path / "w"
    common = [sys.executable, "-m", "backend.cli", "world"]
    r = subprocess.run(common + ["new", str(SAMPLE_PATH), "--out", str(out), "--resolution", "48",
                                 "--depth-model", "builtin", "--segmentation-model", "builtin",
                                 "--outpaint-model", "builtin"], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["step"] == 0 and info["gaussians"] == 48 * 48
    cam = turn(store.load_world(out).current.opencv_camera(), 30)
    (tmp_path / "cam.json").write_text(json.dumps(opencv_to_blender(cam).to_dict()))
    r = subprocess.run(common + ["expand", str(out), "--camera", str(tmp_path / "cam.json")], check=False, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 1
    r = subprocess.run(common + ["undo", str(out)], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 1
    r = subprocess.run(common + ["undo", str(out)], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "nothing to undo" in r.stderr
    assert np.load(store.load_world(out).file("depth.npy")).shape == (48, 48)


def test_lw_world_new_says_which_built_in_fallback_replaced_which_model_and_how_to_fetch_it(tmp_path):
    """With the default "auto" models and an empty Hugging Face cache the built-in providers run, and the output
    says so in plain words with the README's download command; chosen "builtin" providers are not flagged."""
    import os

    env = {**os.environ, "HF_HOME": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "backend.cli", "world", "new", str(SAMPLE_PATH), "--out",
                        str(tmp_path / "w"), "--resolution", "48", "--device", "cpu"], check=False,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["providers"] == {"segmentation": "heuristic", "depth": "builtin:landscape"}
    notes = info["fallbacks"]
    assert len(notes) == 2
    assert any("`.venv/bin/hf download depth-anything/Depth-Anything-V2-Small-hf`" in n for n in notes)
    assert any("`.venv/bin/hf download nvidia/segformer-b0-finetuned-ade-512-512`" in n for n in notes)
    assert r.stderr.count("note: ") == 2 and "built-in fallback" in r.stderr
    ws = tmp_path / "ws"
    arts = run_inline("world_new", {"image": str(SAMPLE_PATH), "out": "worlds/b", "resolution": 48,
                                    "models": BUILTIN}, ws, job_id="j1")
    step = json.loads((ws / next(a for a in arts if a.endswith("step.json"))).read_text())
    assert step["stats"]["fallbacks"] == []  # chosen, not a fallback


def test_cancel_during_the_preview_render_stops_the_job_before_the_render_ends_and_writes_no_world(
        tmp_path, monkeypatch):
    """The CPU render of a new world reports progress every half second from a worker thread, so a cancel asked
    while it runs ends the job at the next report, without waiting for the render (held here until the job has
    ended: no clock in the test); nothing is written."""
    import threading

    from backend.errors import JobCancelled
    from backend.jobs import JobContext, run_job
    from backend.world import pipeline

    spec = registry()["world_new"]
    ws = tmp_path / "ws"
    reports: list[str] = []
    released, finished = threading.Event(), threading.Event()
    render = pipeline._render

    def held_render(gaussians, camera):
        released.wait(30)  # a render that ends only after the job (or, if cancel waited for it, after 30 s)
        finished.set()
        return render(gaussians, camera)

    monkeypatch.setattr(pipeline, "_render", held_render)

    def on_progress(fraction, message):
        reports.append(message)
        if message.startswith("rendering the preview"):
            ctx.cancel_event.set()

    ctx = JobContext(workspace=ws, job_dir=ws / "jobs" / "c1", job_id="c1", on_progress=on_progress)
    params = spec.params.model_validate({"image": str(SAMPLE_PATH), "out": "worlds/c", "resolution": 64,
                                         "models": BUILTIN})
    try:
        run_job(spec.fn, ctx, params)
    except JobCancelled:
        render_still_running = not finished.is_set()
    else:
        raise AssertionError(f"the job was not cancelled; progress: {reports}")
    finally:
        released.set()
    assert render_still_running and any(r.startswith("rendering the preview") for r in reports)
    assert not (ws / "worlds" / "c" / "world.json").exists()
