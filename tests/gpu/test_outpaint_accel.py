"""The inpainting UNet replayed from CUDA graphs computes the eager pipeline's image (the tiny SD-2 inpainting
architecture, fp16 on CUDA); the graph is captured once per shape and replayed after."""

import numpy as np
import pytest
import torch

from backend.models.outpaint import DiffusersInpaint
from backend.models.random_init import save_sd2_inpainting

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def tiny_sd2(tmp_path_factory):
    return save_sd2_inpainting(tmp_path_factory.mktemp("tiny-sd2"), "tiny")


def test_graphs_give_the_eager_image_and_capture_once(tiny_sd2):
    rng = np.random.default_rng(0)
    image = rng.random((96, 128, 3)).astype(np.float32)
    hole = np.zeros((96, 128), bool)
    hole[:, 80:] = True
    eager = DiffusersInpaint(str(tiny_sd2), "cuda", steps=6, size=64, accel="off")
    graphs = DiffusersInpaint(str(tiny_sd2), "cuda", steps=6, size=64, accel="graphs")
    a = eager.outpaint(image, hole, "a lake", seed=5)
    b = graphs.outpaint(image, hole, "a lake", seed=5)
    c = graphs.outpaint(image, hole, "a lake", seed=5)
    wrapper = graphs._wrappers[0]
    assert len(wrapper.graphs) == 1 and wrapper.replays == 12 and graphs.setup_s > 0
    np.testing.assert_array_equal(b, c)  # replays are deterministic
    np.testing.assert_allclose(b[hole], a[hole], atol=2e-3)  # fp16: the same kernels, same order
    np.testing.assert_array_equal(b[~hole], image[~hole])
    d = graphs.outpaint(image, hole, "a lake", seed=6)
    assert np.abs(d[hole] - b[hole]).max() > 1e-3  # the seed still matters: inputs are copied in, not frozen
