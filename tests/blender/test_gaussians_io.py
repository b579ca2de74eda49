"""Import / export of Gaussians through the installed add-on (bpy.ops.lw.*); .lw4d and renders with a real backend.

Test files are written by the backend's own writers (backend.io.ply / backend.io.lw4d) run in the backend's
environment, from arrays made here. A .ply is read and written by the add-on itself (no backend); its export
round-trips the file bit for bit, on native splats (Blender 5.3+) and quads alike.
"""

import json
import subprocess
import textwrap
from pathlib import Path

import bpy
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = REPO / ".venv" / "bin" / "python"

N = 5
T = 3
DYNAMIC = np.array([1, 3], dtype=np.int64)
SH_C0 = 0.28209479177387814
NATIVE = bpy.app.version >= (5, 3, 0)

_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from backend.gaussians import Gaussians
    from backend.io.ply import write_ply
    from backend.io.lw4d import write_sequence
    a = np.load(sys.argv[1])
    g = Gaussians(means=a["means"], quats=a["quats"], log_scales=a["log_scales"],
                  opacity_logits=a["opacity_logits"], sh=a["sh"])
    if sys.argv[3] == "ply":
        write_ply(sys.argv[2], g)
    else:
        write_sequence(sys.argv[2], g, a["dynamic_index"], {"position": a["position"], "opacity": a["opacity"]},
                       fps=24.0, loop=True)
