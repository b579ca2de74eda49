"""The pure-torch rasterizer: exact against a per-pixel loop, analytic shapes, occlusion, gradients (float64)."""

import math

import numpy as np
import pytest
import torch

from backend.errors import InvalidInput
from backend.gaussians import Gaussians, rgb_to_sh_dc
from backend.render import reference
from backend.render.cameras import Camera
from backend.render.rasterize import RasterConfig, rasterize

torch.set_num_threads(1)
F64 = torch.float64


def pinhole(width=8, height=8, f=10.0, world_to_cam=None, near=0.01, far=100.0):
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    return Camera(K=K, world_to_cam=np.eye(4) if world_to_cam is None else world_to_cam, width=width,
                  height=height, near=near, far=far)


def random_scene(n, sh_k=1, seed=0, z=3.0, spread=0.4, scale=(0.05, 0.25), opacity_logit=1.0):
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g, dtype=F64) * spread + torch.tensor([0.0, 0.0, z], dtype=F64),
        quats=torch.randn(n, 4, generator=g, dtype=F64),
        log_scales=torch.log(torch.rand(n, 3, generator=g, dtype=F64) * (scale[1] - scale[0]) + scale[0]),
        opacity_logits=torch.randn(n, generator=g, dtype=F64) * 0.5 + opacity_logit,
        sh=torch.randn(n, sh_k, 3, generator=g, dtype=F64) * 0.5,
    )


def one_gaussian(pos, rgb, scale=0.1, opacity=0.9):
    return Gaussians(
        means=torch.tensor([pos], dtype=F64), quats=torch.tensor([[1.0, 0, 0, 0]], dtype=F64),
        log_scales=torch.full((1, 3), math.log(scale), dtype=F64),
        opacity_logits=torch.logit(torch.tensor([opacity], dtype=F64)),
        sh=rgb_to_sh_dc(torch.tensor([[rgb]], dtype=F64)),
    )


def loop_composite(proj, feats, width, height):
    """Independent oracle: gsplat's per-pixel kernel written as plain loops."""
    out = torch.zeros(height, width, feats.shape[1], dtype=feats.dtype)
    acc = torch.zeros(height, width, dtype=feats.dtype)
    ids = torch.nonzero(proj.valid).squeeze(1)
    ids = ids[torch.argsort(proj.depths[ids])].tolist()
    for i in range(height):
        for j in range(width):
            T = 1.0
            for g in ids:
                dx, dy = (proj.means2d[g] - torch.tensor([j + 0.5, i + 0.5], dtype=feats.dtype)).tolist()
                a, b, c = proj.conics[g].tolist()
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, float(proj.opacities[g]) * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if T * (1 - alpha) <= 1e-4:
                    break
                out[i, j] += feats[g] * alpha * T
                T *= 1 - alpha
            acc[i, j] = 1 - T
    return out, acc


@pytest.mark.parametrize("antialiased", [False, True])
def test_tiled_compositing_equals_per_pixel_loop(antialiased):
    # 37x33 is not a multiple of the tile size; opaque Gaussians exercise the early stop.
    g = random_scene(40, seed=1, z=2.0, scale=(0.01, 0.2), opacity_logit=5.0)
    cam = pinhole(37, 33, f=30.0)
    proj = reference.project(g.means, g.quats, g.log_scales.exp(), g.opacity_logits.sigmoid(),
                             torch.eye(4, dtype=F64), torch.tensor(cam.K), 37, 33, eps2d=0.3, near=0.01, far=100.0,
                             radius_clip=0.0, antialiased=antialiased)
    feats = torch.randn(40, 5, dtype=F64, generator=torch.Generator().manual_seed(2))
    img, alpha = reference.composite(proj, feats, 37, 33, 16)
    want_img, want_alpha = loop_composite(proj, feats, 37, 33)
    assert float(alpha.max()) > 0.99  # some pixels saturate, so the early stop matters
    torch.testing.assert_close(img, want_img, atol=1e-12, rtol=0)
    torch.testing.assert_close(alpha, want_alpha, atol=1e-12, rtol=0)


def test_isotropic_gaussian_has_the_analytic_2d_shape():
    f, s, o, pos = 20.0, 0.1, 0.8, [0.35, -0.15, 2.0]  # projects to the centre of pixel (14, 19)
    cam = pinhole(32, 32, f=f)
    out = rasterize(one_gaussian(pos, [1.0, 0.5, 0.25], scale=s, opacity=o), cam)
    x, y, z = pos
    u, v = f * x / z + 16, f * y / z + 16
    # Sigma_2d = s^2 J J^T + 0.3 I, J the perspective Jacobian at (x, y, z).
    J = np.array([[f / z, 0, -f * x / z**2], [0, f / z, -f * y / z**2]])
    cov = s * s * J @ J.T + 0.3 * np.eye(2)
    jj, ii = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
    d = np.stack([jj - u, ii - v], -1)
    alpha = np.minimum(0.999, o * np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d)))
    alpha[alpha < 1 / 255] = 0
    np.testing.assert_allclose(out.alpha.numpy(), alpha, atol=1e-12)
    np.testing.assert_allclose(out.color.numpy(), alpha[..., None] * [1.0, 0.5, 0.25], atol=1e-12)
    peak = np.unravel_index(np.argmax(out.alpha.numpy()), (32, 32))
    assert peak == (int(v), int(u))
    np.testing.assert_allclose(out.depth.numpy()[alpha > 0], z)
    np.testing.assert_allclose(out.meta["means2d"].detach().numpy(), [[u, v]])


