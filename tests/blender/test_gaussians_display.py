"""Splat display: the quads' speed paths (Blender 4.2-5.2: back-to-front order kept in numpy for EEVEE, viewport
points, view-facing ellipses, deep stacks of overlapping splats without holes) and what every display must do
(stored sRGB colours, driven time, a scene's own view transform kept).

Carriers are built from decoded folders written with numpy (as in test_gaussians_playback.py); no backend.
"""

import json

import bpy
import numpy as np
import pytest

N = 40
T = 3
SH_C0 = 0.28209479177387814
NATIVE = bpy.app.version >= (5, 3, 0)
quads_only = pytest.mark.skipif(NATIVE, reason="quads are the display of Blender 4.2-5.2; 5.3+ draws native splats")


def _decoded(folder, n=N, sequence=None, scale=None, position=None):
    rng = np.random.default_rng(3)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    color = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
    arrays = {
        "position": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32) if position is None else position,
        "scale": rng.uniform(0.01, 0.05, size=(n, 3)).astype(np.float32) if scale is None else scale,
        "rotation": q / np.linalg.norm(q, axis=1, keepdims=True),
        "opacity": rng.uniform(0.3, 1, size=n).astype(np.float32),
        "color": color,
        "sh": ((color - 0.5) / SH_C0)[:, None, :].astype(np.float32),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(a, dtype=np.float32))
    (folder / "manifest.json").write_text(json.dumps({"version": 1, "count": n, "sh_degree": 0, "source": "t.ply",
                                                      "sequence": None if sequence is None else str(sequence)}))
    return folder, arrays


def _sequence(folder, position0):
    """All N Gaussians move +0.5 z per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(T, dtype=np.float32)[:, None, None]
    np.save(folder / "position.npy", (position0[None] + t * np.array([0, 0, 0.5], np.float32)).astype(np.float32))
    np.save(folder / "dynamic_index.npy", np.arange(N, dtype=np.int64))
    (folder / "manifest.json").write_text(json.dumps({
        "format": "lw4d", "version": 1, "frame_count": T, "fps": 24.0, "loop": False,
        "coordinate_frame": "blender_z_up_m", "count": N, "dynamic_count": N, "channels": {"position": "float32"}}))
    return folder


def _camera(scene, location=(0.0, -4.0, 0.0), rotation=(np.pi / 2, 0.0, 0.0)):
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = location
    cam.rotation_euler = rotation
    scene.camera = cam
    bpy.context.view_layer.update()
    return cam


def _attr(mesh_or_cloud, name, width, key="vector", dtype=np.float32):
    attr = mesh_or_cloud.attributes[name]
    out = np.empty(len(attr.data) * width, dtype)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def _instance_locations(obj):
    """Locations of the quad instances of ``obj``'s display, in drawing order."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    return np.array([tuple(i.matrix_world.translation) for i in depsgraph.object_instances
                     if i.is_instance and i.parent.name == obj.name and i.object.type == "MESH"], np.float32)


def _sort_input(lw, obj):
    nodes = lw.lw_blender.splats.quads.nodes
    return nodes.get_input(obj.modifiers[nodes.MODIFIER_NAME], nodes.SORT_INPUT)


@quads_only
def test_eevee_draws_back_to_front_and_cycles_keeps_no_order(lw, clean_scene, tmp_path):
    scene = clean_scene
    scene.render.engine = "BLENDER_EEVEE"
    cam = _camera(scene)
    folder, arrays = _decoded(tmp_path / "d")
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    order = _attr(obj.data, "lw_order", 1, "value", np.int32)
    assert sorted(order.tolist()) == list(range(N)) and _sort_input(lw, obj)
    eye = np.array(cam.location, np.float32)
    distance = np.linalg.norm(arrays["position"][order] - eye, axis=1)
    assert np.all(np.diff(distance) <= 1e-4), "lw_order is not far-to-near"
    # the display draws instance i at Gaussian order[i]
    np.testing.assert_allclose(_instance_locations(obj), arrays["position"][order], atol=1e-5)
    # the carrier's own attributes keep the imported order
    np.testing.assert_array_equal(_attr(obj.data, "position", 3), arrays["position"])

    scene.render.engine = "CYCLES"
    bpy.context.view_layer.update()
    assert "lw_order" not in obj.data.attributes and not _sort_input(lw, obj)
    np.testing.assert_allclose(_instance_locations(obj), arrays["position"], atol=1e-5)


