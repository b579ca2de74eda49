"""Point initialisation from the first frame, as the field does it (a sparse coloured cloud at t = 0).

Two ways, chosen by ``init_points``:

- COLMAP, when the ``colmap`` executable is on PATH: features + exhaustive matching on the first frame of the
  training cameras, then ``point_triangulator`` with the known poses (STG's per-frame recipe).
- Built-in (always available): plane-sweep stereo with the known poses on the first frame (``sweep_depths``:
  every training camera against its nearest training cameras, ZNCC cost, winner-takes-all depth), then
  fusion (``sweep_points``): a pixel becomes a coloured 3D point when its depth agrees with another camera's
  depth map. Dense and robust on small, repetitive or low-texture frames where sparse features fail.

When fewer than ``min_points`` result, the cloud is grown by jittered copies of its own points (normal noise
with sigma = 1% of the cloud's bounding-box diagonal), a 3DGS-style densification of sparse starts.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from .data import MultiViewVideo


def init_points(video: MultiViewVideo, method: str = "auto", min_points: int = 2000, max_points: int = 200_000,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(points (P, 3) float32 world, colors (P, 3) float32 in [0, 1], method used: "colmap" | "sweep").

    method: "auto" (COLMAP when on PATH, else the plane sweep), "colmap" or "sweep". At most ``max_points``
    are kept (uniform random subset)."""
    if method not in ("auto", "colmap", "sweep"):
        raise InvalidInput(f"point initialisation {method!r} unknown; use auto, colmap or sweep")
    colmap = shutil.which("colmap")
    if method == "colmap" and colmap is None:
        raise InvalidInput("point initialisation 'colmap' asked for but no colmap executable is on PATH")
    if colmap is not None and method in ("auto", "colmap"):
        pts, cols, used = *colmap_points(video, colmap), "colmap"
    else:
        pts, cols, used = *sweep_points(video), "sweep"
    if len(pts) == 0:
        raise InvalidInput("no 3D points could be triangulated from the first frame: the views share no "
                           "matchable texture")
    rng = np.random.default_rng(seed)
    if len(pts) > max_points:
        keep = rng.choice(len(pts), max_points, replace=False)
        pts, cols = pts[keep], cols[keep]
    if len(pts) < min_points:
        idx = rng.integers(0, len(pts), min_points - len(pts))
        sigma = 0.01 * float(np.linalg.norm(pts.max(0) - pts.min(0)))
        pts = np.concatenate([pts, pts[idx] + rng.normal(0, sigma, (len(idx), 3))])
        cols = np.concatenate([cols, cols[idx]])
    return pts.astype(np.float32), np.clip(cols, 0, 1).astype(np.float32), used


def _projection(cam) -> np.ndarray:
    return cam.K @ cam.world_to_cam[:3, :]


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


def _pixel_rays(cam, w: int, h: int) -> np.ndarray:
    """(h*w, 3) camera-frame rays with z = 1 through the pixel centres of an image of size w x h of ``cam``."""
    sx, sy = w / cam.width, h / cam.height
    K = np.diag([sx, sy, 1.0]) @ cam.K
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pix = np.stack([jj, ii, np.ones_like(jj)], -1).reshape(-1, 3)
    return pix @ np.linalg.inv(K).T


def _zncc_cost(ref: np.ndarray, warped: np.ndarray, valid: np.ndarray, win: int) -> np.ndarray:
    """1 - zero-mean normalised cross-correlation of grey images over win x win windows (2 where invalid)."""
    import cv2

    def box(x):
        return cv2.blur(x, (win, win))

    mr, mw = box(ref), box(warped)
    vr = box(ref * ref) - mr * mr
    vw = box(warped * warped) - mw * mw
    cov = box(ref * warped) - mr * mw
    ncc = cov / np.sqrt(np.clip(vr * vw, 1e-10, None))
    return np.where(valid & (vw > 1e-5), 1.0 - ncc, 2.0)


def _informative(near: float, far: float) -> bool:
    """Do a camera's bounds say where the scene is? (Technicolor has none: its loader puts 0.01..100.)"""
    return 0 < near < far and far / near <= 1000


