"""MoE-GS in Blender through the installed extension and a real backend: train (experts, router, pruning,
distillation, evaluation) -> metrics + preview in the scene, every importable model with its own held-out score;
import the baked mixture, an expert or the distilled student -> a carrier that plays, the frame range and the
held-out camera; the true mixture rendered by the backend along the camera's path -> an image strip; bad folders;
cancel mid-train.

The dataset is the generator's tiny preset (4 cameras x 6 frames, 96 x 72), made once per session; training runs
3 steps per expert at half resolution, so every backend job takes seconds on a CPU. Held-out camera conversions
are also checked without a backend on hand-made N3V and Technicolor cameras.
"""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

REPO = Path(__file__).resolve().parents[2]
TRAIN = {"experts": {"deformation", "trajectory", "embedding"}, "iterations": 3, "downsample": 2.0, "router": True,
         "router_iterations": 3, "prune": True, "prune_fraction": 0.6, "distill": "trajectory", "distill_iterations": 2,
         "router_views": 1, "gate": "PARAM", "joint": True, "frame_start": 1, "expert_bias": True, "router_kind": "VOLUME_PIXEL"}
_RUN: dict = {}  # the run trained once per module (by the first test that needs it)


@pytest.fixture(scope="session")
def moe_dataset(tmp_path_factory) -> Path:
    """The generator's tiny N3V dataset, rendered by Blender in a separate process (one Blender per process)."""
    out = tmp_path_factory.mktemp("moe_dataset") / "tiny"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--out", str(out),
                          "--preset", "tiny"], capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, f"dataset generation failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return out


@pytest.fixture
def scene(clean_scene, backend):
    return clean_scene


def _rt():
    return bpy.context.window_manager.lw_runtime


def _train(dataset: Path) -> dict:
    assert bpy.ops.lw.moe_train(directory=str(dataset), **TRAIN) == {"FINISHED"}
    s = bpy.context.scene.lw.moe
    _RUN.update(run=s.run, run_dir=s.run_dir)
    return _RUN


@pytest.fixture
def trained(scene, moe_dataset) -> dict:
    """{"run", "run_dir"} of the module's trained run (trained here if no test did yet), in a clean scene."""
    if not _RUN:
        _train(moe_dataset)
        bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    return _RUN