@quads_only
def test_order_is_rewritten_only_when_the_view_changes(lw, clean_scene, tmp_path):
    scene = clean_scene
    scene.render.engine = "BLENDER_EEVEE"
    cam = _camera(scene)
    folder, arrays = _decoded(tmp_path / "d")
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    sorting = lw.lw_blender.splats.quads.sorting
    first = _attr(obj.data, "lw_order", 1, "value", np.int32)
    # a move below the threshold (1% of the distance to the Gaussians) keeps the order
    cam.location = (0.0, -4.0 + 0.01, 0.0)
    bpy.context.view_layer.update()
    assert sorting.update_order(scene, obj) is False
    # from the opposite side, near and far swap
    cam.location = (0.0, 4.0, 0.0)
    cam.rotation_euler = (np.pi / 2, 0.0, np.pi)
    bpy.context.view_layer.update()
    second = _attr(obj.data, "lw_order", 1, "value", np.int32)
    distance = np.linalg.norm(arrays["position"][second] - np.array(cam.location, np.float32), axis=1)
    assert np.all(np.diff(distance) <= 1e-4)
    assert not np.array_equal(first, second)


@quads_only
def test_back_to_front_orders_by_distance_or_depth(lw):
    sorting = lw.lw_blender.splats.quads.sorting
    positions = np.array([[0, 1, 0], [0, 5, 0], [3, 0.5, 0], [0, 3, 0]], np.float32)
    eye, forward = np.zeros(3, np.float32), np.array([0, 1, 0], np.float32)
    assert sorting.back_to_front(positions, eye, forward, True).tolist() == [1, 2, 3, 0]  # |p|: 1, 5, 3.04, 3
    assert sorting.back_to_front(positions, eye, forward, False).tolist() == [1, 3, 0, 2]  # y: 1, 5, 0.5, 3
    # a world's sky 50 km away beside a near lake whose splats lie 1 cm apart: still ordered (a linear 16-bit key
    # over 0..50 km put them in one 0.76 m bucket)
    lake = np.array([[0, 50000, 0], [0, 2.00, 0], [0, 2.02, 0], [0, 2.01, 0]], np.float32)
    assert sorting.back_to_front(lake, eye, forward, True).tolist() == [0, 2, 3, 1]


@quads_only
def test_viewport_points_show_points_in_the_viewport_and_quads_in_renders(lw, clean_scene, tmp_path):
    scene = clean_scene
    nodes = lw.lw_blender.splats.quads.nodes
    # one long flat Gaussian along x (sigma 0.4 x, 0.01 y, 0.1 z), facing the camera on -Y
    scale = np.array([[0.4, 0.01, 0.1]], np.float32)
    folder, _ = _decoded(tmp_path / "d", n=1, scale=scale, position=np.zeros((1, 3), np.float32))
    np.save(folder / "rotation.npy", np.array([[1, 0, 0, 0]], np.float32))
    np.save(folder / "opacity.npy", np.array([1.0], np.float32))
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    modifier = obj.modifiers[nodes.MODIFIER_NAME]
    assert nodes.get_input(modifier, nodes.POINTS_INPUT) is False  # small carriers show quads by default
    assert len(_instance_locations(obj)) == 1  # evaluated once with quads: the switch must re-evaluate it
    nodes.set_input(modifier, nodes.POINTS_INPUT, True)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    geometry = obj.evaluated_get(depsgraph).evaluated_geometry()
    cloud = geometry.pointcloud
    assert cloud is not None and len(cloud.points) == 1 and len(_instance_locations(obj)) == 0
    np.testing.assert_allclose(_attr(cloud, "radius", 1, "value"), 3.0 * np.linalg.norm(scale, axis=1) / np.sqrt(2),
                               rtol=1e-5)
    np.testing.assert_allclose(_attr(cloud, "opacity", 1, "value"), [1.0])
    assert cloud.materials[0].name == "LW Splat Point"

    # A render shows the quad: wide along x, thin along z (a point of radius 0.88 would cover z = 0.5).
    cam = _camera(scene, location=(0.0, -4.0, 0.0))
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 4
    scene.render.resolution_x = scene.render.resolution_y = 32
    scene.render.film_transparent = True
    scene.render.filepath = str(tmp_path / "r.png")
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(tmp_path / "r.png"))
    px = np.array(image.pixels[:], np.float32).reshape(32, 32, 4)[::-1]
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    def alpha(world):
        v = world_to_camera_view(scene, cam, Vector(world))
        return px[int((1.0 - v.y) * 32), int(v.x * 32), 3]

    assert alpha((0.4, 0.0, 0.0)) > 0.3 and alpha((0.0, 0.0, 0.5)) < 0.05


