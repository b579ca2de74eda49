import pytest
import torch

from backend.models.config import ModelConfig
from backend.world.pipeline import WorldConfig, turned_camera

torch.set_num_threads(2)

BUILTIN = ModelConfig(depth="builtin", segmentation="builtin", outpaint="builtin", device="cpu")


def small_config(resolution: int) -> WorldConfig:
    return WorldConfig(resolution=resolution, models=BUILTIN)


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
    return turned_camera
