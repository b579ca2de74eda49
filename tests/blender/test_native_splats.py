"""Blender 5.3+ native splats: Blender's renderer draws our carriers, and splat objects made by Blender's own
importers (PLY, SPZ, USD, glTF KHR_gaussian_splatting) work with our operators: export to an INRIA PLY with
every value kept exactly, the backend's exact render from the Blender camera, playback on a world refilled in
place.

Skipped before Blender 5.3 (the quad display of test_gaussians_display.py is used there).
"""

import gzip
import importlib
import struct

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

pytestmark = pytest.mark.skipif(bpy.app.version < (5, 3, 0), reason="native Gaussian splats arrived in Blender 5.3")
SH_C0 = 0.28209479177387814


def _splats():
    return importlib.import_module("bl_ext.user_default.livingworld").lw_blender.splats


def _gaussians(n=24, degree=1, seed=5):
    """Random Gaussians as decoded arrays (the add-on's own DecodedGaussians)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    return _splats().data.DecodedGaussians(
        position=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        scale=np.exp(rng.uniform(-4, -2, (n, 3))).astype(np.float32),
        rotation=(q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
        opacity=(1 / (1 + np.exp(-rng.normal(size=n) * 3))).astype(np.float32),
        sh=(rng.normal(size=(n, (degree + 1) ** 2, 3)) * 0.4).astype(np.float32))


def _write_spz(path, g, logit):
    """An SPZ (version 2: gzip of a 16-byte header, then positions, alphas, colours, scales, rotations, SH; see
    github.com/nianticlabs/spz) holding ``g``."""
    n, k = g.count, g.sh.shape[1]
    fixed = np.round(g.position * 4096).astype(np.int32).reshape(-1)
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], 1).astype(np.uint8)
    alphas = np.round(1 / (1 + np.exp(-logit)) * 255).clip(0, 255).astype(np.uint8)
    colors = np.round(g.sh[:, 0] * 0.15 * 255 + 127.5).clip(0, 255).astype(np.uint8)
    scales = np.round((np.log(g.scale) + 10) * 16).clip(0, 255).astype(np.uint8)
    xyzw = np.concatenate([g.rotation[:, 1:], g.rotation[:, :1]], 1)
    xyzw *= np.where(xyzw[:, 3:] < 0, -1.0, 1.0)
    rotations = np.round(xyzw[:, :3] * 127.5 + 127.5).clip(0, 255).astype(np.uint8)
    sh = np.round(g.sh[:, 1:].reshape(n, 3 * (k - 1)) * 128 + 128).clip(0, 255).astype(np.uint8)
    header = struct.pack("<IIIBBBB", 0x5053474E, 2, n, round(np.sqrt(k)) - 1, 12, 0, 0)
    body = b"".join(a.tobytes() for a in (positions, alphas, colors, scales, rotations, sh))
    path.write_bytes(gzip.compress(header + body))
    return path


def _write_usda(path, g):
    """A USD layer with one ParticleField3DGaussianSplat prim (OpenUSD's splat schema) holding ``g``."""
    def arr(rows):
        return "[" + ", ".join("(" + ", ".join(f"{v:.9g}" for v in row) + ")" for row in rows) + "]"

    k = g.sh.shape[1]
    coefficients = g.sh.reshape(-1, 3)  # per Gaussian: k coefficients, each an RGB triple
    path.write_text(f"""#usda 1.0
(
    defaultPrim = "Splat"
    metersPerUnit = 1
    upAxis = "Z"
)

def ParticleField3DGaussianSplat "Splat"
{{
    point3f[] positions = {arr(g.position)}
    quatf[] orientations = {arr(g.rotation)}
    float3[] scales = {arr(g.scale)}
    float[] opacities = [{", ".join(f"{v:.9g}" for v in g.opacity)}]
    int radiance:sphericalHarmonicsDegree = {round(np.sqrt(k)) - 1}
    float3[] radiance:sphericalHarmonicsCoefficients = {arr(coefficients)}
}}
""")
    return path


def _write_gltf(path, g):
    """A glTF with one point primitive in the KHR_gaussian_splatting layout (Y-up; rotations x, y, z, w; linear
    scale; opacity after the sigmoid; SH per degree and coefficient), the buffer embedded."""
    import base64
    import json

    rotation_xyzw = np.concatenate([g.rotation[:, 1:], g.rotation[:, :1]], axis=1)
    columns = {"POSITION": g.position, "KHR_gaussian_splatting:ROTATION": rotation_xyzw,
               "KHR_gaussian_splatting:SCALE": g.scale, "KHR_gaussian_splatting:OPACITY": g.opacity,
               "KHR_gaussian_splatting:SH_DEGREE_0_COEF_0": g.sh[:, 0]}
    for k in range(1, g.sh.shape[1]):
        degree = int(np.floor(np.sqrt(k)))  # k = 1..3: degree 1, 4..8: degree 2, 9..15: degree 3
        columns[f"KHR_gaussian_splatting:SH_DEGREE_{degree}_COEF_{k - degree * degree}"] = g.sh[:, k]
    blob, views, accessors, attributes = b"", [], [], {}
    for name, values in columns.items():
        values = np.ascontiguousarray(values, "<f4")
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": values.nbytes})
        width = 1 if values.ndim == 1 else values.shape[1]
        accessor = {"bufferView": len(views) - 1, "componentType": 5126, "count": len(values),
                    "type": {1: "SCALAR", 3: "VEC3", 4: "VEC4"}[width]}
        if name == "POSITION":
            accessor["min"], accessor["max"] = values.min(0).tolist(), values.max(0).tolist()
        accessors.append(accessor)
        attributes[name] = len(accessors) - 1
        blob += values.tobytes()
    gltf = {"asset": {"version": "2.0"}, "extensionsUsed": ["KHR_gaussian_splatting"], "scene": 0,
            "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": attributes, "mode": 0,
                                        "extensions": {"KHR_gaussian_splatting": {}}}]}],
            "buffers": [{"byteLength": len(blob),
                         "uri": "data:application/octet-stream;base64," + base64.b64encode(blob).decode()}],
            "bufferViews": views, "accessors": accessors}
    path.write_text(json.dumps(gltf))
    return path