@quads_only
def test_large_carriers_default_to_viewport_points(lw, clean_scene):
    nodes, sm = lw.lw_blender.splats.quads.nodes, lw.lw_blender.splats.quads.material
    mesh = bpy.data.meshes.new("big")
    mesh.vertices.add(nodes.POINTS_DEFAULT_COUNT)
    obj = bpy.data.objects.new("big", mesh)
    modifier = nodes.add_modifier(obj, sm.build_material())
    assert nodes.get_input(modifier, nodes.POINTS_INPUT) is True


def test_driven_time_shows_the_current_frame(lw, clean_scene, tmp_path):
    scene = clean_scene
    scene.frame_start, scene.frame_end = 1, 10
    scene.frame_set(1)
    folder, arrays = _decoded(tmp_path / "d")
    seq = _sequence(tmp_path / "s.lw4d", arrays["position"])
    np.save(folder / "position.npy", arrays["position"])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sequence"] = str(seq)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    driver = obj.driver_add("lw_seq.time").driver
    driver.type = "SCRIPTED"
    driver.expression = "frame * 0.25"
    for frame in (3, 6, 2):  # t = 0.75, 1.5, 0.5: the frame's own value, not the previous frame's
        scene.frame_set(frame)
        t = frame * 0.25
        np.testing.assert_allclose(_attr(obj.data, "position", 3), arrays["position"] + [0, 0, 0.5 * t], atol=1e-6)
        assert obj.lw_seq.time == pytest.approx(t)
    # the evaluated display agrees (the post handler's change was evaluated within frame_set)
    if NATIVE:
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        np.testing.assert_allclose(_attr(evaluated.data, "position", 3), arrays["position"] + [0, 0, 0.25], atol=1e-6)
        return
    np.testing.assert_allclose(np.sort(_instance_locations(obj)[:, 2]), np.sort(arrays["position"][:, 2] + 0.25),
                               atol=1e-5)
    # a small sequence's view-facing quads follow the moving Gaussians during playback (no view change)
    sorting = lw.lw_blender.splats.quads.sorting
    _camera(scene)
    sorting.update_view(scene, obj, force=True)
    before = _attr(obj.data, sorting.VIEW_ROTATION, 4, "value")
    scene.frame_set(6)
    after = _attr(obj.data, sorting.VIEW_ROTATION, 4, "value")
    _, want = sorting.facing_quads(_attr(obj.data, "position", 3), _attr(obj.data, "rotation", 4, "value"),
                                   _attr(obj.data, "scale", 3), np.array(scene.camera.location), np.zeros(3))
    np.testing.assert_allclose(_attr(obj.data, sorting.VIEW_SCALE, 3), want, rtol=1e-4, atol=1e-7)
    assert np.abs(after - before).max() > 1e-3