def _positions(obj) -> np.ndarray:
    out = np.empty(len(obj.data.attributes["position"].data) * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", out)
    return out.reshape(-1, 3)


def _pixels(image) -> np.ndarray:
    w, h = image.size
    px = np.empty(w * h * image.channels, np.float32)
    image.pixels.foreach_get(px)
    return px.reshape(h, w, image.channels)


def test_train_stores_run_metrics_and_preview(scene, moe_dataset):
    _train(moe_dataset)
    s = scene.lw.moe
    run_dir = Path(s.run_dir)
    assert run_dir.is_dir() and (run_dir / "run.json").is_file()
    assert (run_dir / "mixture" / "mixture.lw4d" / "manifest.json").is_file()
    assert s.dataset == str(moe_dataset.resolve()) and s.trained == "deformation,trajectory,embedding"
    assert s.held_out == "cam00" and s.has_mixture
    kinds = [m.kind for m in s.metrics]
    assert kinds == ["expert", "expert", "expert", "moe", "pruned", "baked", "distilled", "finetuned"]
    report = json.loads((run_dir / "report.json").read_text())
    # one training camera kept from the experts for the router (the tiny rig: cam00 held out, cam01-03 training)
    assert len(json.loads((run_dir / "run.json").read_text())["router_views"]) == 1
    assert json.loads((run_dir / "run.json").read_text())["frames"] == 5  # frames 1-5 of the tiny dataset's 6
    mixture = json.loads((run_dir / "mixture" / "report.json").read_text())
    assert mixture["router"]["router"]["kind"] == "volume_pixel" and mixture["router"]["joint"] is True  # as asked
    assert mixture["router"]["router"]["expert_bias"] is False  # the volume router's option: not sent for this kind
    assert mixture["router"]["router"]["temperature"] == 0.01  # the paper's recipe
    for m in s.metrics:
        values = (m.psnr, m.ssim, m.fps, m.size_mb)
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), (m.name, values)
        assert 3.0 < m.psnr < 60.0 and -1.0 <= m.ssim <= 1.0 and m.fps > 0 and m.size_mb > 0 and m.gaussians > 0
    by_name = {m.name: m for m in s.metrics}
    for name in ("deformation", "embedding"):  # the fourth family (E-D3DGS) trains and scores like the others
        assert by_name[name].psnr == pytest.approx(report["experts"][name]["psnr"], abs=1e-4)
    assert by_name["MoE (render only)"].psnr == pytest.approx(mixture["moe"]["psnr"], abs=1e-4)
    assert by_name["MoE pruned (render only)"].gaussians == mixture["pruned"]["after"] < by_name["MoE (render only)"].gaussians
    pruned = mixture["pruned"]  # the panel's Prune Fraction reached the job: at least 60 % went, then a joint fine-tune
    assert pruned["fraction"] == pytest.approx(0.6) and pruned["joint"] is True
    assert pruned["before"] - pruned["after"] >= 0.6 * pruned["before"] - 1
    # the baked cloud Import brings is scored as it is, and it is not the per-pixel mixture's score
    baked = by_name["MoE baked cloud"]
    assert baked.psnr == pytest.approx(mixture["baked"]["psnr"], abs=1e-4) and baked.psnr != by_name["MoE (render only)"].psnr
    assert baked.gaussians == json.loads((run_dir / "mixture" / "mixture.lw4d" / "manifest.json").read_text())["count"]
    assert by_name["trajectory distilled"].kind == "distilled"
    importable = {"MIXTURE": baked.psnr, "DISTILLED": by_name["trajectory distilled"].psnr,
                  **{m.name: m.psnr for m in s.metrics if m.kind == "expert"}}
    assert s.import_expert == max(importable, key=importable.get)  # Import starts on the best importable model
    assert s.best.startswith("Best importable: ") and "true MoE" in s.best and "render only" in s.best
    image = bpy.data.images["LW MoE Preview"]
    assert image.packed_file is not None
    px = _pixels(image)
    assert tuple(image.size) == (px.shape[1], px.shape[0]) and px.shape[0] > 36 and px.shape[1] > 3 * 48
    assert px[..., :3].std() > 0.02  # a picture, not a flat fill
    assert _rt().job_kind == "moe_eval" and _rt().job_state == "succeeded" and not _rt().last_error
    assert hasattr(bpy.types, "VIEW3D_PT_lw_moe")  # the panel that draws all of this is registered


def test_import_mixture_plays_with_frame_range_and_held_out_camera(trained):
    scene = bpy.context.scene
    assert bpy.ops.lw.moe_import(directory=trained["run_dir"], expert="MIXTURE") == {"FINISHED"}
    obj = bpy.context.active_object
    manifest = json.loads((Path(trained["run_dir"]) / "mixture" / "mixture.lw4d" / "manifest.json").read_text())
    assert obj.name.endswith("mixture") and len(obj.data.attributes["position"].data) == manifest["count"]
    assert obj.lw_seq.frame_count == manifest["frame_count"] == 5  # the run trained on frames 1-5
    assert (scene.frame_start, scene.frame_end) == (1, 5) and scene.render.fps == 30
    scene.frame_set(1)
    first = _positions(obj)
    scene.frame_set(5)
    last = _positions(obj)
    assert np.isfinite(first).all() and np.abs(last - first).max() > 1e-6  # the carrier plays
    scene.frame_set(1)
    np.testing.assert_array_equal(_positions(obj), first)
    # the held-out camera is the generator's cam00: on the arc's centre (0, -4.2, 1.3), 35 mm, aimed at the target
    cam = scene.camera
    assert cam is not None and cam.name == "LW MoE Held-out Camera"
    assert scene.lw.moe.import_note == "held-out camera cam00"
    np.testing.assert_allclose(cam.matrix_world.translation, (0.0, -4.2, 1.3), atol=1e-4)
    assert cam.data.lens == pytest.approx(35.0, abs=1e-3)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (96, 72)
    target = world_to_camera_view(scene, cam, Vector((0.0, 0.0, 0.55)))
    assert target.x == pytest.approx(0.5, abs=1e-4) and target.y == pytest.approx(0.5, abs=1e-4) and target.z > 0


