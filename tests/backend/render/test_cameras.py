"""Blender camera <-> OpenCV conversions (the projection itself is checked against bpy in tests/blender)."""

import itertools
import json
import zlib

import numpy as np
import pytest

from backend.errors import InvalidInput
from backend.render.cameras import (
    BlenderCameraSpec,
    Camera,
    blender_matrix_world,
    blender_to_opencv,
    camera_from_fov,
    look_at,
    opencv_to_blender,
    world_to_cam_from_blender,
)


def rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def pose(rng, scale=1.0):
    m = np.eye(4)
    m[:3, :3] = rotation(rng) * scale
    m[:3, 3] = rng.normal(size=3) * 3
    return m


def project(camera: Camera, p):
    pc = camera.world_to_cam @ np.append(p, 1.0)
    return (camera.K @ pc[:3])[:2] / pc[2], pc[2]


def test_default_blender_camera_looks_down_minus_z():
    w2c = world_to_cam_from_blender(np.eye(4))
    np.testing.assert_allclose(w2c @ [0, 0, -5, 1], [0, 0, 5, 1])
    np.testing.assert_allclose(w2c @ [0, 1, -5, 1], [0, -1, 5, 1])  # Blender up is OpenCV -y (image up)
    np.testing.assert_allclose(blender_matrix_world(w2c), np.eye(4), atol=1e-12)


FITS, SHIFTS, ASPECTS = ["AUTO", "HORIZONTAL", "VERTICAL"], [(0.0, 0.0), (0.12, -0.3)], [(1.0, 1.0), (2.0, 1.0),
                                                                                          (1.0, 1.5)]


@pytest.mark.parametrize("fit,shift,aspect,size", list(itertools.product(FITS, SHIFTS, ASPECTS,
                                                                           [(640, 480), (360, 720)])))
def test_blender_to_opencv_and_back_is_the_same_camera(fit, shift, aspect, size):
    rng = np.random.default_rng(zlib.crc32(repr((fit, shift, aspect, size)).encode()))
    spec = BlenderCameraSpec(matrix_world=tuple(map(tuple, pose(rng, scale=2.0))), lens=42.0, sensor_width=36.0,
                             sensor_height=20.0, sensor_fit=fit, shift_x=shift[0], shift_y=shift[1], clip_start=0.2,
                             clip_end=300.0, resolution_x=size[0], resolution_y=size[1], resolution_percentage=100,
                             pixel_aspect_x=aspect[0], pixel_aspect_y=aspect[1])
    camera = blender_to_opencv(spec)
    assert camera.K[1, 1] / camera.K[0, 0] == pytest.approx(aspect[0] / aspect[1])
    back = opencv_to_blender(camera, sensor_width=36.0, sensor_height=20.0, sensor_fit=fit)
    for name in ("lens", "shift_x", "shift_y", "clip_start", "clip_end", "pixel_aspect_x", "pixel_aspect_y",
                 "resolution_x", "resolution_y"):
        assert getattr(back, name) == pytest.approx(getattr(spec, name), abs=1e-9), name
    m = np.array(spec.matrix_world)
    m[:3, :3] /= 2.0  # the spec's scale is dropped
    np.testing.assert_allclose(np.array(back.matrix_world), m, atol=1e-9)


@pytest.mark.parametrize("fit", FITS)
def test_opencv_to_blender_and_back_is_the_same_camera(fit):
    rng = np.random.default_rng(7)
    for fx, fy, w, h in [(500.0, 500.0, 640, 480), (300.0, 450.0, 400, 600), (800.0, 610.0, 1000, 300)]:
        K = np.array([[fx, 0, w * rng.uniform(0.3, 0.7)], [0, fy, h * rng.uniform(0.3, 0.7)], [0, 0, 1]])
        camera = Camera(K=K, world_to_cam=np.linalg.inv(pose(rng)), width=w, height=h, near=0.05, far=80.0)
        spec = BlenderCameraSpec.from_dict(json.loads(json.dumps(opencv_to_blender(camera, sensor_fit=fit).to_dict())))
        assert min(spec.pixel_aspect_x, spec.pixel_aspect_y) == 1.0
        again = blender_to_opencv(spec)
        np.testing.assert_allclose(again.K, K, atol=1e-9)
        np.testing.assert_allclose(again.world_to_cam, camera.world_to_cam, atol=1e-9)
        assert (again.width, again.height, again.near, again.far) == (w, h, 0.05, 80.0)