""")


def _raw(degree=1):
    rng = np.random.default_rng(7)
    quats = rng.normal(size=(N, 4)).astype(np.float32)
    return {
        "means": rng.uniform(-1, 1, size=(N, 3)).astype(np.float32),
        "quats": (quats / np.linalg.norm(quats, axis=1, keepdims=True)).astype(np.float32),
        "log_scales": rng.uniform(-4, -2, size=(N, 3)).astype(np.float32),
        "opacity_logits": rng.uniform(-2, 3, size=N).astype(np.float32),
        "sh": (rng.normal(size=(N, (degree + 1) ** 2, 3)) * 0.5).astype(np.float32),
    }


def _channels(raw):
    t = np.arange(T, dtype=np.float32)[:, None, None]
    return {"position": (raw["means"][DYNAMIC][None] + 0.1 * t).astype(np.float32),
            "opacity": np.linspace(0.2, 0.9, T, dtype=np.float32)[:, None].repeat(len(DYNAMIC), 1)}


def _write(tmp_path, raw, path, kind):
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, dynamic_index=DYNAMIC, **raw, **(_channels(raw) if kind == "lw4d" else {}))
    subprocess.run([str(BACKEND_PYTHON), "-c", _WRITER, str(arrays), str(path), kind], cwd=REPO, check=True)
    return path


def _decoded(raw):
    return {"position": raw["means"], "scale": np.exp(raw["log_scales"]), "rotation": raw["quats"],
            "opacity": 1.0 / (1.0 + np.exp(-raw["opacity_logits"]))}


def _values(obj):
    import importlib

    return importlib.import_module("bl_ext.user_default.livingworld").lw_blender.splats.carrier.read(obj)


def _assert_carrier_holds(obj, raw, atol=1e-6):
    dec, now = _decoded(raw), _values(obj)
    np.testing.assert_allclose(now.position, dec["position"], atol=atol)
    np.testing.assert_allclose(now.scale, dec["scale"], rtol=1e-5)
    np.testing.assert_allclose(now.rotation, dec["rotation"], atol=atol)
    np.testing.assert_allclose(now.opacity, dec["opacity"], atol=atol)
    np.testing.assert_allclose(now.sh, raw["sh"], atol=atol)


def test_import_ply_gives_a_carrier_in_this_blenders_display_without_a_backend(lw, clean_scene, tmp_path):
    lw.lw_blender.connection.jobs.stop_backend(bpy.context)
    raw = _raw()
    ply = _write(tmp_path, raw, tmp_path / "scene.ply", "ply")
    assert bpy.ops.lw.import_gaussians(filepath=str(ply)) == {"FINISHED"}
    assert lw.lw_blender.connection.process.current() is None  # read in Blender: no backend started
    obj = bpy.data.objects["scene"]
    assert obj.name in clean_scene.objects and len(obj.data.attributes["position"].data) == N
    _assert_carrier_holds(obj, raw)
    assert obj["lw_source"] == str(ply) and obj["lw_sh_degree"] == 1 and obj.lw_seq.path == ""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    if NATIVE:
        assert obj.type == "POINTCLOUD" and obj.data.type == "GAUSSIAN_SPLAT" and not obj.modifiers
        assert len(obj.evaluated_get(depsgraph).data.points) == N
    else:
        assert obj.modifiers["LW Splats"].type == "NODES"
        instances = [i for i in depsgraph.object_instances if i.is_instance and i.parent.name == obj.name]
        assert len(instances) == N


def test_import_lw4d_attaches_the_sequence(backend, clean_scene, tmp_path):
    raw = _raw(degree=0)
    seq = _write(tmp_path, raw, tmp_path / "move.lw4d", "lw4d")
    clean_scene.frame_start = 1
    clean_scene.frame_set(1)
    assert bpy.ops.lw.import_gaussians(filepath=str(seq / "manifest.json")) == {"FINISHED"}
    obj = bpy.data.objects["move"]
    assert obj.lw_seq.path == str(seq) and obj.lw_seq.frame_count == T and obj.lw_seq.loop_mode == "LOOP"
    ch = _channels(raw)
    clean_scene.frame_set(2, subframe=0.5)  # t = 1.5
    expected = raw["means"].copy()
    expected[DYNAMIC] = 0.5 * ch["position"][1] + 0.5 * ch["position"][2]
    np.testing.assert_allclose(_values(obj).position, expected, atol=1e-6)
    opacity = _decoded(raw)["opacity"]
    opacity[DYNAMIC] = 0.5 * ch["opacity"][1] + 0.5 * ch["opacity"][2]
    np.testing.assert_allclose(_values(obj).opacity, opacity, atol=1e-6)


@pytest.mark.parametrize("degree", [0, 3])
def test_ply_import_then_export_gives_the_same_file_byte_for_byte(addon, clean_scene, tmp_path, degree):
    raw = _raw(degree=degree)
    raw["quats"] = raw["quats"] * np.float32(2.5)  # INRIA files hold unnormalised quaternions: kept as they are
    raw["opacity_logits"][0] = 25.0  # an opacity that rounds to 1.0 in float32: the logit survives anyway
    ply = _write(tmp_path, raw, tmp_path / "orig.ply", "ply")
    assert bpy.ops.lw.import_gaussians(filepath=str(ply)) == {"FINISHED"}
    out = tmp_path / "exported.ply"
    assert bpy.ops.lw.export_gaussians(filepath=str(out)) == {"FINISHED"}
    assert out.read_bytes() == ply.read_bytes()
    assert bpy.ops.lw.import_gaussians(filepath=str(out)) == {"FINISHED"}
    again = bpy.data.objects["exported"]
    assert again["lw_sh_degree"] == degree
    first, second = _values(bpy.data.objects["orig"]), _values(again)
    for name in ("position", "scale", "rotation", "opacity", "sh"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))


def test_export_of_changed_gaussians_writes_their_new_values(lw, clean_scene, tmp_path):
    raw = _raw(degree=1)
    ply = _write(tmp_path, raw, tmp_path / "orig.ply", "ply")
    assert bpy.ops.lw.import_gaussians(filepath=str(ply)) == {"FINISHED"}
    obj = bpy.data.objects["orig"]
    now = _values(obj)
    opacity = now.opacity.copy()
    opacity[2] = 0.25  # one Gaussian edited (a played frame, a script): its file logit no longer applies
    name, key = ("radiance:base", "vector") if NATIVE else ("opacity", "value")
    values = np.concatenate([now.sh[:, 0], opacity[:, None]], axis=1) if NATIVE else opacity
    obj.data.attributes[name].data.foreach_set(key, np.ascontiguousarray(values, np.float32).ravel())
    out = tmp_path / "edited.ply"
    assert bpy.ops.lw.export_gaussians(filepath=str(out)) == {"FINISHED"}
    assert bpy.ops.lw.import_gaussians(filepath=str(out)) == {"FINISHED"}
    again = _values(bpy.data.objects["edited"])
    np.testing.assert_array_equal(again.opacity, opacity)  # exact, the edited one included
    np.testing.assert_array_equal(again.sh, now.sh)


def test_export_to_a_missing_folder_fails_before_writing_anything(lw, clean_scene, tmp_path):
    ply = _write(tmp_path, _raw(0), tmp_path / "orig.ply", "ply")
    assert bpy.ops.lw.import_gaussians(filepath=str(ply)) == {"FINISHED"}
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.lw.export_gaussians(filepath=str(tmp_path / "nowhere" / "out.ply"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "orig.ply"]


def test_export_refuses_an_existing_file_unless_overwrite_and_keeps_a_dotted_name(lw, clean_scene, tmp_path):
    ply = _write(tmp_path, _raw(0), tmp_path / "orig.ply", "ply")
    assert bpy.ops.lw.import_gaussians(filepath=str(ply)) == {"FINISHED"}
    prop = bpy.ops.lw.export_gaussians.get_rna_type().properties["overwrite"]
    assert prop.name == "Overwrite" and not prop.default and not prop.is_hidden  # shown in the file browser
    theirs = tmp_path / "theirs.ply"
    theirs.write_bytes(b"someone else's file")
    with pytest.raises(RuntimeError, match="theirs.ply exists: tick Overwrite"):
        bpy.ops.lw.export_gaussians(filepath=str(theirs))
    assert theirs.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "orig.ply", "theirs.ply"]  # no temp left
    assert bpy.ops.lw.export_gaussians(filepath=str(theirs), overwrite=True) == {"FINISHED"}
    assert theirs.read_bytes() == ply.read_bytes()
    # a name with a dot keeps it: ".ply" is appended ("garden.v2" -> "garden.v2.ply", not "garden.ply")
    assert bpy.ops.lw.export_gaussians(filepath=str(tmp_path / "garden.v2")) == {"FINISHED"}
    assert (tmp_path / "garden.v2.ply").read_bytes() == ply.read_bytes() and not (tmp_path / "garden.ply").exists()


def _bad_ply(tmp_path, case):
    """A damaged copy of a valid degree-1 PLY and the words its error must contain."""
    good = _write(tmp_path, _raw(1), tmp_path / "good.ply", "ply").read_bytes()
    header, body = good.split(b"end_header\n", 1)
    path = tmp_path / f"{case}.ply"
    if case == "truncated":
        path.write_bytes(good[: len(good) - 100])
        return path, "truncated"
    if case == "ascii":
        path.write_bytes(header.replace(b"binary_little_endian", b"ascii") + b"end_header\n")
        return path, "ascii PLY is not supported"
    if case == "nan":
        values = np.frombuffer(body, np.float32).copy()
        values[2 * 26 + 10] = np.nan  # Gaussian 2, property 10 (f_rest_1): 26 floats per degree-1 row
        path.write_bytes(header + b"end_header\n" + values.tobytes())
        return path, r"NaN or infinite values in f_rest_1 \(1\)"
    path.write_bytes(header.replace(b"property float opacity\n", b"property float opacity_x\n") + b"end_header\n"
                     + body)
    return path, "missing properties opacity"


@pytest.mark.parametrize("case", ["missing", "broken_manifest", "not_gaussians", "truncated", "ascii", "nan",
                                  "no_opacity"])
def test_bad_input_reports_a_clear_error_and_leaves_the_scene_unchanged(backend, clean_scene, tmp_path, case):
    if case == "missing":
        path, message = tmp_path / "nowhere.ply", "does not exist"
    elif case == "broken_manifest":
        seq = _write(tmp_path, _raw(0), tmp_path / "broken.lw4d", "lw4d")
        (seq / "manifest.json").write_text(json.dumps({"format": "lw4d", "version": 1, "frame_count": "many"}))
        path, message = seq, "manifest"
    elif case == "not_gaussians":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
        message = "neither a .ply file nor a .lw4d"
    else:
        path, message = _bad_ply(tmp_path, case)
    before = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.pointclouds), len(clean_scene.objects))
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.lw.import_gaussians(filepath=str(path))
    assert (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.pointclouds), len(clean_scene.objects)) == before


def _splats_facing_y():
    """Three flat, opaque, red/green/blue Gaussians facing a camera on -Y; SH degree 0."""
    rgb = np.array([[1.0, 0.05, 0.05], [0.05, 1.0, 0.05], [0.05, 0.05, 1.0]], np.float32)
    return {
        "means": np.array([[-0.6, 0.0, 0.0], [0.0, 0.0, 0.4], [0.6, 0.0, -0.3]], np.float32),
        "quats": np.tile(np.array([1, 0, 0, 0], np.float32), (3, 1)),
        "log_scales": np.log(np.array([[0.12, 0.01, 0.12]] * 3, np.float32)),
        "opacity_logits": np.full(3, 6.0, np.float32),
        "sh": ((rgb - 0.5) / SH_C0)[:, None, :].astype(np.float32),
    }


def _pixel_at(scene, cam, rgba, world):
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    v = world_to_camera_view(scene, cam, Vector([float(x) for x in world]))
    h, w = rgba.shape[:2]
    return rgba[int((1.0 - v.y) * h), int(v.x * w)]


def test_render_splats_still_lands_in_an_image_where_the_projection_says(backend, clean_scene, front_camera, tmp_path):
    raw = _splats_facing_y()
    ply = _write(tmp_path, raw, tmp_path / "rgb.ply", "ply")
    assert bpy.ops.lw.import_gaussians(filepath=str(ply)) == {"FINISHED"}
    cam = front_camera(clean_scene)
    assert bpy.ops.lw.render_splats(animation=False) == {"FINISHED"}
    image = bpy.data.images["LW Render"]
    assert tuple(image.size) == (32, 32)
    rgba = np.array(image.pixels[:], np.float32).reshape(32, 32, 4)[::-1]
    for i, mean in enumerate(raw["means"]):
        px = _pixel_at(clean_scene, cam, rgba, mean)
        assert px[3] > 0.5 and np.argmax(px[:3]) == i, (i, px)
    assert _pixel_at(clean_scene, cam, rgba, (0.0, 0.0, -0.9))[3] < 0.05


def test_render_splats_animation_adds_a_movie_strip_of_moving_splats(backend, clean_scene, front_camera, tmp_path):
    raw = _raw(degree=0)
    seq = _write(tmp_path, raw, tmp_path / "anim.lw4d", "lw4d")
    assert bpy.ops.lw.import_gaussians(filepath=str(seq)) == {"FINISHED"}
    front_camera(clean_scene, 24)
    clean_scene.frame_start, clean_scene.frame_end = 1, 3
    clean_scene.frame_step = 0  # allowed by Blender: every frame, as with 1
    assert clean_scene.frame_step == 0
    assert bpy.ops.lw.render_splats(animation=True) == {"FINISHED"}
    editor = clean_scene.sequence_editor
    strips = list(editor.strips if hasattr(editor, "strips") else editor.sequences)
    assert len(strips) == 1 and strips[0].type == "MOVIE" and strips[0].duration == 3
    movie = Path(bpy.path.abspath(strips[0].filepath))
    frames = sorted(movie.parent.glob("frame_*.png"))
    assert [f.name for f in frames] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    images = []
    for f in frames:
        img = bpy.data.images.load(str(f))
        images.append(np.array(img.pixels[:], np.float32))
        bpy.data.images.remove(img)
    assert images[0][3::4].max() > 0.3  # something is drawn
    assert np.abs(images[0] - images[2]).max() > 0.1  # and it moves


def _other_tools_ply(path, raw):
    """The same Gaussians as another tool might save them: big-endian, properties in another order, positions in
    double precision, no normals, an extra per-splat property (Mip-Splatting's 3D filter)."""
    n, k = raw["sh"].shape[0], raw["sh"].shape[1]
    rest = raw["sh"][:, 1:].transpose(0, 2, 1).reshape(n, -1)  # f_rest_i = sh[:, 1 + i % (K-1), i // (K-1)]
    columns = {"opacity": raw["opacity_logits"], "filter_3D": np.full(n, 0.01, np.float32),
               **{f"rot_{i}": raw["quats"][:, i] for i in range(4)}, **{f"f_rest_{i}": rest[:, i] for i in range(3 * (k - 1))},
               **{f"scale_{i}": raw["log_scales"][:, i] for i in range(3)},
               **{f"f_dc_{i}": raw["sh"][:, 0, i] for i in range(3)}, "z": raw["means"][:, 2], "x": raw["means"][:, 0],
               "y": raw["means"][:, 1]}
    kinds = {name: ">f8" if name in ("x", "y", "z") else ">f4" for name in columns}
    rows = np.empty(n, dtype=[(name, kinds[name]) for name in columns])
    for name, values in columns.items():
        rows[name] = values
    header = ["ply", "format binary_big_endian 1.0", "comment exported by some other splat tool", f"element vertex {n}"]
    header += [f"property {'double' if kinds[name] == '>f8' else 'float'} {name}" for name in columns]
    path.write_bytes(("\n".join(header + ["end_header"]) + "\n").encode() + rows.tobytes())
    return path


def test_a_ply_from_another_tool_imports_the_same_gaussians(lw, clean_scene, tmp_path):
    raw = _raw(degree=3)
    ours = _write(tmp_path, raw, tmp_path / "ours.ply", "ply")
    theirs = _other_tools_ply(tmp_path / "theirs.ply", raw)
    assert bpy.ops.lw.import_gaussians(filepath=str(ours)) == {"FINISHED"}
    assert bpy.ops.lw.import_gaussians(filepath=str(theirs)) == {"FINISHED"}
    a, b = _values(bpy.data.objects["ours"]), _values(bpy.data.objects["theirs"])
    for name in ("position", "scale", "rotation", "opacity", "sh"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
    # exported in the INRIA layout, the other tool's file becomes ours byte for byte
    out = tmp_path / "converted.ply"
    assert bpy.ops.lw.export_gaussians(filepath=str(out)) == {"FINISHED"}
    assert out.read_bytes() == ours.read_bytes()


@pytest.mark.parametrize("count, degree", [(20_000, 0), (20_000, 3), pytest.param(1_000_000, 3, marks=pytest.mark.slow)])
def test_captures_of_real_sizes_import_export_and_render(lw, clean_scene, front_camera, tmp_path, count, degree):
    """A 3DGS file of a size users bring (INRIA layout, SH 0 or 3): imported, shown in this Blender's display,
    exported bit for bit, rendered by Cycles."""
    rng = np.random.default_rng(count + degree)
    q = rng.normal(size=(count, 4)).astype(np.float32)
    raw = {"means": rng.normal(size=(count, 3)).astype(np.float32) * 0.5, "quats": q,
           "log_scales": rng.uniform(-5, -3, (count, 3)).astype(np.float32),
           "opacity_logits": rng.normal(size=count).astype(np.float32) * 2,
           "sh": (rng.normal(size=(count, (degree + 1) ** 2, 3)) * 0.3).astype(np.float32)}
    ply = _write(tmp_path, raw, tmp_path / "capture.ply", "ply")
    assert bpy.ops.lw.import_gaussians(filepath=str(ply)) == {"FINISHED"}
    obj = bpy.data.objects["capture"]
    now = _values(obj)
    assert now.count == count and now.sh_degree == degree
    np.testing.assert_array_equal(now.sh, raw["sh"])
    out = tmp_path / "again.ply"
    assert bpy.ops.lw.export_gaussians(filepath=str(out)) == {"FINISHED"}
    assert out.read_bytes() == ply.read_bytes()
    cam = front_camera(clean_scene, 16)
    cam.location = (0.0, -6.0, 0.0)
    clean_scene.render.engine, clean_scene.cycles.samples = "CYCLES", 1
    clean_scene.render.film_transparent = True
    clean_scene.render.filepath = str(tmp_path / "capture.png")
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(tmp_path / "capture.png"))
    alpha = np.array(image.pixels[:], np.float32).reshape(16, 16, 4)[..., 3]
    assert alpha[6:10, 6:10].mean() > 0.5 and alpha[0, 0] < alpha[8, 8]  # a cloud in the middle of the frame