def test_import_without_a_model_brings_the_best_scored_one(trained, lw, tmp_path):
    """The operator's default (and the console's ``bpy.ops.lw.moe_import()``): the importable model with the best
    held-out PSNR, read from the run's own reports in a scene that never trained it; a run with no scores says so."""
    moe = lw.lw_blender.moe
    run_dir = Path(trained["run_dir"])
    assert bpy.context.scene.lw.moe.run == ""  # a clean scene: the scores come from the run folder
    rows = moe.metric_rows(json.loads((run_dir / "report.json").read_text()),
                           json.loads((run_dir / "mixture" / "report.json").read_text()))
    best = max((r for r in rows if r["kind"] in moe.IMPORTABLE), key=lambda r: r["psnr"])
    assert bpy.ops.lw.moe_import(directory=str(run_dir), camera=False, frames=3) == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.name.endswith({"baked": "mixture", "distilled": "distilled"}.get(best["kind"], best["name"]))
    unscored = tmp_path / "unscored"
    unscored.mkdir()
    (unscored / "run.json").write_text((run_dir / "run.json").read_text())
    objects = len(bpy.data.objects)
    with pytest.raises(RuntimeError, match="no held-out scores yet"):
        bpy.ops.lw.moe_import(directory=str(unscored))
    assert len(bpy.data.objects) == objects


def test_import_one_expert_bakes_it_through_moe_export_on_the_ui_path(trained, lw):
    """The UI path: moe_export -> import_gaussians are submitted one after the other; the scene changes once."""
    moe, jobs = lw.lw_blender.moe, lw.lw_blender.connection.jobs
    scene = bpy.context.scene
    assert moe.import_run(bpy.context, trained["run_dir"], "trajectory", frames=4, camera=False,
                          blocking=False) is None
    assert moe.busy() == "Import MoE trajectory" and len(bpy.data.objects) == 0
    deadline = time.monotonic() + 120
    while moe.busy():
        assert time.monotonic() < deadline, "the import chain did not end"
        jobs.drain_updates()
        time.sleep(0.02)
    assert _rt().job_kind == "import_gaussians" and _rt().job_state == "succeeded"
    obj = bpy.context.active_object
    assert obj.name.endswith("trajectory") and obj.lw_seq.frame_count == 4
    assert scene.frame_end - scene.frame_start == 3 and scene.camera is None
    scene.frame_set(scene.frame_start)
    a = _positions(obj)
    scene.frame_set(scene.frame_end)
    assert np.abs(_positions(obj) - a).max() > 1e-6
    # an expert the run did not train
    with pytest.raises(RuntimeError, match="not in the run"):
        bpy.ops.lw.moe_import(directory=trained["run_dir"], expert="keyframe")


