"""Lift a view's 2D motion cue to 3D scene flow with its depth and camera (LIVINGWORLD.md stage 3).

For pixel p with depth d and flow u:  S = unproject(p + u, d') - unproject(p, d),  with
unproject(q, z) = cam_to_world * (z K^-1 [q_x, q_y, 1]^T)  and d' the depth map sampled (bilinearly in 1/depth) at p + u.
Where d' differs from d by more than ``depth_jump`` (relative), or p + u leaves the image, the flow crossed a
depth edge or the border (water flowing past a
rock, a cloud over a mountain): there d' = d, so a pixel's material never jumps to another surface.
Depth is camera z (OpenCV, metres); the world is Blender Z-up metres (``backend.render.cameras``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from backend.errors import InvalidInput
from backend.render.cameras import Camera

from .cues import MotionCue


@dataclass
class SceneFlow:
    """Sparse 3D motion samples.

    points:   (K, 3) float64 world positions.
    vectors:  (K, 3) float64 world displacement per frame (metres / frame).
    material: (K,) uint8 codes into ``cues.MATERIALS``.
    view:     (K,) int32 index of the view (expansion step) each sample came from.
    """

    points: np.ndarray
    vectors: np.ndarray
    material: np.ndarray
    view: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def subset(self, index) -> SceneFlow:
        return SceneFlow(self.points[index], self.vectors[index], self.material[index], self.view[index])

    def with_vectors(self, vectors: np.ndarray) -> SceneFlow:
        return SceneFlow(self.points, np.asarray(vectors, np.float64), self.material, self.view)

    @staticmethod
    def empty() -> SceneFlow:
        return SceneFlow(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.uint8), np.zeros(0, np.int32))

    @staticmethod
    def concatenate(parts: list[SceneFlow]) -> SceneFlow:
        parts = [p for p in parts if len(p)] or [SceneFlow.empty()]
        return SceneFlow(*(np.concatenate([getattr(p, f) for p in parts])
                           for f in ("points", "vectors", "material", "view")))

    def save(self, path) -> None:
        """Write as a compressed ``.npz`` (points, vectors, material, view)."""
        np.savez_compressed(path, points=self.points, vectors=self.vectors, material=self.material, view=self.view)

    @staticmethod
    def load(path) -> SceneFlow:
        """Read a file ``save`` wrote; a damaged or foreign file is refused with what to do (never unpickled)."""
        names = ("points", "vectors", "material", "view")
        flow = None
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [n for n in names if n not in z.files]
                if not missing:
                    flow = SceneFlow(*(z[n] for n in names))
        except (OSError, ValueError, EOFError):
            reason = "not a readable .npz archive"
        else:
            if missing:
                reason = f"no {', '.join(missing)} array"
            elif flow.points.ndim == 2 and flow.points.shape[1:] == (3,) and flow.vectors.shape == flow.points.shape \
                    and flow.material.shape == flow.view.shape == (len(flow.points),):
                return flow
            else:
                reason = "arrays of mismatched shapes"
        raise InvalidInput(f"the motion samples file {path} is damaged or not one LivingWorld wrote ({reason}): undo "
                           "the world's last motion step, or run a motion update on a view again")


def unproject(pixels: np.ndarray, depth: np.ndarray, camera: Camera) -> np.ndarray:
    """pixels (K, 2) (x, y) image coordinates and camera-z depth (K,) -> world points (K, 3)."""
    k_inv = np.linalg.inv(np.asarray(camera.K, np.float64))
    rays = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1) @ k_inv.T
    cam = rays * depth[:, None]
    c2w = camera.cam_to_world
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def project(points: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World points (K, 3) -> image coordinates (K, 2) and camera-z depth (K,)."""
    w2c = np.asarray(camera.world_to_cam, np.float64)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    uv = cam @ np.asarray(camera.K, np.float64).T
    return uv[:, :2] / z[:, None], z


def lift_cue(cue: MotionCue, depth: np.ndarray, camera: Camera, view: int = 0, max_samples: int | None = 50_000,
             depth_jump: float = 0.1, seed: int = 0) -> SceneFlow:
    """Scene flow of the masked pixels of ``cue`` (see module docstring).

    depth: (H, W) camera-z depth in metres (non-finite or <= 0: no geometry, skipped).
    max_samples: keep at most this many pixels (uniform random subset) - the field needs samples, not pixels.
    """
    h, w = cue.shape
    depth = np.asarray(depth, np.float64)
    if depth.shape != (h, w):
        raise InvalidInput(f"depth map {depth.shape} and motion cue {(h, w)} of the view differ in size")
    if (camera.height, camera.width) != (h, w):
        raise InvalidInput(f"camera is {camera.width}x{camera.height}, the motion cue {w}x{h}")
    valid = cue.mask & np.isfinite(depth) & (depth > 0)
    rows, cols = np.nonzero(valid)
    if max_samples is not None and len(rows) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_samples, replace=False))
        rows, cols = rows[keep], cols[keep]
    if len(rows) == 0:
        return SceneFlow.empty()
    p = np.stack([cols + 0.5, rows + 0.5], axis=1)
    u = cue.flow[rows, cols].astype(np.float64)
    d = depth[rows, cols]
    q = p + u
    inv = np.where(np.isfinite(depth) & (depth > 0), 1.0 / np.where(depth > 0, depth, 1.0), 0.0)
    # Inverse depth is affine in image coordinates on a plane, so interpolating it (not depth) is exact on planar
    # surfaces. map_coordinates samples at integer (row, col) = pixel centres, hence the -0.5.
    inv2 = ndimage.map_coordinates(inv, [q[:, 1] - 0.5, q[:, 0] - 0.5], order=1, mode="nearest")
    d2 = np.where(inv2 > 0, 1.0 / np.maximum(inv2, 1e-30), 0.0)
    inside = (q[:, 0] >= 0.5) & (q[:, 0] <= w - 0.5) & (q[:, 1] >= 0.5) & (q[:, 1] <= h - 0.5)
    d2 = np.where(inside & (d2 > 0) & (np.abs(d2 - d) <= depth_jump * d), d2, d)
    vectors = unproject(q, d2, camera) - unproject(p, d, camera)
    return SceneFlow(unproject(p, d, camera), vectors, cue.material[rows, cols].astype(np.uint8),
                     np.full(len(rows), view, np.int32))
