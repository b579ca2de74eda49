"""The motion alignment on CUDA (what ``align_flow(device="auto")`` runs on a GPU machine) gives the numpy / scipy
path's alignment: the same matches, transform and aligned flow."""

import numpy as np
import pytest
import torch

from backend.world.motion.align import align_flow
from tests.backend.motion.test_motion_align_torch import _scene

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_alignment_equals_the_numpy_alignment():
    new, prev = _scene(seed=4, n_prev=200_000, n_new=50_000)
    centre = np.array([0.0, -10.0, 5.0])
    ref = align_flow(new, prev, centre, device=None)
    got = align_flow(new, prev, centre)  # auto: CUDA here
    assert (got.matches, got.dropped, got.status) == (ref.matches, ref.dropped, ref.status)
    np.testing.assert_allclose(got.rotation, ref.rotation, atol=1e-9)
    assert got.scale == pytest.approx(ref.scale, rel=1e-9)
    np.testing.assert_allclose(got.flow.vectors, ref.flow.vectors, atol=1e-9)
