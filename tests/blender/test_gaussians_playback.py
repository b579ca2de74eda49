"""Gaussians carrier, splat display, .lw4d playback with keyframes, reload and Blender renders (no backend).

On Blender 5.3+ carriers are native splat point clouds, before that quads: the playback tests read the carrier
back through ``splats.carrier.read`` (either layout) and the layout tests check the one this Blender uses.
Decoded folders and .lw4d folders are written here with numpy (plain .npy + JSON, the formats of
docs/ARCHITECTURE.md); base.ply is only read by the backend, so these sequences leave it out.
"""

import json
import os
import shutil

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

SH_C0 = 0.28209479177387814
NATIVE = bpy.app.version >= (5, 3, 0)
T = 4  # frames
N = 3  # Gaussians; 0 and 2 move, 1 is static
DYNAMIC = np.array([0, 2], dtype=np.int64)


def _unit(q):
    return (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)


def _base():
    rng = np.random.default_rng(0)
    color = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]], np.float32)
    return {
        "position": np.array([[-0.6, 0.0, 0.0], [0.0, 0.0, 0.5], [0.6, 0.0, -0.3]], np.float32),
        "scale": np.array([[0.12, 0.02, 0.12], [0.1, 0.01, 0.1], [0.12, 0.01, 0.12]], np.float32),
        "rotation": _unit(np.array([[1, 0, 0, 0], [1, 0.1, 0, 0], [1, 0, 0.1, 0]], np.float32)),
        "opacity": np.array([1.0, 0.9, 1.0], np.float32),
        "color": color,
        "sh": ((color - 0.5) / SH_C0)[:, None, :].astype(np.float32),
        "sh1": rng.normal(size=(N, 3, 3)).astype(np.float32) * 0.2,
    }


def _channels():
    rng = np.random.default_rng(1)
    base = _base()
    t = np.arange(T, dtype=np.float32)[:, None, None]
    position = base["position"][DYNAMIC][None] + t * np.array([0.0, 0.0, 0.25], np.float32)
    return {
        "position": position.astype(np.float32),
        "opacity": np.linspace(1.0, 0.5, T, dtype=np.float32)[:, None].repeat(len(DYNAMIC), 1),
        "rotation": _unit(np.concatenate([np.ones((T, len(DYNAMIC), 1)), 0.3 * rng.normal(size=(T, len(DYNAMIC), 3))],
                                         axis=2).astype(np.float32)),
        "scale": (base["scale"][DYNAMIC][None] * (1.0 + 0.1 * t)).astype(np.float32),
    }


def _write_sequence(folder, loop=False, channels=None, manifest_extra=None):
    channels = _channels() if channels is None else channels
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "lw4d", "version": 1, "frame_count": T, "fps": 24.0, "loop": loop,
                "coordinate_frame": "blender_z_up_m", "count": N, "dynamic_count": len(DYNAMIC),
                "channels": {name: "float32" for name in channels}}
    manifest.update(manifest_extra or {})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.save(folder / "dynamic_index.npy", DYNAMIC)
    for name, values in channels.items():
        np.save(folder / f"{name}.npy", values)
    return folder


def _write_decoded(folder, sequence=None, degree=0):
    base = _base()
    folder.mkdir(parents=True, exist_ok=True)
    sh = base["sh"] if degree == 0 else np.concatenate([base["sh"], base["sh1"]], axis=1)
    for name in ("position", "scale", "rotation", "opacity", "color"):
        np.save(folder / f"{name}.npy", base[name])
    np.save(folder / "sh.npy", np.ascontiguousarray(sh))
    manifest = {"version": 1, "count": N, "sh_degree": degree, "source": "synthetic.ply",
                "sequence": None if sequence is None else str(sequence)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _attr(obj, name, width, key="vector"):
    out = np.empty(len(obj.data.attributes["position"].data) * width, np.float32)
    obj.data.attributes[name].data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def _values(lw, obj):
    """The carrier's current Gaussians, whichever display it has."""
    return lw.lw_blender.splats.carrier.read(obj)


def _expected(t_frame_a, t_frame_b, w):
    """The sequence's own data at time a + w (a, b the frames), scattered into the base: the reference."""
    base, ch = _base(), _channels()
    pos = base["position"].copy()
    pos[DYNAMIC] = (1 - w) * ch["position"][t_frame_a] + w * ch["position"][t_frame_b]
    opacity = base["opacity"].copy()
    opacity[DYNAMIC] = (1 - w) * ch["opacity"][t_frame_a] + w * ch["opacity"][t_frame_b]
    return pos, opacity


@pytest.fixture
def carrier(lw, clean_scene, tmp_path):
    """A carrier with an attached 4-frame sequence (3 Gaussians, 2 animated), scene starting at frame 1."""
    seq = _write_sequence(tmp_path / "walk.lw4d")
    clean_scene.frame_start, clean_scene.frame_end = 1, 20
    clean_scene.frame_set(1)
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, _write_decoded(tmp_path / "decoded", seq), "walk")
    return obj