def _blender_import(kind, tmp_path):
    """A splat object made by Blender's own importer of ``kind`` (ply | spz | usd | gltf), and what was
    written."""
    splats, g = _splats(), _gaussians()
    if kind == "ply":
        path = splats.ply.write_ply(tmp_path / "cloud.ply", g)
        assert bpy.ops.wm.ply_import(filepath=str(path)) == {"FINISHED"}
    elif kind == "spz":
        path = _write_spz(tmp_path / "cloud.spz", g, np.log(g.opacity / (1 - g.opacity)))
        assert bpy.ops.wm.spz_import(filepath=str(path)) == {"FINISHED"}
    elif kind == "usd":
        path = _write_usda(tmp_path / "cloud.usda", g)
        assert bpy.ops.wm.usd_import(filepath=str(path)) == {"FINISHED"}
    else:
        bpy.ops.preferences.addon_enable(module="io_scene_gltf2")
        path = _write_gltf(tmp_path / "cloud.gltf", g)
        assert bpy.ops.import_scene.gltf(filepath=str(path)) == {"FINISHED"}
    found = [o for o in bpy.context.scene.objects if o.type == "POINTCLOUD"]
    assert len(found) == 1 and found[0].data.type == "GAUSSIAN_SPLAT", [(o.name, o.type) for o in found]
    return found[0], g


@pytest.mark.parametrize("kind", ["ply", "spz", "usd", "gltf"])
def test_a_splat_object_from_blenders_importers_exports_every_value_exactly(addon, clean_scene, tmp_path, kind):
    obj, written = _blender_import(kind, tmp_path)
    splats = _splats()
    assert splats.data.is_carrier(obj) and "lw_source" not in obj  # accepted without being ours
    theirs = splats.carrier.read(obj)
    assert theirs.count == written.count and theirs.sh_degree == 1
    bpy.context.view_layer.objects.active = obj
    out = tmp_path / f"from_{kind}.ply"
    assert bpy.ops.lw.export_gaussians(filepath=str(out)) == {"FINISHED"}
    assert bpy.ops.lw.import_gaussians(filepath=str(out)) == {"FINISHED"}
    ours = splats.carrier.read(bpy.data.objects[f"from_{kind}"])
    for name in ("position", "sh"):  # Blender's values, bit for bit
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), err_msg=name)
    unit = theirs.rotation / np.linalg.norm(theirs.rotation, axis=1, keepdims=True)  # SPZ's are not quite unit
    np.testing.assert_allclose(ours.rotation, unit, atol=2e-7)
    # Opacity and scale go through the PLY's float32 logit and log-scale: exact wherever a float32 logit decodes
    # to Blender's value; where none does (float32 logits are sparser than float32 opacities below ~0.12), the
    # value of the nearest logit: within half a logit step, |f'(x)| ulp(x) / 2, of Blender's
    a = theirs.opacity.astype(np.float64)
    logit = np.float32(np.log(a / (1 - a)))
    bound = 0.5 * a * (1 - a) * np.spacing(np.abs(logit)) + np.spacing(theirs.opacity)
    assert (np.abs(ours.opacity - theirs.opacity) <= bound).all()
    bound = 0.5 * theirs.scale * np.spacing(np.abs(np.log(theirs.scale))) + np.spacing(theirs.scale)
    assert (np.abs(ours.scale - theirs.scale) <= bound).all()
    if kind in ("ply", "usd"):  # SPZ quantises; glTF turns Y-up into Z-up; PLY and USD carry the floats as they are
        np.testing.assert_allclose(theirs.opacity, written.opacity, atol=1e-6)
        np.testing.assert_array_equal(theirs.sh, written.sh)


