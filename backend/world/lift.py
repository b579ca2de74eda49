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
import torch

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


def depth_edges(depth, threshold: float):
    """(H, W) bool: pixels where |log z| changes by more than ``threshold`` to a 4-neighbour (numpy in, numpy out;
    a torch tensor in, a tensor on its device out)."""
    if not isinstance(depth, torch.Tensor):
        return depth_edges(torch.as_tensor(np.asarray(depth, np.float64)), threshold).numpy()
    logz = torch.log(depth.clamp_min(1e-6))
    edge = torch.zeros(depth.shape, dtype=torch.bool, device=depth.device)
    dx = (logz[:, 1:] - logz[:, :-1]).abs() > threshold
    dy = (logz[1:, :] - logz[:-1, :]).abs() > threshold
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge


def sky_z(K: np.ndarray, height: int, width: int, sky_depth: float) -> np.ndarray:
    """(H, W) depth along the camera axis at which each pixel's ray meets the sky sphere (radius ``sky_depth``
    around the camera centre): z = sky_depth / |K^-1 (u, v, 1)|, at pixel centres."""
    K = np.asarray(K, np.float64)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    return (sky_depth / np.sqrt(1.0 + x * x + y * y)).astype(np.float32)


def lift_image(image: np.ndarray, depth: np.ndarray, camera: Camera, sky: np.ndarray | None = None,
               water: np.ndarray | None = None, select: np.ndarray | None = None, step: int = 0,
               config: LiftConfig = LiftConfig(), device: str | torch.device | None = None) -> Gaussians:
    """Gaussians (numpy, SH degree 0) for the pixels of ``image`` selected by ``select``.

    image (H, W, 3) float RGB in [0, 1]; depth (H, W) metres along the camera z axis (> 0 where selected);
    camera: the view the image was taken from (its size must be H x W); sky / water / select (H, W) bool
    (None: no sky / no water / every pixel). With ``stride`` > 1 the inputs are area-averaged (depth: nearest)
    to blocks first and K is scaled with them. ``device``: where the per-pixel maths runs (torch, float64; None:
    the CPU); the Gaussians come back in host memory either way.
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

    return _lift_torch(image, depth, sky, water, select, K, np.asarray(camera.world_to_cam, np.float64), step,
                       config, torch.device(device if device is not None else "cpu"))


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a x b over the last axis (written out: cheaper than the generic cross of broadcast operands)."""
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], -1)


def _unit_t(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-12)


def _gradient(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``np.gradient`` along ``dim`` (unit spacing): central differences inside, one-sided at the two ends."""
    n = x.shape[dim]
    if n < 2:
        return torch.zeros_like(x)
    out = torch.empty_like(x)
    nar = x.narrow
    out.narrow(dim, 0, 1).copy_(nar(dim, 1, 1) - nar(dim, 0, 1))
    out.narrow(dim, n - 1, 1).copy_(nar(dim, n - 1, 1) - nar(dim, n - 2, 1))
    if n > 2:
        out.narrow(dim, 1, n - 2).copy_((nar(dim, 2, n - 2) - nar(dim, 0, n - 2)) * 0.5)
    return out


def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w, x, y, z) of rotation matrices (K, 3, 3): the branch-on-the-largest-diagonal method
    that ``scipy.spatial.transform.Rotation.from_matrix`` uses (the same quaternion, sign included)."""
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    tr = m00 + m11 + m22
    choice = torch.argmax(torch.stack([m00, m11, m22, tr], -1), -1)
    xyzw = torch.empty(len(m), 4, dtype=m.dtype, device=m.device)
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        sel = choice == i
        q = torch.empty_like(xyzw)
        q[:, i] = 1 - tr + 2 * m[:, i, i]
        q[:, j] = m[:, j, i] + m[:, i, j]
        q[:, k] = m[:, k, i] + m[:, i, k]
        q[:, 3] = m[:, k, j] - m[:, j, k]
        xyzw = torch.where(sel[:, None], q, xyzw)
    q = torch.stack([m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1], 1 + tr], -1)
    xyzw = torch.where((choice == 3)[:, None], q, xyzw)
    xyzw = _unit_t(xyzw)
    return torch.cat([xyzw[:, 3:], xyzw[:, :3]], -1)


