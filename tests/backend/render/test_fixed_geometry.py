"""FixedGeometry: projected and tiled once, rendered with new colours and opacities = rasterize of the same
Gaussians (images and gradients, float64), opacities below 1/255 and the antialiased mode included."""

import numpy as np
import pytest
import torch

from backend.gaussians import Gaussians
from backend.render.cameras import Camera
from backend.render.rasterize import FixedGeometry, RasterConfig, rasterize
from backend.render.sh import sh_to_color

torch.set_num_threads(1)
F64 = torch.float64


def _scene(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Gaussians(means=torch.randn(n, 3, generator=g, dtype=F64) * 0.5 + torch.tensor([0, 0, 3.0], dtype=F64),
                     quats=torch.randn(n, 4, generator=g, dtype=F64),
                     log_scales=torch.log(torch.rand(n, 3, generator=g, dtype=F64) * 0.15 + 0.02),
                     opacity_logits=torch.randn(n, generator=g, dtype=F64) * 2.0,
                     sh=torch.randn(n, 1, 3, generator=g, dtype=F64) * 0.5)


@pytest.mark.parametrize("antialiased", [False, True])
def test_fixed_geometry_renders_what_rasterize_renders_with_the_same_gradients(antialiased):
    K = np.array([[40.0, 0, 24], [0, 40.0, 18], [0, 0, 1]])
    cam = Camera(K=K, world_to_cam=np.eye(4), width=48, height=36, near=0.1, far=50.0)
    cfg = RasterConfig(antialiased=antialiased)
    g = _scene()
    g.opacity_logits[:20] = -8.0  # opacity 3e-4 < 1/255: culled by rasterize, never drawn here
    fixed = FixedGeometry(g, cam, cfg)
    rng = torch.Generator().manual_seed(1)
    for _ in range(3):  # new colours and opacities each time, as in an optimisation
        sh = (g.sh + 0.3 * torch.randn(g.sh.shape, generator=rng, dtype=F64)).requires_grad_(True)
        logits = (g.opacity_logits + torch.randn(len(g), generator=rng, dtype=F64)).requires_grad_(True)
        want = rasterize(g.with_(sh=sh, opacity_logits=logits), cam, cfg)
        campos = torch.as_tensor(cam.center, dtype=F64)
        color, alpha = fixed.render(sh_to_color(0, g.means - campos, sh), logits.sigmoid())
        torch.testing.assert_close(color, want.color, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(alpha, want.alpha, rtol=1e-10, atol=1e-12)
        w = torch.rand(color.shape, generator=rng, dtype=F64)
        g_sh, g_op = torch.autograd.grad((w * color).sum() + alpha.sum(), [sh, logits])
        r_sh, r_op = torch.autograd.grad((w * want.color).sum() + want.alpha.sum(), [sh, logits])
        torch.testing.assert_close(g_sh, r_sh, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g_op, r_op, rtol=1e-9, atol=1e-12)