@pytest.mark.parametrize("red_in_front", [True, False])
def test_front_gaussian_occludes_the_back_one(red_in_front):
    red = one_gaussian([0, 0, 2.0 if red_in_front else 4.0], [1.0, 0, 0], scale=0.3, opacity=0.99)
    blue = one_gaussian([0, 0, 4.0 if red_in_front else 2.0], [0, 0, 1.0], scale=0.6, opacity=0.99)
    out = rasterize(Gaussians.concatenate([blue, red]), pinhole(17, 17))  # both project to pixel (8, 8)'s centre
    centre = out.color[8, 8].numpy()
    front = 0 if red_in_front else 2
    assert centre[front] > 0.98 and centre[2 - front] < 0.02
    assert 2.0 <= float(out.depth[8, 8]) < 2.1  # expected depth, dominated by the front Gaussian


def test_extra_channels_use_the_colour_weights():
    g = random_scene(12, sh_k=1, seed=3)
    rgb = (g.sh[:, 0] * 0.28209479177387814 + 0.5).clamp_min(0)
    out = rasterize(g, pinhole(20, 12), extra=torch.cat([rgb, torch.ones(12, 1, dtype=F64)], 1))
    assert out.extra.shape == (12, 20, 4)
    torch.testing.assert_close(out.extra[..., :3], out.color)
    torch.testing.assert_close(out.extra[..., 3], out.alpha)


def test_background_fills_where_nothing_is_visible():
    behind = random_scene(5, z=-3.0)
    cfg = RasterConfig(background=(0.2, 0.4, 0.6))
    for g in (behind, behind.subset(torch.zeros(5, dtype=torch.bool))):
        out = rasterize(g, pinhole(10, 6), cfg)
        assert out.color.shape == (6, 10, 3)
        torch.testing.assert_close(out.color, torch.tensor([0.2, 0.4, 0.6], dtype=F64).expand(6, 10, 3))
        assert float(out.alpha.abs().max()) == 0 and float(out.depth.abs().max()) == 0
        assert not bool(out.meta["visible"].any())


def test_far_plane_and_offscreen_culling():
    g = Gaussians.concatenate([one_gaussian([0, 0, 5.0], [1, 1, 1]), one_gaussian([50, 0, 2.0], [1, 1, 1]),
                               one_gaussian([0, 0, 1.0], [1, 1, 1])])
    out = rasterize(g, pinhole(16, 16, far=3.0))
    assert out.meta["visible"].tolist() == [False, False, True]
    assert out.meta["radii"].tolist()[:2] == [0, 0] and out.meta["radii"][2] > 0


def test_lower_sh_degree_uses_the_first_bands():
    g = random_scene(6, sh_k=16, seed=4)
    a = rasterize(g, pinhole(), RasterConfig(sh_degree=0))
    b = rasterize(g.with_(sh=g.sh[:, :1]), pinhole())
    torch.testing.assert_close(a.color, b.color)
    with pytest.raises(InvalidInput):
        rasterize(g.with_(sh=g.sh[:, :4]), pinhole(), RasterConfig(sh_degree=2))


def test_means2d_in_meta_receives_gradients():
    g = random_scene(5, seed=5).to_torch(dtype=F64, requires_grad=True)
    out = rasterize(g, pinhole())
    out.meta["means2d"].retain_grad()
    out.color.sum().backward()
    grad = out.meta["means2d"].grad
    assert grad.shape == (5, 2) and bool((grad[out.meta["visible"]].abs().sum(-1) > 0).all())


PARAMS = ["means", "quats", "log_scales", "opacity_logits", "sh", "extra"]


@pytest.mark.parametrize("degree,antialiased", [(0, False), (1, True), (2, False), (3, True)])
def test_gradients_pass_gradcheck(degree, antialiased):
    base = random_scene(4, sh_k=(degree + 1) ** 2, seed=10 + degree, z=2.5, spread=0.25)
    extra0 = torch.rand(4, 2, dtype=F64, generator=torch.Generator().manual_seed(degree))
    cam = pinhole(8, 8, f=8.0, world_to_cam=np.array([[1, 0, 0, 0.05], [0, 1, 0, -0.02], [0, 0, 1, 0.1],
                                                      [0, 0, 0, 1.0]]))
    cfg = RasterConfig(antialiased=antialiased, background=(0.1, 0.2, 0.3))
    inputs = [getattr(base, p).clone().requires_grad_() for p in PARAMS[:-1]] + [extra0.clone().requires_grad_()]

    def fn(means, quats, log_scales, opacity_logits, sh, extra):
        out = rasterize(Gaussians(means, quats, log_scales, opacity_logits, sh), cam, cfg, extra=extra)
        return out.color, out.alpha, out.depth, out.extra

    assert float(fn(*inputs)[1].detach().max()) > 0.3  # the Gaussians are on screen
    # The full Jacobian for degrees 0-1; random projections of it (fast mode) for the 27-48 SH coefficients of 2-3.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=degree >= 2)


def test_rejects_bad_inputs():
    g = random_scene(3)
    with pytest.raises(InvalidInput):
        rasterize(g.to_numpy(), pinhole())
    with pytest.raises(InvalidInput):
        rasterize(g, pinhole(), extra=torch.zeros(2, 1, dtype=F64))
    with pytest.raises(InvalidInput):
        rasterize(g, pinhole(), RasterConfig(backend="gsplat"))


def test_without_the_depth_channel_colour_alpha_and_extra_are_unchanged():
    g = random_scene(40, sh_k=4)
    extra = torch.rand(40, 2, dtype=F64)
    cam = pinhole(24, 16)
    full = rasterize(g, cam, RasterConfig(), extra=extra)
    bare = rasterize(g, cam, RasterConfig(depth=False), extra=extra)
    assert bare.depth is None and full.depth is not None
    for name in ("color", "alpha", "extra"):
        torch.testing.assert_close(getattr(bare, name), getattr(full, name), rtol=1e-12, atol=1e-12)