def test_load_decoded_writes_every_array_into_the_displays_attributes(lw, clean_scene, tmp_path):
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, _write_decoded(tmp_path / "d", degree=1), "g")
    base = _base()
    types = {a.name: a.data_type for a in obj.data.attributes}
    if NATIVE:  # Blender's own splat layout, drawn by Blender: no modifier, no material
        assert obj.type == "POINTCLOUD" and obj.data.type == "GAUSSIAN_SPLAT"
        assert {k: types[k] for k in ("position", "radiance:base", "scale", "rotation", "radiance:sh_0",
                                      "radiance:sh_2")} == {
            "position": "FLOAT_VECTOR", "radiance:base": "FLOAT4", "scale": "FLOAT_VECTOR",
            "rotation": "QUATERNION", "radiance:sh_0": "FLOAT_VECTOR", "radiance:sh_2": "FLOAT_VECTOR"}
        assert "radiance:sh_3" not in types and not obj.modifiers and not obj.data.materials
        rgba = _attr(obj, "radiance:base", 4)
        np.testing.assert_array_equal(rgba[:, :3], base["sh"][:, 0])
        np.testing.assert_array_equal(rgba[:, 3], base["opacity"])
        for k in range(3):
            np.testing.assert_array_equal(_attr(obj, f"radiance:sh_{k}", 3), base["sh1"][:, k])
    else:
        assert obj.type == "MESH"
        assert (types["scale"], types["rotation"], types["opacity"]) == ("FLOAT_VECTOR", "QUATERNION", "FLOAT")
        np.testing.assert_array_equal(_attr(obj, "opacity", 1, "value"), base["opacity"])
        np.testing.assert_array_equal(_attr(obj, "sh_0", 3), base["sh"][:, 0])
        for k in range(3):
            np.testing.assert_array_equal(_attr(obj, f"sh_{k + 1}", 3), base["sh1"][:, k])
        assert obj.modifiers["LW Splats"].node_group.name == "LW Splats"
        assert obj.data.materials[0].name == "LW Splat"
    np.testing.assert_array_equal(_attr(obj, "position", 3), base["position"])
    np.testing.assert_array_equal(_attr(obj, "scale", 3), base["scale"])
    np.testing.assert_array_equal(_attr(obj, "rotation", 4, "value"), base["rotation"])
    assert obj["lw_source"] == "synthetic.ply" and obj["lw_sh_degree"] == 1
    back = _values(lw, obj)
    assert back.sh_degree == 1
    np.testing.assert_array_equal(back.sh, np.concatenate([base["sh"], base["sh1"]], axis=1))
    np.testing.assert_array_equal(back.opacity, base["opacity"])