def test_resolution_percentage_scales_the_image_not_the_view():
    base = {"matrix_world": np.eye(4).tolist(), "resolution_x": 1920, "resolution_y": 1080, "shift_x": 0.1, "lens": 35.0}
    full = blender_to_opencv(BlenderCameraSpec.from_dict({**base, "resolution_percentage": 100}))
    half = blender_to_opencv(BlenderCameraSpec.from_dict({**base, "resolution_percentage": 50}))
    assert (half.width, half.height) == (960, 540)
    np.testing.assert_allclose(half.K[:2], full.K[:2] / 2)
    # 36 mm sensor across 1920 px at 35 mm: fx = 35 * 1920 / 36; shift 0.1 moves the centre by 192 px
    np.testing.assert_allclose(full.K[0], [35 * 1920 / 36, 0, 960 - 192])


def test_spec_dict_round_trip_and_errors():
    spec = BlenderCameraSpec(matrix_world=tuple(map(tuple, np.eye(4))), sensor_fit="VERTICAL", lens=20.0)
    assert BlenderCameraSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    bad = [{}, {"matrix_world": [[1, 0], [0, 1]]}, {"matrix_world": np.eye(4).tolist(), "sensor_fit": "FILL"},
           {"matrix_world": np.eye(4).tolist(), "lens": -1}, {"matrix_world": np.eye(4).tolist(), "zoom": 2},
           {"matrix_world": np.eye(4).tolist(), "clip_start": 5.0, "clip_end": 1.0},
           {"matrix_world": np.eye(4).tolist(), "lens": "long"}]
    for data in bad:
        with pytest.raises(InvalidInput):
            BlenderCameraSpec.from_dict(data)
    with pytest.raises(InvalidInput):
        opencv_to_blender(Camera(K=np.array([[100.0, 3.0, 50], [0, 100, 50], [0, 0, 1]]), world_to_cam=np.eye(4),
                                 width=100, height=100))


def test_look_at_centres_the_target_with_up_upwards():
    cam = camera_from_fov(eye=[4.0, -3.0, 2.0], target=[0.0, 0.0, 0.5], width=200, height=100, fov_deg=60.0)
    uv, z = project(cam, np.array([0.0, 0.0, 0.5]))
    np.testing.assert_allclose(uv, [100, 50], atol=1e-9)
    assert z == pytest.approx(np.linalg.norm([4.0, -3.0, 1.5]))
    uv_up, _ = project(cam, np.array([0.0, 0.0, 1.0]))
    assert uv_up[1] < 50 and abs(uv_up[0] - 100) < 1e-9  # world +Z appears higher in the image
    assert np.linalg.det(cam.world_to_cam[:3, :3]) == pytest.approx(1.0)
    # a point 30 degrees off axis horizontally lands on the image edge
    fwd = np.array([-4.0, 3.0, -1.5]) / np.linalg.norm([4.0, 3.0, 1.5])
    right = cam.cam_to_world[:3, 0]
    uv_edge, _ = project(cam, cam.center + np.cos(np.radians(30)) * fwd + np.sin(np.radians(30)) * right)
    assert uv_edge[0] == pytest.approx(200.0)
    with pytest.raises(InvalidInput):
        look_at([0, 0, 5], [0, 0, 0], up=(0, 0, 1), K=np.eye(3), width=10, height=10)