@pytest.mark.parametrize("engine", ["CYCLES", "BLENDER_EEVEE"])
def test_render_shows_the_stored_srgb_colours(lw, clean_scene, tmp_path, engine):
    """Splats store display (sRGB) colours; the material linearises them and a splats-only scene gets the Standard
    view transform, so a rendered opaque splat has its stored colour (dark, mid and bright values)."""
    scene = clean_scene
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.device, scene.cycles.samples = "CPU", 16
    assert scene.view_settings.view_transform != "Standard"  # Blender's default (AgX) first
    _camera(scene)
    colors = np.array([[0.02, 0.5, 0.9], [0.8, 0.25, 0.05], [0.35, 0.35, 0.35]], np.float32)
    n = len(colors)
    position = np.array([[-0.9, 0.0, 0.0], [0.0, 0.0, 0.0], [0.9, 0.0, 0.0]], np.float32)
    flat = np.tile(np.float32([0.2, 0.01, 0.2]), (n, 1))  # discs facing the camera (it looks along +y), 3 sigma apart
    folder, _ = _decoded(tmp_path / "d", n=n, position=position, scale=flat)
    np.save(folder / "color.npy", colors)
    np.save(folder / "opacity.npy", np.ones(n, np.float32))
    np.save(folder / "rotation.npy", np.tile(np.float32([1, 0, 0, 0]), (n, 1)))
    np.save(folder / "sh.npy", ((colors - 0.5) / SH_C0)[:, None, :].astype(np.float32))
    lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    assert scene.view_settings.view_transform == "Standard"
    scene.view_settings.view_transform = "AgX"  # the user's choice after the first import stays
    lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g2")
    assert scene.view_settings.view_transform == "AgX"
    bpy.data.objects.remove(bpy.data.objects["g2"])
    scene.view_settings.view_transform = "Standard"
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 96, 32, 100
    scene.render.film_transparent = True
    scene.render.dither_intensity = 0.0
    scene.render.filepath = str(tmp_path / "colours.png")
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(tmp_path / "colours.png"))
    px = np.array(img.pixels[:], np.float32).reshape(32, 96, 4)[::-1]
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    for p, c in zip(position, colors):
        v = world_to_camera_view(scene, scene.camera, Vector(p.tolist()))
        got = px[int((1 - v.y) * 32), int(v.x * 96)]
        assert got[3] > 0.9, got
        # unconverted, the colours would render as sRGB(c): 0.5 -> 0.74, 0.02 -> 0.15 (AgX shifts them further)
        np.testing.assert_allclose(got[:3], c, atol=0.03)


def test_a_scene_with_its_own_objects_keeps_its_view_transform(lw, clean_scene, tmp_path):
    scene = clean_scene
    bpy.ops.mesh.primitive_cube_add()
    before = scene.view_settings.view_transform
    scene.cycles.transparent_max_bounces = 8  # Blender's default: too few for overlapping splat layers
    folder, _ = _decoded(tmp_path / "d")
    lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    assert scene.view_settings.view_transform == before != "Standard"
    if not NATIVE:  # quads are transparent surfaces to Cycles: stacked layers need more than the default 8
        assert scene.cycles.transparent_max_bounces == lw.lw_blender.splats.quads.display.TRANSPARENT_BOUNCES
        scene.cycles.transparent_max_bounces = 512  # a higher limit is kept
        lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g2")
        assert scene.cycles.transparent_max_bounces == 512
    scene.view_settings.look = "AgX - Punchy"
    assert bpy.ops.lw.splat_colors() == {"FINISHED"}  # the panel's button when the user wants the photo's colours
    assert (scene.view_settings.view_transform, scene.view_settings.look) == ("Standard", "None")


def _quat_matrix(q):
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], 1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], 1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1)], 1)


@quads_only
def test_facing_quads_carry_the_projected_covariance(lw):
    """Each quad faces the view (normal = viewing direction) and its two sigmas and axes give back the marginal
    of the 3D covariance across the view: E^T Sigma E in any basis E of the quad plane."""
    sorting = lw.lw_blender.splats.quads.sorting
    rng = np.random.default_rng(5)
    n = 200
    pos = rng.uniform(-2, 2, (n, 3))
    q = rng.normal(size=(n, 4))
    s = rng.uniform(0.01, 0.5, (n, 3))
    eye = np.array([0.5, -6.0, 1.0])
    rot, sig = sorting.facing_quads(pos, q, s, eye, np.array([0.0, 1.0, 0.0]), True)
    frames = _quat_matrix(rot.astype(np.float64))
    np.testing.assert_allclose(np.linalg.det(frames), 1.0, atol=1e-5)
    d = (pos - eye) / np.linalg.norm(pos - eye, axis=1, keepdims=True)
    np.testing.assert_allclose(frames[:, :, 2], d, atol=1e-5)  # quad normal along the view ray
    m = _quat_matrix(q) * s[:, None, :]
    cov = m @ m.transpose(0, 2, 1)
    plane = frames[:, :, :2]
    want = plane.transpose(0, 2, 1) @ cov @ plane
    got = np.zeros((n, 2, 2))  # in the quad's own axes the projected covariance is diag(sigma_x^2, sigma_y^2)
    got[:, 0, 0], got[:, 1, 1] = sig[:, 0].astype(np.float64) ** 2, sig[:, 1].astype(np.float64) ** 2
    np.testing.assert_allclose(want, got, rtol=1e-3, atol=1e-6)
    assert (sig[:, 2] < sig[:, 1]).all() and (sig[:, 1] <= sig[:, 0] + 1e-7).all()


