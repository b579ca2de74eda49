"""LivingWorld in Blender through the installed extension and a real backend: new world, camera, expand, undo,
errors, the asynchronous (UI) path, motion cues from presets and annotation strokes, bake -> looping playback.

Worlds are built at 64 px (long side) from the bundled sample image, so every backend step takes seconds on CPU;
the motion field is shrunk (4 levels, 2^12 table, 30 fit steps) for the same reason.
"""

import json
import math
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Matrix, Vector

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "backend" / "world" / "samples" / "landscape.png"
RESOLUTION = 64


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> Path:
    """The bundled landscape scaled to 64 x 64 with Blender's own image code."""
    out = tmp_path_factory.mktemp("world_images") / "landscape64.png"
    image = bpy.data.images.load(str(SAMPLE))
    image.scale(RESOLUTION, RESOLUTION)
    image.filepath_raw = str(out)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return out


@pytest.fixture
def scene(clean_scene, backend):
    return clean_scene


def _ply_count(path: Path) -> int:
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"element vertex"):
                return int(line.split()[2])
            if line.strip() == b"end_header":
                break
    raise AssertionError(f"{path} has no vertex element")


def _world_json(scene) -> dict:
    return json.loads((Path(scene.lw.world.directory) / "world.json").read_text())


def _current_ply(scene) -> Path:
    w = _world_json(scene)
    return Path(scene.lw.world.directory) / w["steps"][-1]["folder"] / "gaussians.ply"