@pytest.mark.skipif(NATIVE, reason="native splats: Blender evaluates the SH itself (test_native_splats)")
def test_sh_degree_1_colour_follows_the_camera(lw, clean_scene, tmp_path):
    scene = clean_scene
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location = (0, -4, 0)
    bpy.context.view_layer.update()
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, _write_decoded(tmp_path / "d", degree=1), "g")
    sm = lw.lw_blender.splats.sh
    base = _base()
    sh = np.concatenate([base["sh"], base["sh1"]], axis=1)

    def reference(eye):  # 3DGS degree-1: rgb = C0 c0 + C1 (-y c1 + z c2 - x c3) + 0.5, d = normalize(mu - eye)
        d = base["position"] - np.asarray(eye, np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        x, y, z = d[:, :1], d[:, 1:2], d[:, 2:]
        rgb = SH_C0 * sh[:, 0] + sm.SH_C1 * (-y * sh[:, 1] + z * sh[:, 2] - x * sh[:, 3]) + 0.5
        return np.clip(rgb, 0, 1)

    np.testing.assert_allclose(_attr(obj, "gs_color", 4, "color")[:, :3], reference((0, -4, 0)), atol=1e-5)
    cam.location = (3, 1, 2)
    bpy.context.view_layer.update()  # the depsgraph handler re-evaluates the colour for the moved camera
    moved = _attr(obj, "gs_color", 4, "color")[:, :3]
    np.testing.assert_allclose(moved, reference((3, 1, 2)), atol=1e-5)
    assert np.abs(moved - reference((0, -4, 0))).max() > 0.01


def test_playback_follows_the_scene_frame_and_interpolates(lw, carrier, clean_scene):
    scene = clean_scene
    assert scene.render.use_lock_interface
    assert carrier.lw_seq.frame_count == T and carrier.lw_seq.loop_mode == "ONCE"
    ch, base = _channels(), _base()
    scene.frame_set(3)  # t = 2
    pos, opacity = _expected(2, 3, 0.0)
    now = _values(lw, carrier)
    np.testing.assert_allclose(now.position, pos, atol=1e-6)
    np.testing.assert_allclose(now.opacity, opacity, atol=1e-6)
    np.testing.assert_allclose(now.scale[DYNAMIC], ch["scale"][2], atol=1e-6)
    np.testing.assert_allclose(now.rotation[DYNAMIC], ch["rotation"][2], atol=1e-6)
    np.testing.assert_array_equal(now.scale[1], base["scale"][1])  # static one untouched
    np.testing.assert_array_equal(now.sh[:, 0], base["sh"][:, 0])  # no colour channel: colours stay
    scene.frame_set(2, subframe=0.25)  # t = 1.25
    pos, opacity = _expected(1, 2, 0.25)
    now = _values(lw, carrier)
    np.testing.assert_allclose(now.position, pos, atol=1e-6)
    np.testing.assert_allclose(now.opacity, opacity, atol=1e-6)
    a, b = ch["rotation"][1], ch["rotation"][2]
    b = b * np.sign(np.sum(a * b, axis=1, keepdims=True))
    np.testing.assert_allclose(now.rotation[DYNAMIC], _unit(0.75 * a + 0.25 * b), atol=1e-6)
    assert carrier.lw_seq.time == pytest.approx(1.25)
    # the evaluated object follows: native splats hold the new positions; quads one instance per Gaussian there
    depsgraph = bpy.context.evaluated_depsgraph_get()
    if NATIVE:
        evaluated = carrier.evaluated_get(depsgraph)
        assert evaluated.data.type == "GAUSSIAN_SPLAT"
        np.testing.assert_allclose(_attr(evaluated, "position", 3), pos, atol=1e-6)
        return
    locations = sorted(tuple(round(v, 5) for v in inst.matrix_world.translation)
                       for inst in depsgraph.object_instances if inst.is_instance and inst.parent.name == carrier.name)
    assert locations == sorted(tuple(round(float(v), 5) for v in p) for p in pos)


def test_colour_channel_plays_as_the_dc_coefficient(lw, clean_scene, tmp_path):
    rgb = np.stack([np.linspace(0.1, 0.9, T, dtype=np.float32)] * 3, axis=1)[:, None, :].repeat(len(DYNAMIC), 1)
    seq = _write_sequence(tmp_path / "glow.lw4d", channels={**_channels(), "color": np.ascontiguousarray(rgb)})
    clean_scene.frame_start = 1
    clean_scene.frame_set(1)
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, _write_decoded(tmp_path / "d", seq), "glow")
    clean_scene.frame_set(2, subframe=0.5)  # t = 1.5
    now = _values(lw, obj)
    expected = 0.5 * rgb[1] + 0.5 * rgb[2]
    np.testing.assert_allclose(now.sh[DYNAMIC, 0], (expected - 0.5) / SH_C0, atol=1e-5)
    np.testing.assert_allclose(now.color[DYNAMIC], expected, atol=1e-5)
    np.testing.assert_array_equal(now.sh[1, 0], _base()["sh"][1, 0])  # the static Gaussian keeps its colour
    np.testing.assert_allclose(now.opacity, _expected(1, 2, 0.5)[1], atol=1e-6)  # opacity shares radiance:base


def test_keyframed_time_wins_over_the_scene_frame(lw, carrier, clean_scene):
    scene = clean_scene
    carrier.lw_seq.time = 0.0
    carrier.keyframe_insert("lw_seq.time", frame=1)
    carrier.lw_seq.time = 3.0
    carrier.keyframe_insert("lw_seq.time", frame=11)
    fcurve = carrier.animation_data.action.layers[0].strips[0].channelbag(carrier.animation_data.action_slot).fcurves[0]
    for key in fcurve.keyframe_points:
        key.interpolation = "LINEAR"
    scene.frame_set(6)  # halfway: t = 1.5, where the scene mapping alone would give t = 5
    pos, opacity = _expected(1, 2, 0.5)
    np.testing.assert_allclose(_values(lw, carrier).position, pos, atol=1e-6)
    np.testing.assert_allclose(_values(lw, carrier).opacity, opacity, atol=1e-6)
    assert carrier.lw_seq.time == pytest.approx(1.5)


