"""Our Blender-camera conversion projects points where Blender itself does (bpy_extras.world_to_camera_view)."""

import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Euler, Matrix, Vector

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from backend.render.cameras import BlenderCameraSpec, blender_to_opencv

CASES = [
    # resolution_x, resolution_y, percentage, aspect_x, aspect_y, fit, lens, sensor_w, sensor_h, shift_x, shift_y
    (640, 480, 100, 1.0, 1.0, "AUTO", 50.0, 36.0, 24.0, 0.0, 0.0),
    (480, 640, 50, 1.0, 1.0, "AUTO", 35.0, 36.0, 24.0, 0.1, -0.05),
    (640, 480, 100, 1.0, 1.0, "VERTICAL", 28.0, 36.0, 20.0, -0.2, 0.15),
    (300, 500, 100, 1.0, 1.0, "HORIZONTAL", 85.0, 30.0, 24.0, 0.05, 0.3),
    (640, 360, 75, 2.0, 1.0, "AUTO", 50.0, 36.0, 24.0, 0.1, 0.1),
    (400, 400, 100, 1.0, 1.7, "AUTO", 24.0, 36.0, 24.0, -0.1, 0.2),
    (500, 300, 100, 1.0, 3.0, "AUTO", 40.0, 36.0, 24.0, 0.0, -0.1),  # aspect flips AUTO to VERTICAL
]


@pytest.mark.parametrize("case", CASES)
def test_projection_matches_blender(case):
    resx, resy, pct, aspx, aspy, fit, lens, sw, sh, shx, shy = case
    scene = bpy.data.scenes.new("lw_cam_test")
    data = bpy.data.cameras.new("lw_cam_test")
    cam = bpy.data.objects.new("lw_cam_test", data)
    try:
        scene.collection.objects.link(cam)
        scene.camera = cam
        r = scene.render
        r.resolution_x, r.resolution_y, r.resolution_percentage = resx, resy, pct
        r.pixel_aspect_x, r.pixel_aspect_y = aspx, aspy
        data.lens, data.sensor_width, data.sensor_height, data.sensor_fit = lens, sw, sh, fit
        data.shift_x, data.shift_y = shx, shy
        data.clip_start, data.clip_end = 0.05, 250.0
        cam.matrix_world = (Matrix.Translation((1.0, -4.0, 2.5)) @ Euler((1.2, 0.1, 0.4)).to_matrix().to_4x4()
                            @ Matrix.Diagonal((1.5, 1.5, 1.5, 1.0)))  # scale must not matter
        spec = BlenderCameraSpec.from_dict({
            "matrix_world": [list(row) for row in cam.matrix_world], "lens": data.lens,
            "sensor_width": data.sensor_width, "sensor_height": data.sensor_height, "sensor_fit": data.sensor_fit,
            "shift_x": data.shift_x, "shift_y": data.shift_y, "clip_start": data.clip_start,
            "clip_end": data.clip_end, "resolution_x": resx, "resolution_y": resy, "resolution_percentage": pct,
            "pixel_aspect_x": aspx, "pixel_aspect_y": aspy})
        camera = blender_to_opencv(spec)
        assert (camera.width, camera.height) == (resx * pct // 100, resy * pct // 100)
        assert (camera.near, camera.far) == pytest.approx((0.05, 250.0))

        rng = np.random.default_rng(0)
        local = np.concatenate([rng.uniform(-1, 1, (20, 2)) * 2, -rng.uniform(2, 20, (20, 1))], 1)  # in front
        for p_local in local:
            p_world = cam.matrix_world @ Vector(p_local)
            ndc = world_to_camera_view(scene, cam, p_world)
            want = np.array([ndc.x * camera.width, (1.0 - ndc.y) * camera.height])
            pc = camera.world_to_cam @ np.append(np.array(p_world), 1.0)
            assert pc[2] == pytest.approx(ndc.z, rel=1e-5)  # camera z is the distance along the view axis
            uv = (camera.K @ pc[:3])[:2] / pc[2]
            np.testing.assert_allclose(uv, want, atol=1e-3)  # pixels
    finally:
        bpy.data.objects.remove(cam)
        bpy.data.cameras.remove(data)
        bpy.data.scenes.remove(scene)
