"""Lifting an image with depth into Gaussian surfels (LivingWorld stage 1, after WonderWorld).

One Gaussian per pixel (or per ``stride`` x ``stride`` block). For pixel centre p = (u, v) = (j + 0.5, i + 0.5)
with depth z (camera axis, metres) and intrinsics K:

    X_cam = z K^-1 (u, v, 1)^T,   X_world = T_cam->world X_cam.

Scale from the pixel footprint: a pixel at depth z covers z / f metres on a plane facing the camera, so the
in-plane standard deviation is s = k z / f (k = ``pixel_scale``). Surfels lie in the surface plane: the normal n
comes from the cross product of the unprojected neighbours' differences, the axis along the slope (the ray
projected on the plane) is stretched by 1 / |cos theta| (theta between ray and normal) so the surfel still
covers one pixel in the input view, and the normal axis is thin (``thickness`` * s).

Surfels face the camera instead where the surface normal is unreliable: on the sky, on grazing surfaces
(1 / |cos theta| > ``max_stretch``) and on depth discontinuities, found by the edge test
max(|d log z / du|, |d log z / dv|) > ``edge_threshold`` (per pixel, on one-sided differences). A surfel there is
pixel-sized and faces the camera, so nothing is stretched across the gap: no "curtains" in novel views.

The sky is put on a far layer: the sphere of radius ``sky_depth`` around the camera centre (``sky_z``), so
the skies of views that share a centre (the camera turned in place) lie on one surface and move together. Its
radius, 50 km, puts it at infinity for any camera that moves a few metres: a dolly of d metres shifts it by
f d / 50 000 pixels (0.05 px for 5 m at f = 500 px), and each surfel's size grows with its distance, so it covers
the same angle as the pixel it came from.
Colour is the SH DC term of the pixel's colour.
Every Gaussian carries ``extra["region"]`` (0 ground, 1 sky, 2 water) and ``extra["step"]`` (the world step
that created it) as float32, kept in the PLY for motion and for the add-on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import InvalidInput
from ..gaussians import Gaussians, rgb_to_sh_dc
from ..render.cameras import Camera

REGION_GROUND, REGION_SKY, REGION_WATER = 0.0, 1.0, 2.0


@dataclass(frozen=True)
class LiftConfig:
    pixel_scale: float = 0.4  # in-plane std of a surfel, in pixels of the input view
    thickness: float = 0.1  # normal-axis std relative to the in-plane std
    opacity: float = 0.995
    edge_threshold: float = 0.08  # |gradient of log depth| per pixel marking a depth discontinuity
    max_stretch: float = 4.0  # larger slopes (grazing surfaces) get camera-facing surfels
    stride: int = 1  # 1: one Gaussian per pixel; 2: one per 2x2 block
    sky_depth: float = 50_000.0  # metres; the far layer (module docstring)


def depth_edges(depth: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: pixels where |log z| changes by more than ``threshold`` to a 4-neighbour."""
    logz = np.log(np.maximum(depth, 1e-6))
    edge = np.zeros(depth.shape, bool)
    dx = np.abs(np.diff(logz, axis=1)) > threshold
    dy = np.abs(np.diff(logz, axis=0)) > threshold
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def sky_z(K: np.ndarray, height: int, width: int, sky_depth: float) -> np.ndarray:
    """(H, W) depth along the camera axis at which each pixel's ray meets the sky sphere (radius ``sky_depth``
    around the camera centre): z = sky_depth / |K^-1 (u, v, 1)|, at pixel centres."""
    K = np.asarray(K, np.float64)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    return (sky_depth / np.sqrt(1.0 + x * x + y * y)).astype(np.float32)