def _lift_torch(image, depth, sky, water, select, K, world_to_cam, step, config, dev) -> Gaussians:
    """The body of ``lift_image`` in float64 torch on ``dev`` (module docstring); numpy Gaussians out."""
    h, w = depth.shape

    def t(a, dtype=torch.float64):
        return torch.as_tensor(np.ascontiguousarray(a), device=dev).to(dtype)

    depth_t = t(depth)
    sky_t, water_t, select_t = t(sky, torch.bool), t(water, torch.bool), t(select, torch.bool)
    fx, fy = float(K[0, 0]), float(K[1, 1])
    f = 0.5 * (fx + fy)
    v = torch.arange(h, dtype=torch.float64, device=dev)[:, None].expand(h, w) + 0.5
    u = torch.arange(w, dtype=torch.float64, device=dev)[None, :].expand(h, w) + 0.5
    rays = torch.stack([(u - float(K[0, 2])) / fx, (v - float(K[1, 2])) / fy, torch.ones_like(u)], -1)  # z = 1
    pts = rays * depth_t[..., None]  # camera frame
    # Surface normal from one-sided neighbour differences (central where both sides exist).
    normal = _unit_t(_cross(_gradient(pts, 1), _gradient(pts, 0)))
    view = _unit_t(rays)
    cos = (normal * view).sum(-1)
    normal = torch.where(cos[..., None] > 0, -normal, normal)  # face the camera
    stretch = 1.0 / cos.abs().clamp_min(1e-6)
    facing = sky_t | depth_edges(depth_t, config.edge_threshold) | (stretch > config.max_stretch)
    # from here on only the selected pixels
    idx = torch.nonzero(select_t.reshape(-1)).squeeze(1)
    normal, view, stretch, facing = (a.reshape(h * w, -1)[idx] for a in (normal, view, stretch[..., None],
                                                                          facing[..., None]))
    stretch, facing = stretch[:, 0], facing[:, 0]
    normal = torch.where(facing[:, None], -view, normal)
    stretch = torch.where(facing, torch.ones_like(stretch), stretch)
    # Tangent frame: t1 along the slope (the view ray projected on the plane), t2 = n x t1.
    t1 = view - (view * normal).sum(-1, keepdim=True) * normal
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, device=dev).expand_as(t1)
    fallback = ex - (ex * normal).sum(-1, keepdim=True) * normal
    t1 = _unit_t(torch.where((torch.linalg.vector_norm(t1, dim=-1) < 1e-6)[:, None], fallback, t1))
    t2 = _cross(normal, t1)
    rot_cam = torch.stack([t1, t2, normal], -1)  # columns = local axes in camera frame
    cam_to_world = t(np.linalg.inv(world_to_cam))
    quats = matrix_to_quat(cam_to_world[:3, :3] @ rot_cam)
    means = pts.reshape(-1, 3)[idx] @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    sigma = (config.pixel_scale * depth_t / f).reshape(-1)[idx]
    scales = torch.stack([sigma * stretch, sigma, sigma * config.thickness], -1)
    colors = t(image).reshape(-1, 3)[idx].clamp(0.0, 1.0)
    region = torch.where(sky_t, REGION_SKY, torch.where(water_t, REGION_WATER, REGION_GROUND)).reshape(-1)[idx]
    n = len(idx)
    logit = float(np.log(config.opacity / (1 - config.opacity)))
    out = {k: v.float().cpu().numpy() for k, v in {"means": means, "quats": quats, "log_scales": torch.log(scales),
                                                    "sh": rgb_to_sh_dc(colors)[:, None, :], "region": region}.items()}
    return Gaussians(
        means=out["means"],
        quats=out["quats"],
        log_scales=out["log_scales"],
        opacity_logits=np.full(n, logit, np.float32),
        sh=out["sh"],
        extra={"region": out["region"], "step": np.full(n, float(step), np.float32)},
    )


def _empty() -> Gaussians:
    z = np.zeros
    return Gaussians(z((0, 3), np.float32), z((0, 4), np.float32), z((0, 3), np.float32), z(0, np.float32),
                     z((0, 1, 3), np.float32), extra={"region": z(0, np.float32), "step": z(0, np.float32)})
