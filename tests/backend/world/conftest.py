import numpy as np
import pytest
import torch

from backend.models.config import ModelConfig
from backend.render.cameras import look_at
from backend.world.pipeline import WorldConfig

torch.set_num_threads(2)

BUILTIN = ModelConfig(depth="builtin", segmentation="builtin", outpaint="builtin", device="cpu")


def small_config(resolution: int) -> WorldConfig:
    return WorldConfig(resolution=resolution, models=BUILTIN)


def turned(camera, degrees: float):
    """The camera turned left (about world Z) by ``degrees`` around its own centre."""
    eye = camera.center
    fwd = camera.cam_to_world[:3, 2]
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return look_at(eye, eye + rot @ fwd, K=camera.K, width=camera.width, height=camera.height, near=camera.near,
                   far=camera.far)


@pytest.fixture
def config96() -> WorldConfig:
    return small_config(96)


@pytest.fixture
def make_config():
    """``make_config(resolution)``: a WorldConfig with the built-in providers."""
    return small_config


@pytest.fixture
def turn():
    """``turn(camera, degrees)``: the camera turned left about world Z."""
    return turned