def lift_image(image: np.ndarray, depth: np.ndarray, camera: Camera, sky: np.ndarray | None = None,
               water: np.ndarray | None = None, select: np.ndarray | None = None, step: int = 0,
               config: LiftConfig = LiftConfig()) -> Gaussians:
    """Gaussians (numpy, SH degree 0) for the pixels of ``image`` selected by ``select``.

    image (H, W, 3) float RGB in [0, 1]; depth (H, W) metres along the camera z axis (> 0 where selected);
    camera: the view the image was taken from (its size must be H x W); sky / water / select (H, W) bool
    (None: no sky / no water / every pixel). With ``stride`` > 1 the inputs are area-averaged (depth: nearest)
    to blocks first and K is scaled with them.
    """
    h, w = depth.shape
    if image.shape[:2] != (h, w) or (camera.height, camera.width) != (h, w):
        raise InvalidInput(f"image {image.shape[:2]}, depth {depth.shape} and camera {camera.height}x{camera.width} "
                           "must have the same size")
    sky = np.zeros((h, w), bool) if sky is None else sky.astype(bool)
    water = np.zeros((h, w), bool) if water is None else water.astype(bool)
    select = np.ones((h, w), bool) if select is None else select.astype(bool)
    K = np.asarray(camera.K, np.float64)
    s = int(config.stride)
    if s > 1:
        size = (w // s, h // s)
        image = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        depth = depth[s // 2::s, s // 2::s][: size[1], : size[0]]
        sky, water, select = (m[s // 2::s, s // 2::s][: size[1], : size[0]] for m in (sky, water, select))
        K = K.copy()
        K[:2] /= s
        h, w = depth.shape
    depth = np.where(sky, sky_z(K, h, w, config.sky_depth), depth).astype(np.float64)
    select = select & np.isfinite(depth) & (depth > 0)
    if not select.any():
        return _empty()

    fx, fy = K[0, 0], K[1, 1]
    f = 0.5 * (fx + fy)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    rays = np.stack([(u - K[0, 2]) / fx, (v - K[1, 2]) / fy, np.ones_like(u)], -1)  # (H, W, 3), z = 1
    pts = rays * depth[..., None]  # camera frame
    # Surface normal from one-sided neighbour differences (central where both sides exist).
    du = np.gradient(pts, axis=1)
    dv = np.gradient(pts, axis=0)
    normal = _unit(np.cross(du, dv))
    view = _unit(rays)
    cos = np.sum(normal * view, -1)
    normal = np.where(cos[..., None] > 0, -normal, normal)  # face the camera
    cos = np.abs(cos)
    stretch = 1.0 / np.maximum(cos, 1e-6)
    facing = sky | depth_edges(depth, config.edge_threshold) | (stretch > config.max_stretch)
    normal = np.where(facing[..., None], -view, normal)
    stretch = np.where(facing, 1.0, stretch)
    # Tangent frame: t1 along the slope (the view ray projected on the plane), t2 = n x t1.
    t1 = view - np.sum(view * normal, -1, keepdims=True) * normal
    fallback = np.broadcast_to(np.array([1.0, 0.0, 0.0]), t1.shape)
    fallback = fallback - np.sum(fallback * normal, -1, keepdims=True) * normal
    t1 = np.where((np.linalg.norm(t1, axis=-1) < 1e-6)[..., None], fallback, t1)
    t1 = _unit(t1)
    t2 = np.cross(normal, t1)

    idx = np.nonzero(select.reshape(-1))[0]
    rot_cam = np.stack([t1, t2, normal], -1).reshape(-1, 3, 3)[idx]  # columns = local axes in camera frame
    cam_to_world = np.linalg.inv(np.asarray(camera.world_to_cam, np.float64))
    rot_world = cam_to_world[:3, :3] @ rot_cam
    xyzw = Rotation.from_matrix(rot_world).as_quat()  # scalar-last
    quats = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], -1)
    means = pts.reshape(-1, 3)[idx] @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    sigma = (config.pixel_scale * depth / f).reshape(-1)[idx]
    scales = np.stack([sigma * stretch.reshape(-1)[idx], sigma, sigma * config.thickness], -1)
    colors = np.clip(image.reshape(-1, 3)[idx], 0.0, 1.0)
    region = np.where(sky, REGION_SKY, np.where(water, REGION_WATER, REGION_GROUND)).reshape(-1)[idx]
    n = len(idx)
    logit = float(np.log(config.opacity / (1 - config.opacity)))
    return Gaussians(
        means=means.astype(np.float32),
        quats=quats.astype(np.float32),
        log_scales=np.log(scales).astype(np.float32),
        opacity_logits=np.full(n, logit, np.float32),
        sh=rgb_to_sh_dc(colors).astype(np.float32)[:, None, :],
        extra={"region": region.astype(np.float32), "step": np.full(n, float(step), np.float32)},
    )


def _empty() -> Gaussians:
    z = np.zeros
    return Gaussians(z((0, 3), np.float32), z((0, 4), np.float32), z((0, 3), np.float32), z(0, np.float32),
                     z((0, 1, 3), np.float32), extra={"region": z(0, np.float32), "step": z(0, np.float32)})
