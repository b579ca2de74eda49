"""Tiny synthetic scenes with known 3D motion: a ground plane z = 0 carrying a water flow, seen by pinhole cameras."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backend.render.cameras import Camera
from backend.world.motion.cues import MATERIAL_CODE, MotionCue
from backend.world.motion.lift import project, unproject

torch.set_num_threads(2)

V0 = np.array([0.04, 0.02, 0.0])
OMEGA = np.array([0.0, 0.0, 0.015])


def true_velocity(x: np.ndarray) -> np.ndarray:
    """Water on the ground: drift plus a slow swirl about the origin, (K, 3) metres per frame, in-plane."""
    return V0 + np.cross(OMEGA, x)


def look_at(eye, target, width=64, height=48, focal=60.0) -> Camera:
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    return Camera(K=K, world_to_cam=w2c, width=width, height=height)


def ground_depth(camera: Camera) -> np.ndarray:
    """Camera-z depth of the plane z = 0 (inf above the horizon)."""
    h, w = camera.height, camera.width
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pix = np.stack([jj.ravel(), ii.ravel()], 1)
    c2w = camera.cam_to_world
    dirs = (np.concatenate([pix, np.ones((len(pix), 1))], 1) @ np.linalg.inv(camera.K).T) @ c2w[:3, :3].T
    eye = c2w[:3, 3]
    with np.errstate(divide="ignore"):
        t = np.where(dirs[:, 2] < -1e-9, -eye[2] / dirs[:, 2], np.inf)
    return t.reshape(h, w)


def true_cue(camera: Camera, depth: np.ndarray) -> MotionCue:
    """The 2D flow a perfect estimator would give: u = project(X + v(X)) - p on every ground pixel."""
    h, w = depth.shape
    mask = np.isfinite(depth)
    rows, cols = np.nonzero(mask)
    p = np.stack([cols + 0.5, rows + 0.5], 1)
    x = unproject(p, depth[rows, cols], camera)
    q, _ = project(x + true_velocity(x), camera)
    flow = np.zeros((h, w, 2), np.float32)
    flow[rows, cols] = q - p
    return MotionCue(flow, mask, np.where(mask, MATERIAL_CODE["water"], 0).astype(np.uint8))


@pytest.fixture
def scene():
    return SimpleNamespace(true_velocity=true_velocity, look_at=look_at, ground_depth=ground_depth, true_cue=true_cue)
