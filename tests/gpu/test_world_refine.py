"""The expansion's brief optimisation of new Gaussians on CUDA (gsplat): on by default there, and it works."""

import numpy as np
import pytest
import torch

from backend.io.ply import read_ply
from backend.models.config import ModelConfig
from backend.world.pipeline import ExpandConfig, WorldConfig, new_world, refine
from backend.world.samples.make_landscape import SAMPLE_PATH

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_refine_runs_by_default_on_cuda_at_the_working_size_and_lowers_the_l1_error(tmp_path):
    models = ModelConfig(depth="builtin", segmentation="builtin", outpaint="builtin")
    w0 = new_world(SAMPLE_PATH, tmp_path / "w", config=WorldConfig(resolution=96, models=models))
    g = read_ply(w0.file("gaussians.ply"))
    cam = w0.current.opencv_camera()
    target = np.full((96, 96, 3), 0.8, np.float32)
    none = g.subset(np.arange(0))
    _, one = refine(none, g, cam, target, ExpandConfig(refine_steps=1))
    refined, default = refine(none, g, cam, target, ExpandConfig())  # None -> 50 steps on CUDA (cosine step size)
    assert np.isfinite(default) and default < 0.5 * one
    assert not np.allclose(refined.sh, g.sh)