def _resolvable_depths(cam_r, neighbours: list, width: int, near: float, far: float) -> tuple[float, float]:
    """[near, far] narrowed to the depths at which the neighbours see a parallax between twice the image width and
    one pixel, disparity ~ f B / d (f: focal length in pixels at ``width``, B: the mean baseline to the
    neighbours); the given range when that leaves nothing or no neighbour is known."""
    if not neighbours:
        return near, far
    f = float(cam_r.K[0, 0]) * width / float(cam_r.width)
    baseline = float(np.mean([np.linalg.norm(n.center - cam_r.center) for n in neighbours]))
    n2, f2 = max(near, f * baseline / (2.0 * width)), min(far, f * baseline)
    return (n2, f2) if 0 < n2 < f2 else (near, far)


def sweep_depths(video: MultiViewVideo, planes: int = 64, win: int = 5, neighbours: int = 2,
                 max_width: int = 320) -> tuple[dict[int, np.ndarray], int, int]:
    """Plane-sweep depth of the first frame of every training camera from its nearest training cameras.

    Per camera r, depth hypotheses d_k uniform in inverse depth between its near/far bounds; pixel p of r is
    moved to X = d_k K_r^-1 p (camera r) -> world -> neighbour n, the neighbour image is sampled there
    (cv2.remap) and compared by ZNCC over ``win`` x ``win`` windows; cost(p, d_k) = mean over neighbours of
    1 - ZNCC; depth(p) = argmin_k cost. Returns ({camera: (h, w) depth}, w, h) at <= ``max_width`` pixels wide.

    Bounds that do not say where the scene is (``_informative``) are found first: a coarse sweep over the depths
    the neighbours can resolve (``_resolvable_depths``), then the sweep itself between the 2nd and 98th
    percentiles of the depths it matched. Sweeping 0.01..100 directly put almost every plane within half a unit
    of the cameras, and at the far planes, where nothing moves, every camera "agreed": a Technicolor scene's cloud
    landed 100 units away and its experts never saw a Gaussian.
    """
    import cv2

    W, H = video.size
    s = min(1.0, max_width / W)
    w, h = max(8, round(W * s)), max(8, round(H * s))
    grey = {c: cv2.resize(cv2.cvtColor(video.images[c, 0], cv2.COLOR_RGB2GRAY), (w, h),
                          interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0 for c in video.train}
    centres = {c: video.cameras[c].center for c in video.train}

    def sweep(r, others, near, far):
        cam_r = video.cameras[r]
        hyp = 1.0 / np.linspace(1.0 / near, 1.0 / far, planes)
        rays = _pixel_rays(cam_r, w, h)
        c2w = cam_r.cam_to_world
        cost = np.zeros((planes, h, w), np.float32)
        for k, d in enumerate(hyp):
            world = (rays * d) @ c2w[:3, :3].T + c2w[:3, 3]
            for n in others:
                cam_n = video.cameras[n]
                pc = world @ cam_n.world_to_cam[:3, :3].T + cam_n.world_to_cam[:3, 3]
                Kn = np.diag([w / cam_n.width, h / cam_n.height, 1.0]) @ cam_n.K
                uv = pc @ Kn.T
                z = uv[:, 2:3]
                uv = (uv[:, :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)).reshape(h, w, 2).astype(np.float32) - 0.5
                warped = cv2.remap(grey[n], uv[..., 0], uv[..., 1], cv2.INTER_LINEAR, borderValue=-1.0)
                valid = (pc[:, 2].reshape(h, w) > 0) & (warped >= 0)
                cost[k] += _zncc_cost(grey[r], warped, valid, win) / len(others)
        depth = hyp[cost.argmin(0)].astype(np.float32)
        depth[cost.min(0) > 0.3] = 0.0  # poorly matched or untextured: no depth
        return depth

    depths = {}
    for r in video.train:
        cam_r = video.cameras[r]
        others = sorted((c for c in video.train if c != r), key=lambda c: np.linalg.norm(centres[c] - centres[r]))
        others = others[:neighbours]
        near, far = 0.8 * float(video.bounds[r, 0]), 1.2 * float(video.bounds[r, 1])
        if not _informative(near, far):
            near, far = _resolvable_depths(cam_r, [video.cameras[n] for n in others], w, near, far)
            coarse = sweep(r, others, near, far)
            matched = coarse[coarse > 0]
            if matched.size >= 50:
                lo, hi = np.percentile(matched, [2, 98])
                near, far = (0.8 * float(lo), 1.2 * float(hi)) if lo < hi else (near, far)
        depths[r] = sweep(r, others, near, far)
    return depths, w, h


def sweep_points(video: MultiViewVideo, rel_tol: float = 0.02, **sweep) -> tuple[np.ndarray, np.ndarray]:
    """Fuse plane-sweep depths: keep a pixel when its 3D point agrees (relative depth error < ``rel_tol``)
    with the depth map of at least one other training camera it projects into; colour from the first frame."""
    import cv2

    depths, w, h = sweep_depths(video, **sweep)
    pts, cols = [], []
    for r, depth in depths.items():
        cam_r = video.cameras[r]
        c2w = cam_r.cam_to_world
        world = (_pixel_rays(cam_r, w, h) * depth.reshape(-1, 1)) @ c2w[:3, :3].T + c2w[:3, 3]
        agree = np.zeros(h * w, bool)
        for n, dn in depths.items():
            if n == r:
                continue
            cam_n = video.cameras[n]
            pc = world @ cam_n.world_to_cam[:3, :3].T + cam_n.world_to_cam[:3, 3]
            Kn = np.diag([w / cam_n.width, h / cam_n.height, 1.0]) @ cam_n.K
            uv = pc @ Kn.T
            z = np.where(np.abs(uv[:, 2]) < 1e-9, 1e-9, uv[:, 2])
            j, i = np.floor(uv[:, 0] / z).astype(int), np.floor(uv[:, 1] / z).astype(int)
            inside = (pc[:, 2] > 0) & (j >= 0) & (j < w) & (i >= 0) & (i < h)
            dn_at = np.zeros(h * w, np.float32)
            dn_at[inside] = dn[i[inside], j[inside]]
            agree |= inside & (dn_at > 0) & (np.abs(dn_at - pc[:, 2]) < rel_tol * pc[:, 2])
        keep = agree & (depth.reshape(-1) > 0)
        rgb = cv2.resize(video.images[r, 0], (w, h), interpolation=cv2.INTER_AREA).reshape(-1, 3) / 255.0
        pts.append(world[keep])
        cols.append(rgb[keep])
    return np.concatenate(pts), np.concatenate(cols)


def _rotmat_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(r).as_quat()
    return np.array([w, x, y, z])


def colmap_points(video: MultiViewVideo, colmap: str) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP triangulation of the first frame with the known poses (cameras.txt / images.txt written by us)."""
    import cv2

    with tempfile.TemporaryDirectory(prefix="lw_colmap_") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        (root / "manual").mkdir()
        (root / "sparse").mkdir()
        cam_lines, img_lines = [], []
        for n, c in enumerate(video.train, start=1):
            cam = video.cameras[c]
            name = f"{video.names[c]}.png"
            cv2.imwrite(str(root / "images" / name), video.images[c, 0][..., ::-1])
            fx, fy, cx, cy = cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]
            cam_lines.append(f"{n} PINHOLE {cam.width} {cam.height} {fx} {fy} {cx} {cy}")
            q = _rotmat_to_quat_wxyz(cam.world_to_cam[:3, :3])
            t = cam.world_to_cam[:3, 3]
            img_lines.append(f"{n} {' '.join(map(str, q))} {' '.join(map(str, t))} {n} {name}\n")
        (root / "manual" / "cameras.txt").write_text("\n".join(cam_lines) + "\n")
        (root / "manual" / "images.txt").write_text("\n".join(img_lines) + "\n")
        (root / "manual" / "points3D.txt").write_text("")
        db = root / "db.db"
        steps = [
            [colmap, "feature_extractor", "--database_path", db, "--image_path", root / "images",
             "--ImageReader.camera_model", "PINHOLE"],
            [colmap, "exhaustive_matcher", "--database_path", db],
            [colmap, "point_triangulator", "--database_path", db, "--image_path", root / "images",
             "--input_path", root / "manual", "--output_path", root / "sparse"],
            [colmap, "model_converter", "--input_path", root / "sparse", "--output_path", root / "sparse",
             "--output_type", "TXT"],
        ]
        for cmd in steps:
            res = subprocess.run([str(x) for x in cmd], capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise InvalidInput(f"colmap {cmd[1]} failed: {res.stderr.strip()[-500:]}")
        pts, cols = [], []
        for line in (root / "sparse" / "points3D.txt").read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            v = line.split()
            pts.append([float(x) for x in v[1:4]])
            cols.append([float(x) / 255.0 for x in v[4:7]])
    return np.array(pts, dtype=np.float64).reshape(-1, 3), np.array(cols, dtype=np.float64).reshape(-1, 3)