def _facing_y():
    """Three flat, opaque, red/green/blue Gaussians facing a camera on -Y; SH degree 0."""
    rgb = np.array([[1.0, 0.05, 0.05], [0.05, 1.0, 0.05], [0.05, 0.05, 1.0]], np.float32)
    return _splats().data.DecodedGaussians(
        position=np.array([[-0.6, 0.0, 0.0], [0.0, 0.0, 0.4], [0.6, 0.0, -0.3]], np.float32),
        scale=np.tile(np.float32([0.12, 0.01, 0.12]), (3, 1)),
        rotation=np.tile(np.float32([1, 0, 0, 0]), (3, 1)),
        opacity=np.full(3, 0.997, np.float32),
        sh=((rgb - 0.5) / SH_C0)[:, None, :].astype(np.float32))


def test_backend_renders_a_blender_made_splat_object_where_blender_shows_it(backend, clean_scene, front_camera,
                                                                           tmp_path):
    path = _splats().ply.write_ply(tmp_path / "rgb.ply", _facing_y())
    assert bpy.ops.wm.ply_import(filepath=str(path)) == {"FINISHED"}
    obj = bpy.context.selected_objects[0]
    obj.location = (0.3, 0.5, 0.2)  # moved and turned: the render must follow the object, not the file
    obj.rotation_euler = (0.0, 0.3, 0.0)
    obj.scale = (1.2, 1.2, 1.2)
    cam = front_camera(clean_scene, 32)
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.lw.render_splats(animation=False) == {"FINISHED"}
    rgba = np.array(bpy.data.images["LW Render"].pixels[:], np.float32).reshape(32, 32, 4)[::-1]
    for i, local in enumerate(_facing_y().position):
        v = world_to_camera_view(clean_scene, cam, obj.matrix_world @ Vector(local.tolist()))
        px = rgba[int((1.0 - v.y) * 32), int(v.x * 32)]
        assert px[3] > 0.5 and np.argmax(px[:3]) == i, (i, px)
    obj.scale = (1.0, 2.0, 1.0)
    with pytest.raises(RuntimeError, match="scaled unevenly"):
        bpy.ops.lw.render_splats(animation=False)


def test_cycles_renders_the_sh_colour_of_the_view(addon, clean_scene, front_camera, tmp_path):
    """One large opaque degree-1 Gaussian: Blender's own renderer must read our radiance:sh_* attributes as
    3DGS does (colour = C0 c0 + C1 (-y c1 + z c2 - x c3) + 0.5, d from the camera to the Gaussian)."""
    splats = _splats()
    sh = np.zeros((1, 4, 3), np.float32)
    sh[0, 0] = (0.1, 0.0, -0.1)
    sh[0, 1], sh[0, 2], sh[0, 3] = (0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 0.5)
    g = splats.data.DecodedGaussians(position=np.zeros((1, 3), np.float32), scale=np.full((1, 3), 0.5, np.float32),
                                     rotation=np.float32([[1, 0, 0, 0]]), opacity=np.float32([0.9999]), sh=sh)
    obj = splats.carrier.place(bpy.context, None, "ball", g)
    scene = clean_scene
    scene.render.engine, scene.cycles.device, scene.cycles.samples = "CYCLES", "CPU", 16
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    cam = front_camera(scene, 16)
    for location in ((0.0, -4.0, 0.0), (4.0, 0.0, 0.0), (0.0, 0.0, 4.0)):
        cam.location = location
        direction = -Vector(location).normalized()
        cam.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
        bpy.context.view_layer.update()
        scene.render.filepath = str(tmp_path / "ball.png")
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(scene.render.filepath)
        centre = np.array(image.pixels[:], np.float32).reshape(16, 16, 4)[7:9, 7:9].mean(axis=(0, 1))
        bpy.data.images.remove(image)
        want = splats.sh.sh_to_rgb(sh, np.zeros((1, 3), np.float32), np.float32(location))[0]
        assert centre[3] > 0.9, centre
        np.testing.assert_allclose(centre[:3], want, atol=0.04, err_msg=str(location))
    assert obj.type == "POINTCLOUD"


def test_a_quad_world_from_blender_5_2_is_replaced_by_a_splat_object_when_refilled(addon, clean_scene):
    """A world saved by Blender 5.2 holds a mesh carrier; the next step in 5.3 puts native splats in its place
    (same name, same collection, same transform) instead of failing or leaving two objects."""
    splats = _splats()
    mesh = splats.quads.display.new_data("LW World", _gaussians(n=5, degree=0))
    mesh_name = mesh.name
    old = bpy.data.objects.new("LW World", mesh)
    clean_scene.collection.objects.link(old)
    old["lw_source"], old.location = "old.ply", (1.0, 2.0, 3.0)
    new = splats.carrier.place(bpy.context, old, "LW World", _gaussians(n=7, degree=0), collection=clean_scene.collection)
    assert new.name == "LW World" and new.type == "POINTCLOUD" and len(new.data.points) == 7
    assert tuple(new.location) == (1.0, 2.0, 3.0) and new.users_collection[0] == clean_scene.collection
    assert [o.name for o in clean_scene.objects] == ["LW World"] and mesh_name not in bpy.data.meshes