def _positions(obj) -> np.ndarray:
    out = np.empty(len(obj.data.attributes["position"].data) * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", out)
    return out.reshape(-1, 3)


def _new_world(small_image):
    assert bpy.ops.lw.world_new(filepath=str(small_image), resolution=RESOLUTION) == {"FINISHED"}
    return bpy.data.objects["LW World"]


def _turn_camera(camera, degrees: float):
    """Turn the camera about the world Z axis through its own position (a pan to the side)."""
    loc = camera.matrix_world.translation.copy()
    camera.matrix_world = (Matrix.Translation(loc) @ Matrix.Rotation(math.radians(degrees), 4, "Z")
                           @ Matrix.Translation(-loc) @ camera.matrix_world)


def _world_objects():
    return [o for o in bpy.data.objects if o.name.startswith("LW World") and o.type in ("MESH", "POINTCLOUD")]


def test_world_new_makes_one_carrier_matching_the_ply_and_a_camera_that_sees_it(scene, lw, small_image):
    bpy.ops.preferences.addon_enable(module="cycles")  # on in every installed Blender; the bpy module starts without
    obj = _new_world(small_image)
    s = scene.lw.world
    assert Path(s.directory, "world.json").is_file()
    assert len(s.steps) == 1 and s.steps[0].kind == "new"
    count = _ply_count(_current_ply(scene))
    assert len(obj.data.attributes["position"].data) == count == s.steps[0].gaussians
    assert count >= RESOLUTION * RESOLUTION // 2  # about one Gaussian per pixel
    assert bpy.context.view_layer.objects.active == obj
    # the camera is the photo's camera of world.json, and it is the scene camera
    camera = scene.camera
    assert camera is not None and camera.name == "LW World Camera"
    spec = _world_json(scene)["steps"][0]["camera"]["blender"]
    np.testing.assert_allclose(np.array(camera.matrix_world), np.array(spec["matrix_world"]), atol=1e-5)
    assert camera.data.lens == pytest.approx(spec["lens"], rel=1e-5)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (spec["resolution_x"], spec["resolution_y"])
    # every Gaussian was lifted from a pixel of the photo: it projects inside the camera frame, in front of it
    pos = _positions(obj)
    for p in pos[:: max(1, len(pos) // 300)]:
        x, y, z = world_to_camera_view(scene, camera, Vector(p))
        assert -0.01 <= x <= 1.01 and -0.01 <= y <= 1.01 and z > 0, (p, x, y, z)
    # the preview of the step is loaded
    assert bpy.data.images["LW World Preview"].size[:] == (RESOLUTION, RESOLUTION)
    # the sidebar says which built-in fallback replaced which model, as the step records it
    step = _world_json(scene)["steps"][0]
    assert s.fallbacks.splitlines() == step["stats"]["fallbacks"]
    builtin = {"segmentation": "heuristic", "depth": "builtin:landscape"}
    assert bool(s.fallbacks) == any(step["providers"][k] == v for k, v in builtin.items())
    assert all("hf download" in line for line in s.fallbacks.splitlines())
    # the camera sees the sky 50 km away (its clip end from the step's spec)
    assert camera.data.clip_end >= 100_000
    # the splat scene settings of every carrier: Standard view (an otherwise empty scene), so the colours are the
    # stored ones; native splats (5.3+) in Blender's layout, quads with Cycles' transparent bounces raised (stacked
    # sky layers would render dark)
    assert scene.view_settings.view_transform == "Standard"
    if bpy.app.version >= (5, 3, 0):
        assert obj.type == "POINTCLOUD" and obj.data.type == "GAUSSIAN_SPLAT" and "radiance:base" in obj.data.attributes
    else:
        assert scene.cycles.transparent_max_bounces >= lw.lw_blender.splats.quads.display.TRANSPARENT_BOUNCES


def test_expand_from_a_turned_camera_adds_points_to_the_same_object_and_undo_restores(scene, small_image):
    obj = _new_world(small_image)
    first = len(obj.data.attributes["position"].data)
    start = np.array(scene.camera.matrix_world)
    _turn_camera(scene.camera, 35.0)
    assert bpy.ops.lw.world_expand() == {"FINISHED"}
    s = scene.lw.world
    assert [step.kind for step in s.steps] == ["new", "expand"]
    assert _world_objects() == [obj]  # refilled in place, not duplicated
    expanded = len(obj.data.attributes["position"].data)
    assert expanded > first and expanded == _ply_count(_current_ply(scene)) == s.steps[-1].gaussians
    assert s.steps[-1].new_gaussians == expanded - first
    # the new points lie where the turned camera looks: some project into its frame outside the first view
    pos = _positions(obj)[first:]
    inside = [world_to_camera_view(scene, scene.camera, Vector(p)) for p in pos[:: max(1, len(pos) // 200)]]
    assert all(z > 0 for _, _, z in inside)
    assert np.mean([0 <= x <= 1 and 0 <= y <= 1 for x, y, _ in inside]) > 0.9

    assert bpy.ops.lw.world_undo() == {"FINISHED"}
    assert len(obj.data.attributes["position"].data) == first and len(s.steps) == 1
    assert _ply_count(_current_ply(scene)) == first
    np.testing.assert_allclose(np.array(scene.camera.matrix_world), start, atol=1e-5)  # back at the photo's view
    assert _world_objects() == [obj]


def test_bad_image_path_or_unreadable_image_reports_and_leaves_the_scene_unchanged(scene, small_image, tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.lw.world_new(filepath=str(tmp_path / "missing.png"), resolution=RESOLUTION)
    assert not _world_objects() and scene.camera is None and not scene.lw.world.directory
    # a file that exists but is not an image: the backend's error comes back, the world of the scene stays
    obj = _new_world(small_image)
    before = (scene.lw.world.directory, len(obj.data.attributes["position"].data), len(scene.lw.world.steps))
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(RuntimeError, match="not an image"):
        bpy.ops.lw.world_new(filepath=str(fake), resolution=RESOLUTION)
    assert (scene.lw.world.directory, len(obj.data.attributes["position"].data), len(scene.lw.world.steps)) == before
    assert _world_objects() == [obj]
    assert "not an image" in bpy.context.window_manager.lw_runtime.last_error
    # expanding with a camera that sees nothing new fails the same way
    with pytest.raises(RuntimeError, match="no missing region"):
        bpy.ops.lw.world_expand()
    assert (scene.lw.world.directory, len(obj.data.attributes["position"].data), len(scene.lw.world.steps)) == before


def _drain(lw):
    for _ in range(6000):
        if lw.lw_blender.connection.jobs.drain_updates() is None and not lw.lw_blender.world.busy():
            return
        time.sleep(0.01)
    raise AssertionError("the world jobs did not end")


def test_ui_path_runs_the_job_chain_in_the_background_applies_once_and_cancels(scene, lw, small_image):
    world, jobs = lw.lw_blender.world, lw.lw_blender.connection.jobs
    rt = bpy.context.window_manager.lw_runtime
    # cancelled while running: the chain stops, nothing is applied
    world.new_world(bpy.context, str(small_image), resolution=RESOLUTION, blocking=False)
    assert world.busy() == "New World" and rt.job_kind == "world_new"
    jobs.cancel_current(bpy.context)
    _drain(lw)
    assert rt.job_state == "cancelled" and not _world_objects() and not scene.lw.world.directory
    # runs to the end: applied once, after the last job (world_new -> import_gaussians)
    world.new_world(bpy.context, str(small_image), resolution=RESOLUTION, blocking=False)
    assert world.busy() == "New World" and not _world_objects()  # nothing applied while jobs run
    with pytest.raises(world.WorldError, match="still running"):
        world.new_world(bpy.context, str(small_image), resolution=RESOLUTION, blocking=False)
    _drain(lw)
    assert rt.job_kind == "import_gaussians" and rt.job_state == "succeeded"
    obj = bpy.data.objects["LW World"]
    assert len(obj.data.attributes["position"].data) == _ply_count(_current_ply(scene))
    assert scene.camera.name == "LW World Camera"


def _annotate(scene, points):
    data = bpy.data.annotations.new("Notes")
    scene.annotation = data
    stroke = data.layers.new("Note").frames.new(scene.frame_current).strokes.new()
    stroke.display_mode = "3DSPACE"
    stroke.points.add(len(points))
    stroke.points.foreach_set("co", np.asarray(points, np.float32).reshape(-1))
    return data


def test_annotation_strokes_project_to_pixels_of_the_view(scene, lw, small_image):
    _new_world(small_image)
    camera = scene.camera
    # a stroke on the photo's optical axis going to the right in the camera's frame
    eye = camera.matrix_world.translation
    forward = -(camera.matrix_world.to_3x3() @ Vector((0, 0, 1)))
    right = camera.matrix_world.to_3x3() @ Vector((1, 0, 0))
    centre = eye + 20.0 * forward
    _annotate(scene, [centre, centre + 2.0 * right, centre + 4.0 * right])
    assert bpy.ops.lw.motion_from_annotations(speed=2.0) == {"FINISHED"}
    hint = scene.lw.world.hints[0]
    (stroke,) = json.loads(hint.strokes)
    assert hint.view == 0 and hint.speed == 2.0
    assert stroke[0] == pytest.approx([RESOLUTION / 2, RESOLUTION / 2], abs=0.05)
    assert stroke[2][0] > stroke[1][0] > stroke[0][0] and stroke[2][1] == pytest.approx(RESOLUTION / 2, abs=0.05)
    # drawn from a camera that is not at a world view: refused, and nothing queued
    _turn_camera(camera, 20.0)
    with pytest.raises(RuntimeError, match="not at any view"):
        bpy.ops.lw.motion_from_annotations()
    assert len(scene.lw.world.hints) == 1
    assert bpy.ops.lw.world_view_camera() == {"FINISHED"}
    assert bpy.ops.lw.motion_from_annotations() == {"FINISHED"}
    assert len(scene.lw.world.hints) == 2


def test_motion_presets_and_hints_bake_a_loop_that_plays_on_the_world_object(scene, lw, small_image):
    obj = _new_world(small_image)
    s = scene.lw.world
    s.field_levels, s.field_table_log2, s.fit_steps, s.update_steps = 4, 12, 30, 15
    with pytest.raises(RuntimeError, match="no motion yet"):
        bpy.ops.lw.world_bake(frames=8)
    assert bpy.ops.lw.motion_region(preset="CLOUDS", direction=(1.0, 0.0), speed=2.0) == {"FINISHED"}
    assert bpy.ops.lw.motion_region(preset="WATER", direction=(0.0, -1.0), speed=1.0) == {"FINISHED"}
    camera = scene.camera
    eye, rot = camera.matrix_world.translation, camera.matrix_world.to_3x3()
    a = eye + rot @ Vector((-1.0, -0.3, -10.0))
    _annotate(scene, [a, a + rot @ Vector((1.0, 0, 0)), a + rot @ Vector((2.0, 0, 0))])
    assert bpy.ops.lw.motion_from_annotations(speed=1.0) == {"FINISHED"}
    assert bpy.ops.lw.motion_update() == {"FINISHED"}
    assert [step.kind for step in s.steps] == ["new", "motion"]
    assert not s.regions and not s.hints and s.motion_status

    scene.frame_start = 1
    scene.frame_set(1)
    assert bpy.ops.lw.world_bake(frames=8, loop=True) == {"FINISHED"}
    assert _world_objects() == [obj]
    seq = Path(obj.lw_seq.path)
    manifest = json.loads((seq / "manifest.json").read_text())
    assert manifest["loop"] and manifest["frame_count"] == 8 and manifest["dynamic_count"] > 0
    assert len(obj.data.attributes["position"].data) == manifest["count"]
    assert (scene.frame_start, scene.frame_end) == (1, 8) and s.sequence == str(seq)
    frames = {}
    for f in (1, 3, 5, 9):
        scene.frame_set(f)
        frames[f] = _positions(obj).copy()
    moved = np.linalg.norm(frames[5] - frames[1], axis=1)
    assert (moved > 1e-4).sum() > 0.5 * manifest["dynamic_count"]  # the moving region moves
    assert np.abs(frames[3] - frames[1]).max() > 0
    np.testing.assert_allclose(frames[9], frames[1], atol=1e-6)  # frame N wraps to frame 0: a loop
    # the loop was measured after the bake (world_metrics) and the Motion panel's lines say so
    metrics = json.loads(s.metrics)
    assert metrics["frames"] == 8 and 0.9 < metrics["temporal_flicker"] <= 1.0
    assert 0 < metrics["seam_ratio"] < 3.0 and set(metrics["goals"]) == {"temporal_flicker", "seam_ratio"}
    lines = lw.lw_blender.world.metrics_lines(s)
    assert lines[0].startswith("Flicker (VBench)") and any(line.startswith("Loop seam") for line in lines)
    limit = metrics["goals"]["seam_ratio"]["limit"]  # 1.0, or the spread of the loop's own steps
    assert limit >= 1.0 and any(f"goal <= {limit:.2f}" in line for line in lines)
    assert (metrics["ordinary_ratio_mean"] is not None) == any("other steps" in line for line in lines)
    # a 2-frame loop (the least a bake makes) is too short to measure: it is baked and plays, unmeasured, no error
    assert bpy.ops.lw.world_bake(frames=2, loop=True) == {"FINISHED"}
    assert obj.lw_seq.frame_count == 2 and (scene.frame_start, scene.frame_end) == (1, 2)
    scene.frame_set(1)
    first = _positions(obj).copy()
    scene.frame_set(2)
    assert np.abs(_positions(obj) - first).max() > 0  # it plays
    assert not s.metrics and "not measured" in s.metrics_note
    assert lw.lw_blender.world.metrics_lines(s) == [s.metrics_note]
    assert bpy.context.window_manager.lw_runtime.last_error == ""
    # after a world change the sequence no longer fits and is dropped
    _turn_camera(camera, 35.0)
    assert bpy.ops.lw.world_expand() == {"FINISHED"}
    assert not obj.lw_seq.path and not s.sequence and not s.metrics and not s.metrics_note
    scene.frame_set(5)
    assert len(obj.data.attributes["position"].data) == _ply_count(_current_ply(scene))
