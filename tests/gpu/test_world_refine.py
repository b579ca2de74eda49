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


def test_lifting_on_cuda_gives_the_cpu_s_gaussians():
    from backend.render.cameras import look_at
    from backend.world.lift import LiftConfig, lift_image

    rng = np.random.default_rng(0)
    h, w = 300, 420
    K = np.array([[300.0, 0, w / 2], [0, 300.0, h / 2], [0, 0, 1]])
    cam = look_at(np.array([0.3, -1.0, 1.6]), np.array([2.0, 8.0, 0.5]), K=K, width=w, height=h)
    yy, xx = np.mgrid[0:h, 0:w]
    depth = (3 + 10 * yy / h + np.sin(xx / 7.0) + (xx > w // 2) * 5).astype(np.float32)
    image = rng.random((h, w, 3)).astype(np.float32)
    sky, water, select = yy < 60, (yy > 240) & (xx < 140), rng.random((h, w)) < 0.7
    for cfg in (LiftConfig(), LiftConfig(stride=2)):
        a = lift_image(image, depth, cam, sky, water, select, 2, cfg)
        b = lift_image(image, depth, cam, sky, water, select, 2, cfg, device="cuda")
        assert len(a) == len(b) > 0
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-6, atol=1e-6, err_msg=name)
        for name in a.extra:
            np.testing.assert_array_equal(b.extra[name], a.extra[name])
