"""Lifting: the input view is reproduced, surfels are pixel-sized and nothing is stretched across depth edges."""

from __future__ import annotations

import numpy as np
import torch

from backend.render.cameras import Camera
from backend.render.rasterize import rasterize
from backend.world.lift import LiftConfig, depth_edges, lift_image
from backend.world.pipeline import new_world, read_image
from backend.world.samples.make_landscape import SAMPLE_PATH


def test_rerendering_the_input_view_of_the_sample_reproduces_it_above_30db(tmp_path, make_config):
    world = new_world(SAMPLE_PATH, tmp_path / "w", config=make_config(128))
    image = read_image(world.file("image.png"))
    g = __import__("backend.io.ply", fromlist=["read_ply"]).read_ply(world.file("gaussians.ply"))
    out = rasterize(g.to_torch(), world.current.opencv_camera())
    mse = float(((out.color.numpy() - image) ** 2).mean())
    psnr = 10 * np.log10(1 / mse)
    assert psnr >= 30.0, psnr
    assert float(out.alpha.min()) > 0.99
    assert world.current.stats["psnr_input_view"] >= 30.0
    assert len(g) == 128 * 128 and set(g.extra) == {"region", "step"}
    sky = g.extra["region"] == 1.0
    centre = world.current.opencv_camera().center
    # the sky is one far layer: the sphere of 50 km around the camera centre (at infinity for a dolly of metres)
    np.testing.assert_allclose(np.linalg.norm(g.means[sky] - centre, axis=1), 50_000.0, rtol=1e-4)


def _step_scene(n=32, near=2.0, far=8.0):
    """A fronto-parallel near square in front of a far wall: a depth edge down the middle column."""
    f = n * 500 / 512
    K = np.array([[f, 0, n / 2], [0, f, n / 2], [0, 0, 1.0]])
    cam = Camera(K, np.eye(4), n, n)
    depth = np.full((n, n), far, np.float32)
    depth[:, : n // 2] = near
    img = np.full((n, n, 3), 0.5, np.float32)
    return cam, depth, img, f


def test_surfels_have_the_pixel_footprint_and_face_the_camera_on_depth_edges():
    cam, depth, img, f = _step_scene()
    cfg = LiftConfig()
    edges = depth_edges(depth, cfg.edge_threshold)
    assert edges[:, 15:17].all() and not edges[:, :14].any() and not edges[:, 18:].any()
    g = lift_image(img, depth, cam, config=cfg)
    scales = np.exp(g.log_scales)
    z = g.means[:, 2]
    # In-plane axes: k z / f across the slope, k z / (f cos theta) along it (a fronto-parallel plane is seen
    # obliquely off the image centre); camera-facing, unstretched surfels on the edge; thin along the normal.
    v, u = np.mgrid[0:32, 0:32] + 0.5
    cos = (1.0 / np.sqrt(((u - 16) / f) ** 2 + ((v - 16) / f) ** 2 + 1)).reshape(-1)
    cos = np.where(edges.reshape(-1), 1.0, cos)
    np.testing.assert_allclose(scales[:, 1], cfg.pixel_scale * z / f, rtol=1e-4)
    np.testing.assert_allclose(scales[:, 0], cfg.pixel_scale * z / (f * cos), rtol=1e-3)
    np.testing.assert_allclose(scales[:, 2], cfg.thickness * cfg.pixel_scale * z / f, rtol=1e-4)
    # No Gaussian spans the gap between the two depths (no curtain): extent along z stays tiny.
    rot = __import__("scipy.spatial.transform", fromlist=["Rotation"]).Rotation.from_quat(
        np.concatenate([g.quats[:, 1:], g.quats[:, :1]], 1)).as_matrix()
    extent_z = np.sqrt(((rot[:, 2, :] * scales) ** 2).sum(1))
    assert extent_z.max() < 0.05 * (8.0 - 2.0)


def test_a_ground_plane_gets_surfels_lying_in_the_plane():
    n = 32
    f = 31.25
    K = np.array([[f, 0, n / 2], [0, f, n / 2], [0, 0, 1.0]])
    # Camera looking down 45 degrees at the plane y_cam-z_cam: depth from ray-plane intersection.
    cam = Camera(K, np.eye(4), n, n)
    v, _ = np.mgrid[0:n, 0:n] + 0.5
    ray_y = (v - n / 2) / f
    normal = np.array([0, -1.0, -1.0]) / np.sqrt(2)  # plane n.x = -d, tilted 45 degrees
    depth = (-3.0 / (normal[1] * ray_y + normal[2])).astype(np.float32)
    g = lift_image(np.full((n, n, 3), 0.5, np.float32), depth, cam, config=LiftConfig(max_stretch=10))
    rot = __import__("scipy.spatial.transform", fromlist=["Rotation"]).Rotation.from_quat(
        np.concatenate([g.quats[:, 1:], g.quats[:, :1]], 1)).as_matrix()
    inner = (np.abs(g.means[:, 0]) < 1.0)
    cos = np.abs(rot[inner][:, :, 2] @ normal)
    assert np.median(cos) > 0.99  # the thin axis is the plane normal


def test_rendering_the_lift_of_a_textured_step_scene_is_sharp():
    cam, depth, _, _ = _step_scene()
    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 0.8, (32, 32, 3)).astype(np.float32)
    img = __import__("cv2").GaussianBlur(img, (0, 0), 1.0)  # texture at the scale of a couple of pixels
    g = lift_image(img, depth, cam)
    with torch.no_grad():
        out = rasterize(g.to_torch(), cam)
    assert 10 * np.log10(1 / float(((out.color.numpy() - img) ** 2).mean())) > 30


def test_quaternions_of_the_surfel_frames_are_scipy_s_sign_included():
    import torch
    from scipy.spatial.transform import Rotation

    from backend.world.lift import matrix_to_quat

    rots = Rotation.random(2000, random_state=1)
    # every branch: rotations by ~180 degrees about each axis (a largest diagonal entry) and near the identity
    extra = Rotation.from_rotvec(np.r_[np.eye(3) * 3.1, np.eye(3) * 1e-4, [[0.0, 0.0, 0.0]]])
    mats = np.r_[rots.as_matrix(), extra.as_matrix()]
    xyzw = Rotation.from_matrix(mats).as_quat()
    want = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], -1)
    got = matrix_to_quat(torch.as_tensor(mats)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)
