"""The depth model replayed from a CUDA graph gives the eager forward's depth (tiny Depth Anything V2, fp16)."""

import numpy as np
import pytest
import torch

from backend.models.depth import TransformersDepth
from backend.models.random_init import save_depth_anything

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_graphed_depth_is_the_eager_depth(tmp_path):
    folder = save_depth_anything(tmp_path / "da", "tiny")
    provider = TransformersDepth(str(folder), "cuda")
    rng = np.random.default_rng(0)
    image = rng.random((120, 160, 3)).astype(np.float32)
    graphed = provider.predict(image, 150.0).values
    again = provider.predict(rng.random((120, 160, 3)).astype(np.float32), 150.0).values
    assert len(provider._forward.graphs) == 1 and provider._forward.failed is None
    provider._forward.failed = "eager for the comparison"
    eager = provider.predict(image, 150.0).values
    np.testing.assert_allclose(graphed, eager, rtol=1e-3, atol=1e-3 * float(np.abs(eager).max()))
    assert np.abs(again - graphed).max() > 1e-2 * np.abs(graphed).max()  # the input is copied in, not frozen