@pytest.mark.parametrize(
    "mode, frame, a, b, w",
    [
        ("ONCE", 11, 3, 3, 0.0),  # t = 10 clamps to the last frame
        ("LOOP", 6, 1, 1, 0.0),  # t = 5 -> 5 mod 4 = 1
        ("LOOP", 4.5, 3, 0, 0.5),  # t = 3.5: the last frame blends into the first
        ("PING_PONG", 5, 2, 2, 0.0),  # t = 4 -> period 6 -> 6 - 4 = 2
        ("PING_PONG", 8, 1, 1, 0.0),  # t = 7 -> 1
    ],
)
def test_loop_modes_map_time_to_frames(carrier, clean_scene, mode, frame, a, b, w):
    carrier.lw_seq.loop_mode = mode
    whole = int(frame)
    clean_scene.frame_set(whole, subframe=frame - whole)
    pos, _ = _expected(a, b, w)
    np.testing.assert_allclose(_attr(carrier, "position", 3), pos, atol=1e-6)


def test_speed_and_offset_scale_and_shift_scene_time(carrier, clean_scene):
    carrier.lw_seq.speed = 0.5
    carrier.lw_seq.offset = 1.0
    clean_scene.frame_set(2)  # t = (2 - 1) * 0.5 + 1 = 1.5
    np.testing.assert_allclose(_attr(carrier, "position", 3), _expected(1, 2, 0.5)[0], atol=1e-6)
    clean_scene.frame_set(5)  # t = 3
    np.testing.assert_allclose(_attr(carrier, "position", 3), _expected(3, 3, 0.0)[0], atol=1e-6)
    carrier.lw_seq.use_scene_time = False
    carrier.lw_seq.time = 0.5
    clean_scene.frame_set(9)  # the typed time holds
    np.testing.assert_allclose(_attr(carrier, "position", 3), _expected(0, 1, 0.5)[0], atol=1e-6)


def test_playback_survives_save_and_reload(carrier, clean_scene, tmp_path):
    carrier.lw_seq.loop_mode = "LOOP"
    path = tmp_path / "saved.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    obj = bpy.data.objects["walk"]
    assert obj.lw_seq.loop_mode == "LOOP"
    bpy.context.scene.frame_set(7)  # t = 6 -> frame 2
    np.testing.assert_allclose(_attr(obj, "position", 3), _expected(2, 2, 0.0)[0], atol=1e-6)
    bpy.context.scene.frame_set(2, subframe=0.5)  # t = 1.5
    np.testing.assert_allclose(_attr(obj, "position", 3), _expected(1, 2, 0.5)[0], atol=1e-6)


def test_a_sequence_closes_while_a_frame_it_handed_out_is_still_held(lw, tmp_path):
    reader = lw.lw_blender.splats.playback.SequenceReader(_write_sequence(tmp_path / "walk.lw4d"))
    row = reader.frame("position", 2, 3, 0.0)  # a whole frame: the memory-mapped row itself, no copy
    np.testing.assert_array_equal(row, _channels()["position"][2])
    reader.close()  # unregister and file loads close readers; a held row must not make that raise
    np.testing.assert_array_equal(row, _channels()["position"][2])  # and the row stays readable
    assert not reader.channels


def test_broken_sequence_is_rejected_before_the_scene_changes(lw, clean_scene, tmp_path):
    objects, meshes, clouds = len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.pointclouds)
    bad = _write_sequence(tmp_path / "bad.lw4d", manifest_extra={"count": N + 5})
    with pytest.raises(lw.lw_blender.splats.data.GaussianDataError, match="animates 8 Gaussians"):
        lw.lw_blender.splats.carrier.load_decoded(bpy.context, _write_decoded(tmp_path / "d", bad), "bad")
    truncated = _write_sequence(tmp_path / "short.lw4d")
    np.save(truncated / "position.npy", _channels()["position"][:2])
    with pytest.raises(lw.lw_blender.splats.data.GaussianDataError, match="position.npy"):
        lw.lw_blender.splats.carrier.load_decoded(bpy.context, _write_decoded(tmp_path / "d2", truncated), "bad")
    assert (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.pointclouds)) == (objects, meshes, clouds)