def test_bad_directories_and_options_report_and_leave_the_scene_unchanged(scene, lw, moe_dataset, tmp_path):
    before = (len(bpy.data.objects), len(bpy.data.images), scene.lw.moe.run, len(scene.lw.moe.metrics))
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.lw.moe_train(directory=str(tmp_path / "missing"), iterations=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="not a multi-view video dataset"):
        bpy.ops.lw.moe_train(directory=str(tmp_path / "empty"), iterations=2)
    with pytest.raises(RuntimeError, match="two or more experts"):
        bpy.ops.lw.moe_train(directory=str(moe_dataset), experts={"keyframe"}, router=True, iterations=2)
    with pytest.raises(RuntimeError, match="turn the router on"):
        bpy.ops.lw.moe_train(directory=str(moe_dataset), router=False, router_views=1, iterations=2)
    with pytest.raises(RuntimeError, match="not among"):
        bpy.ops.lw.moe_train(directory=str(moe_dataset), experts={"keyframe", "trajectory"}, distill="deformation")
    with pytest.raises(RuntimeError, match=r"Frame End \(2\) must be after Frame Start \(3\)"):
        bpy.ops.lw.moe_train(directory=str(moe_dataset), frame_start=3, frame_end=2, iterations=2)
    with pytest.raises(lw.lw_blender.moe.MoeError, match="gate must be one of"):  # the console API's check
        lw.lw_blender.moe.train(bpy.context, str(moe_dataset), gate="hash")
    with pytest.raises(lw.lw_blender.moe.MoeError, match="Prune Fraction must be"):
        lw.lw_blender.moe.train(bpy.context, str(moe_dataset), prune=True, prune_fraction=1.0)
    with pytest.raises(RuntimeError, match="not a MoE-GS run folder"):
        bpy.ops.lw.moe_import(directory=str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="no trained run yet"):
        bpy.ops.lw.moe_import()
    # a folder that passes the add-on's check but that the backend cannot read: its reason comes back
    broken = tmp_path / "broken"
    broken.mkdir()
    np.save(broken / "poses_bounds.npy", np.zeros((3, 17)))
    (broken / "cam00.mp4").write_bytes(b"not a video")
    with pytest.raises(RuntimeError, match="would leave the experts no camera"):  # the backend's check
        bpy.ops.lw.moe_train(directory=str(moe_dataset), experts={"keyframe", "trajectory"}, router_views=3,
                             iterations=2)
    with pytest.raises(RuntimeError, match="not an LLFF poses_bounds file"):
        bpy.ops.lw.moe_train(directory=str(broken), experts={"trajectory"}, router=False, iterations=2)
    assert _rt().job_kind == "moe_train" and _rt().job_state == "failed"
    assert (len(bpy.data.objects), len(bpy.data.images), scene.lw.moe.run, len(scene.lw.moe.metrics)) == before
    assert not lw.lw_blender.moe.busy() and bpy.ops.lw.moe_train.poll()


def test_cancel_mid_train_ends_the_chain_and_the_addon_stays_usable(scene, lw, moe_dataset):
    moe, jobs = lw.lw_blender.moe, lw.lw_blender.connection.jobs
    moe.train(bpy.context, str(moe_dataset), ["deformation", "trajectory"], iterations=20000, downsample=4.0,
              router=True, router_iterations=3, blocking=False)
    assert moe.busy() == "Train MoE" and not bpy.ops.lw.moe_train.poll()
    deadline = time.monotonic() + 120
    while not (_rt().job_state == "running" and _rt().progress > 0):  # training steps are under way
        assert time.monotonic() < deadline, f"training did not start: {_rt().job_state} {_rt().message}"
        jobs.drain_updates()
        time.sleep(0.05)
    job_id = _rt().job_id
    assert _rt().job_kind == "moe_train"
    assert bpy.ops.lw.job_cancel() == {"FINISHED"}
    while moe.busy():
        assert time.monotonic() < deadline, "the cancelled chain did not end"
        jobs.drain_updates()
        time.sleep(0.05)
    assert _rt().job_id == job_id and _rt().job_state == "cancelled"
    assert not jobs.pending_jobs()  # no router / eval job was started after the cancel
    s = scene.lw.moe
    assert not s.run and not len(s.metrics) and "LW MoE Preview" not in bpy.data.images
    # usable: a job runs, and MoE operators are available again
    assert bpy.ops.lw.job_run(kind="sleep", params=json.dumps({"seconds": 0.05, "steps": 1})) == {"FINISHED"}
    assert _rt().job_state == "succeeded" and bpy.ops.lw.moe_train.poll()


def test_import_distilled_student_brings_the_scored_model(trained):
    assert bpy.ops.lw.moe_import(directory=trained["run_dir"], expert="DISTILLED", camera=False) == {"FINISHED"}
    obj = bpy.context.active_object
    mixture = json.loads((Path(trained["run_dir"]) / "mixture" / "report.json").read_text())
    assert obj.name.endswith("distilled") and len(obj.data.attributes["position"].data) == mixture["distilled"]["num_gaussians"]
    assert obj.lw_seq.frame_count == 5


