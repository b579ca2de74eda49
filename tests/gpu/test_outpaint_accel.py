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


def test_auto_replays_graphs_at_once_then_adopts_the_background_compile(tiny_sd2):
    """"auto": the first call replays the eager kernels (graphs) and starts the compile in a daemon thread; once
    it has ended, the next call runs inductor's kernels, replayed from graphs, and the image stays the eager one
    within fp16 rounding."""
    rng = np.random.default_rng(0)
    image = rng.random((96, 128, 3)).astype(np.float32)
    hole = np.zeros((96, 128), bool)
    hole[:, 80:] = True
    eager = DiffusersInpaint(str(tiny_sd2), "cuda", steps=6, size=64, accel="off")
    auto = DiffusersInpaint(str(tiny_sd2), "cuda", steps=6, size=64)
    assert auto.accel == "auto" and auto.compile_state == "not started"
    a = eager.outpaint(image, hole, "a lake", seed=5)
    b = auto.outpaint(image, hole, "a lake", seed=5)
    unet = auto._wrappers[0]
    assert unet.fn is unet.eager and len(unet.graphs) == 1
    assert auto.compile_state == "compiling"
    assert auto.wait_compiled(600) == "adopted", auto.compile_state
    c = auto.outpaint(image, hole, "a lake", seed=5)
    assert unet.fn is not unet.eager and len(unet.graphs) == 1  # captured again, around the compiled forward
    assert all(w.fn is not w.eager for w in auto._wrappers)
    np.testing.assert_allclose(b[hole], a[hole], atol=2e-3)
    np.testing.assert_allclose(c[hole], a[hole], atol=4 / 255)
    np.testing.assert_array_equal(c[~hole], image[~hole])