@quads_only
def test_a_gaussian_seen_edge_on_to_its_quad_plane_still_renders_its_projected_ellipse(lw, clean_scene, tmp_path):
    """The quad of a Gaussian lies in the plane of its two largest axes; seen edge-on to that plane it used to
    render as a sliver. With the view-facing frame the render shows its projected ellipse: vertical sigma 0.25 m
    (its smallest axis, z), horizontal 0.3 m, as 3DGS would draw it."""
    scene = clean_scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 16
    _camera(scene)  # at y = -4 looking along +y: sees the x-z plane
    folder, _ = _decoded(tmp_path / "d", n=1, position=np.zeros((1, 3), np.float32),
                         scale=np.float32([[0.3, 0.3, 0.25]]))  # quad in the x-y plane: edge-on to the camera
    np.save(folder / "rotation.npy", np.float32([[1, 0, 0, 0]]))
    np.save(folder / "opacity.npy", np.ones(1, np.float32))
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    scene.render.resolution_x = scene.render.resolution_y = 64
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.dither_intensity = 0.0
    scene.render.filepath = str(tmp_path / "edge.png")
    bpy.ops.render.render(write_still=True)
    assert "lw_view_rotation" in obj.data.attributes
    img = bpy.data.images.load(str(tmp_path / "edge.png"))
    px = np.array(img.pixels[:], np.float32).reshape(64, 64, 4)[::-1]
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    def alpha_at(p):
        v = world_to_camera_view(scene, scene.camera, Vector(p))
        return float(px[int((1 - v.y) * 64), int(v.x * 64)][3])

    assert alpha_at((0, 0, 0)) > 0.9
    assert abs(alpha_at((0, 0, 0.25)) - np.exp(-0.5)) < 0.12  # one vertical sigma up
    assert abs(alpha_at((0.3, 0, 0)) - np.exp(-0.5)) < 0.12  # one horizontal sigma right


@quads_only
def test_large_carriers_get_facing_quads_in_renders_only(lw, clean_scene, tmp_path, monkeypatch):
    sorting = lw.lw_blender.splats.quads.sorting
    scene = clean_scene
    scene.render.engine = "CYCLES"
    _camera(scene)
    folder, _ = _decoded(tmp_path / "d")
    obj = lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    assert sorting.VIEW_ROTATION in obj.data.attributes  # N = 40: small enough for the viewport
    monkeypatch.setattr(sorting, "VIEWPORT_FACING_MAX", N - 1)
    assert sorting.update_view(scene, obj)  # the render-time frame is dropped outside renders
    assert sorting.VIEW_ROTATION not in obj.data.attributes and sorting.VIEW_SCALE not in obj.data.attributes
    assert sorting.update_view(scene, obj, force=True, rendering=True)
    assert sorting.VIEW_ROTATION in obj.data.attributes


@quads_only
def test_many_overlapping_splats_render_without_holes_in_cycles(lw, clean_scene, tmp_path):
    """80 faint splats one behind the other (the low-alpha skirts of a world's stacked sky layers): with Blender's
    default of 8 transparent bounces Cycles cuts the ray short and the pixel goes dark; the import raises it."""
    scene = clean_scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 8
    _camera(scene)
    n = 80
    position = np.stack([np.zeros(n), np.linspace(0.0, 2.0, n), np.zeros(n)], 1).astype(np.float32)
    folder, _ = _decoded(tmp_path / "d", n=n, position=position, scale=np.tile(np.float32([0.3, 0.01, 0.3]), (n, 1)))
    white = np.ones((n, 3), np.float32)
    np.save(folder / "color.npy", white)
    np.save(folder / "sh.npy", ((white - 0.5) / SH_C0)[:, None, :].astype(np.float32))
    np.save(folder / "opacity.npy", np.full(n, 0.05, np.float32))
    np.save(folder / "rotation.npy", np.tile(np.float32([1, 0, 0, 0]), (n, 1)))
    lw.lw_blender.splats.carrier.load_decoded(bpy.context, folder, "g")
    scene.render.resolution_x = scene.render.resolution_y = 16
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.filepath = str(tmp_path / "stack.png")
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(tmp_path / "stack.png"))
    centre = np.array(img.pixels[:], np.float32).reshape(16, 16, 4)[8, 8]
    assert centre[3] > 0.95 and (centre[:3] > 0.9).all(), centre  # 1 - 0.95^80 = 0.98 of white