def test_render_true_mixture_along_the_camera_path_is_an_image_strip(trained):
    scene = bpy.context.scene
    assert bpy.ops.lw.moe_import(directory=trained["run_dir"], expert="trajectory") == {"FINISHED"}  # camera, range
    cam = scene.camera
    cam.location.x += 0.3  # a path of its own: two keys, so every frame is a different view
    cam.keyframe_insert("location", frame=scene.frame_start)
    cam.location.x -= 0.6
    cam.keyframe_insert("location", frame=scene.frame_end)
    assert bpy.ops.lw.moe_render(directory=trained["run_dir"]) == {"FINISHED"}
    strip = scene.sequence_editor.strips["MoE mixture render (LW MoE Held-out Camera)"]
    assert strip.type == "IMAGE" and len(strip.elements) == scene.frame_end - scene.frame_start + 1 == 5
    assert strip.frame_final_start == scene.frame_start
    assert "true per-pixel mixture" in scene.lw.moe.render_note and "backend" in scene.lw.moe.render_note
    folder = Path(bpy.path.abspath(strip.directory))
    frames = []
    for element in strip.elements:
        image = bpy.data.images.load(str(folder / element.filename))
        frames.append(_pixels(image))
        assert tuple(image.size) == (scene.render.resolution_x, scene.render.resolution_y)
    assert all(f[..., :3].std() > 0.02 for f in frames)  # pictures, not flat fills
    assert np.abs(frames[0] - frames[-1]).max() > 0.05  # the camera moved and time went on
    with pytest.raises(RuntimeError, match="not a MoE-GS run folder"):
        bpy.ops.lw.moe_render(directory=str(Path(trained["run_dir"]).parent))


def test_mixture_render_with_a_frame_step_holds_each_picture_for_the_step_and_replaces_its_strip(trained):
    scene = bpy.context.scene
    assert bpy.ops.lw.moe_import(directory=trained["run_dir"], expert="trajectory") == {"FINISHED"}
    scene.camera.name = "Held-out camera of the long courtyard scene, second take, v2"  # the strip name is cut
    assert len(f"MoE mixture render ({scene.camera.name})") > 63
    scene.frame_step = 2  # frames 1, 3, 5 of 1..5 are rendered
    for _ in range(2):  # the second render replaces the first one's strip
        assert bpy.ops.lw.moe_render(directory=trained["run_dir"]) == {"FINISHED"}
    strip, = (s for s in scene.sequence_editor.strips if s.type == "IMAGE")
    length = scene.frame_end - scene.frame_start + 1
    assert (strip.frame_final_start, strip.frame_final_duration) == (scene.frame_start, length) == (1, 5)
    names = [e.filename for e in strip.elements]
    assert len(set(names)) == 3 and names == [names[0], names[0], names[2], names[2], names[4]], names
    assert "(3 frames)" in scene.lw.moe.render_note


# --- held-out camera conversion (no backend) ----------------------------------------------------------------------

def _pixel(scene, cam, point) -> np.ndarray:
    """Where Blender puts ``point`` in the rendered image, in OpenCV pixels (x right, y down)."""
    v = world_to_camera_view(scene, cam, Vector(point))
    w = scene.render.resolution_x * scene.render.resolution_percentage / 100
    h = scene.render.resolution_y * scene.render.resolution_percentage / 100
    return np.array([v.x * w, (1.0 - v.y) * h])


def _project(K, w2c, point) -> np.ndarray:
    p = w2c[:3, :3] @ np.asarray(point) + w2c[:3, 3]
    uv = K @ p
    return uv[:2] / uv[2]