def _camera(scene, size):
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, -4.0, 0.3)
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = cam
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    return cam


def _pixel(scene, cam, image, world):
    v = world_to_camera_view(scene, cam, Vector(world))
    h, w = image.shape[:2]
    return image[int((1.0 - v.y) * h), int(v.x * w)]


def _read_png(path):
    img = bpy.data.images.load(str(path))
    px = np.array(img.pixels[:], np.float32).reshape(img.size[1], img.size[0], 4)[::-1]
    bpy.data.images.remove(img)
    return px


def test_cycles_animation_render_shows_splats_where_they_project(carrier, clean_scene, tmp_path):
    scene = clean_scene
    cam = _camera(scene, 48)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.filepath = str(tmp_path / "frame_")
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(animation=True)
    frames = [_read_png(tmp_path / f"frame_{i:04d}.png") for i in (1, 3)]
    if os.environ.get("LW_KEEP_RENDERS"):  # to look at them: LW_KEEP_RENDERS=/some/dir
        for i in (1, 3):
            shutil.copy(tmp_path / f"frame_{i:04d}.png", os.environ["LW_KEEP_RENDERS"])
    base = _base()
    for frame_image, t in zip(frames, (0, 2)):
        pos, _ = _expected(t, t, 0.0)
        for i in range(N):
            px = _pixel(scene, cam, frame_image, pos[i])
            assert px[3] > 0.5, f"Gaussian {i} not visible at frame t={t}"
            assert np.argmax(px[:3]) == np.argmax(base["color"][i]), (i, px)
        assert _pixel(scene, cam, frame_image, (0.0, 0.0, -0.9))[3] < 0.05  # empty space stays empty
    # the red and blue Gaussians rose by 0.5 m between the frames; the green one did not move
    old, new = _expected(0, 0, 0.0)[0][0], _expected(2, 2, 0.0)[0][0]
    assert _pixel(scene, cam, frames[0], old)[0] > 0.5 and _pixel(scene, cam, frames[1], old)[3] < 0.2
    assert _pixel(scene, cam, frames[1], new)[0] > 0.5 and _pixel(scene, cam, frames[0], new)[3] < 0.2
    assert np.abs(frames[0] - frames[1]).max() > 0.5


def test_eevee_render_shows_blended_splats(carrier, clean_scene, tmp_path):
    scene = clean_scene
    cam = _camera(scene, 32)
    scene.render.engine = "BLENDER_EEVEE"
    scene.eevee.taa_render_samples = 16 if NATIVE else 1  # native splats blend stochastically over the samples
    scene.frame_set(1)
    scene.render.filepath = str(tmp_path / "eevee.png")
    bpy.ops.render.render(write_still=True)
    image = _read_png(tmp_path / "eevee.png")
    if os.environ.get("LW_KEEP_RENDERS"):
        shutil.copy(tmp_path / "eevee.png", os.environ["LW_KEEP_RENDERS"])
    base = _base()
    for i in range(N):
        px = _pixel(scene, cam, image, base["position"][i])
        assert px[3] > 0.5 and np.argmax(px[:3]) == np.argmax(base["color"][i]), (i, px)
    assert _pixel(scene, cam, image, (0.0, 0.0, -0.9))[3] < 0.05


@pytest.mark.skipif(not NATIVE, reason="the swap of a quad carrier (a world saved by 5.2) for native splats is 5.3's")
def test_a_carrier_replaced_by_one_of_another_type_closes_its_sequence(lw, clean_scene, tmp_path):
    splats = lw.lw_blender.splats
    seq = _write_sequence(tmp_path / "walk.lw4d")
    gaussians = splats.data.read_decoded(_write_decoded(tmp_path / "decoded", seq))
    old = bpy.data.objects.new("walk", splats.quads.display.new_data("walk", gaussians))  # as 5.2 saved it
    clean_scene.collection.objects.link(old)
    old.lw_seq.path = str(seq)
    reader, uid = splats.playback.player(old).reader, old.session_uid
    assert reader.channels
    obj = splats.carrier.place(bpy.context, old, "walk", gaussians, str(seq))
    assert obj.type == "POINTCLOUD" and obj.name == "walk" and "walk" in clean_scene.collection.objects
    assert uid not in splats.playback._PLAYERS and not reader.channels  # the removed object's files are closed