def _look(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV world_to_cam at ``eye`` looking at ``target``."""
    z = np.subtract(target, eye) / np.linalg.norm(np.subtract(target, eye))
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ np.asarray(eye)
    return w2c


POINTS = [(0.0, 0.0, 0.5), (0.4, -0.3, 1.0), (-0.6, 0.5, 0.0), (0.2, 0.8, -0.4)]


def test_n3v_held_out_camera_projects_like_the_opencv_camera(clean_scene, lw, tmp_path):
    moe, world = lw.lw_blender.moe, lw.lw_blender.world
    w, h, f = 120, 90, 100.0
    w2c = _look((1.0, -5.0, 2.0), (0.0, 0.0, 0.5))
    c2w = np.linalg.inv(w2c)
    right, down, forward = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
    pose = np.stack([down, right, -forward, c2w[:3, 3], [h, w, f]], axis=1)  # LLFF (down, right, back)
    other = pose.copy()
    other[:, 3] += 1.0
    rows = [np.concatenate([other.reshape(-1), [1.0, 9.0]]), np.concatenate([pose.reshape(-1), [2.0, 8.0]])]
    np.save(tmp_path / "poses_bounds.npy", np.stack(rows))
    spec, name = moe.held_out_camera_spec({"dataset": str(tmp_path), "test": [1], "cameras": ["cam00", "cam01"]})
    assert name == "cam01" and spec["clip_start"] == pytest.approx(1.0) and spec["clip_end"] == pytest.approx(16.0)
    cam = world.apply_camera_spec(clean_scene, spec, moe.CAMERA_NAME)
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    for p in POINTS:
        np.testing.assert_allclose(_pixel(clean_scene, cam, p), _project(K, w2c, p), atol=1e-3)


def test_technicolor_held_out_camera_with_off_centre_principal_point_and_portrait_image(clean_scene, lw, tmp_path):
    moe, world = lw.lw_blender.moe, lw.lw_blender.world
    w, h, f, cx, cy = 60, 80, 70.0, 27.0, 44.5
    w2c = _look((-2.0, -4.0, 1.0), (0.2, 0.1, 0.3))
    m = w2c[:3, :3]  # rotation matrix -> quaternion (w, x, y, z), m = I + 2w[v]x + 2[v]x^2
    qw = math.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    q = (qw, (m[2, 1] - m[1, 2]) / (4 * qw), (m[0, 2] - m[2, 0]) / (4 * qw), (m[1, 0] - m[0, 1]) / (4 * qw))
    line = " ".join(str(v) for v in (f, cx, cy, 1.0, 0.0, *q, *w2c[:3, 3]))
    (tmp_path / "cameras_parameters.txt").write_text(f"header\n{line}\n")
    image = bpy.data.images.new("frame", w, h)
    image.filepath_raw = str(tmp_path / "Scene_undist_00001_00.png")
    image.file_format = "PNG"
    image.save()
    spec, name = moe.held_out_camera_spec({"dataset": str(tmp_path), "test": [0], "cameras": ["cam00"]})
    assert name == "cam00" and (spec["resolution_x"], spec["resolution_y"]) == (w, h)
    cam = world.apply_camera_spec(clean_scene, spec, moe.CAMERA_NAME)
    K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    for p in POINTS:
        np.testing.assert_allclose(_pixel(clean_scene, cam, p), _project(K, w2c, p), atol=1e-3)


def test_best_model_is_the_best_importable_one_not_the_render_only_mixture(lw):
    best_model, MoeError = lw.lw_blender.moe.best_model, lw.lw_blender.moe.MoeError

    def row(kind, name, psnr):
        return {"kind": kind, "name": name, "psnr": psnr}

    rows = [row("expert", "deformation", 30.2), row("expert", "trajectory", 33.98), row("moe", "MoE", 34.68),
            row("pruned", "MoE pruned", 35.0), row("baked", "MoE baked cloud", 33.1),
            row("finetuned", "trajectory fine-tuned alone", 36.0)]  # mixtures render only; a baseline is no model
    assert best_model(rows) == ("trajectory", "Best importable: trajectory (33.98 dB); true MoE 34.68 dB (render only)")
    rows[4]["psnr"] = 34.2
    assert best_model(rows)[0] == "MIXTURE"  # the baked cloud, scored as it is imported
    rows.append(row("distilled", "trajectory distilled", 34.5))
    assert best_model(rows) == ("DISTILLED", ("Best importable: trajectory distilled (34.50 dB); true MoE 34.68 dB "
                                             "(render only)"))
    assert best_model(rows[:2]) == ("trajectory", "Best importable: trajectory (33.98 dB)")  # no router trained
    with pytest.raises(MoeError, match="no expert"):
        best_model([row("moe", "MoE", 30.0)])
