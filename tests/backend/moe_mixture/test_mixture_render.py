"""Single-pass multi-expert rendering and the router's blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.errors import InvalidInput
from backend.gaussians import Gaussians
from backend.moe.mixture import render_mixture, splat_experts
from backend.moe.router import Router, RouterConfig, camera_rays
from backend.render.rasterize import AUTO_TILE, RasterConfig, rasterize


def three_experts(make):
    return [make(300, 0), make(250, 1, (0.2, 0.3, 0.0)), make(200, 2)]


def test_single_pass_equals_one_pass_per_expert(make_gaussians, make_camera):
    gs = three_experts(make_gaussians)
    cam = make_camera(0.2, 40, 30)
    raster = RasterConfig(background=(0.2, 0.4, 0.6))
    extras = [torch.rand(len(g), 2, generator=torch.Generator().manual_seed(k)) for k, g in enumerate(gs)]
    single = splat_experts(gs, cam, raster, extras, mode="single")
    multi = splat_experts(gs, cam, raster, extras, mode="multipass")
    assert single.colors.shape == (3, 30, 40, 3)
    assert single.alphas.mean() > 0.3  # the experts overlap on screen: occlusion between them would show
    torch.testing.assert_close(single.colors, multi.colors, atol=1e-5, rtol=0)
    torch.testing.assert_close(single.alphas, multi.alphas, atol=1e-5, rtol=0)
    torch.testing.assert_close(single.extras, multi.extras, atol=1e-5, rtol=0)
    for k, g in enumerate(gs):  # and each is exactly that expert's own rasterization
        torch.testing.assert_close(single.colors[k], rasterize(g, cam, raster).color, atol=1e-5, rtol=0)


def test_single_pass_takes_the_renderer_that_runs_and_any_tile_setting(make_gaussians, make_camera):
    gs = three_experts(make_gaussians)
    cam = make_camera(0.2, 40, 30)
    plain = splat_experts(gs, cam, RasterConfig())
    auto = splat_experts(gs, cam, RasterConfig(tile_size=AUTO_TILE))  # the render job's setting: 16 px here
    torch.testing.assert_close(auto.colors, plain.colors, atol=0, rtol=0)
    with pytest.raises(InvalidInput, match="needs CUDA"):  # the renderer check, not an ImportError mid-job
        splat_experts(gs, cam, RasterConfig(backend="gsplat"))


def test_single_pass_gradients_match_multipass(make_gaussians, make_camera):
    gs = three_experts(make_gaussians)
    cam = make_camera(-0.3, 32, 24)
    grads = {}
    for mode in ("single", "multipass"):
        ex = [torch.rand(len(g), 1, generator=torch.Generator().manual_seed(k)).requires_grad_() for k, g in
              enumerate(gs)]
        means = [g.means.clone().requires_grad_() for g in gs]
        parts = [Gaussians(m, g.quats, g.log_scales, g.opacity_logits, g.sh) for m, g in zip(means, gs)]
        out = splat_experts(parts, cam, RasterConfig(), ex, mode)
        (out.colors.square().sum() + out.extras.sum()).backward()
        grads[mode] = [e.grad for e in ex] + [m.grad for m in means]
    for a, b in zip(grads["single"], grads["multipass"]):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


ROUTERS = [  # (kind, gate, normalise): every router the config can build
    ("volume_pixel", "field", "softmax"), ("pixel", "field", "softmax"), ("volume", "field", "softmax"),
    ("volume", "param", "softmax"), ("volume", "field", "sum"), ("volume", "param", "sum")]


def make_router(counts, kind, gate="param", normalise="softmax", **options):
    return Router(len(counts), counts, torch.full((3,), -1.5), torch.full((3,), 1.5),
                  RouterConfig(gate, normalise, kind=kind, **options))


@pytest.mark.parametrize(("kind", "gate", "normalise"), ROUTERS)
def test_identical_experts_give_that_experts_image(kind, gate, normalise, make_gaussians, make_camera):
    g = make_gaussians(300, 3)
    router = make_router([300] * 3, kind, gate, normalise, temperature=1.0)
    torch.manual_seed(0)
    with torch.no_grad():  # non-uniform gates, so the weights really differ per pixel and expert
        for p in router.parameters():
            p.normal_(0, 1)
    cam = make_camera(0.1, 40, 30)
    raster = RasterConfig(background=(0.1, 0.2, 0.3))
    out = render_mixture([g, g, g], router, cam, 0.4, raster)
    assert out.weights.std(0).max() > 0.05
    torch.testing.assert_close(out.weights.sum(0), torch.ones(30, 40))
    torch.testing.assert_close(out.color, rasterize(g, cam, raster).color, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("kind", "gate", "normalise"), [r for r in ROUTERS if r[2] == "softmax"])
def test_gradients_reach_every_router_parameter(kind, gate, normalise, make_gaussians, make_camera):
    gs = three_experts(make_gaussians)
    router = make_router([len(g) for g in gs], kind, gate, temperature=1.0)
    if hasattr(router, "mlp"):  # the field's last layer starts at 0, which stops the gradient before it at first
        torch.nn.init.normal_(router.mlp[-1].weight, 0, 0.1)
    out = render_mixture(gs, router, make_camera(0.0, 32, 24), 0.5)
    target = torch.rand(24, 32, 3, generator=torch.Generator().manual_seed(0))
    (out.color - target).abs().mean().backward()
    for name, p in router.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    for p in router.per_gaussian()[0] if router.per_gaussian() else []:  # each painting Gaussian gets its own
        assert int((p.grad != 0).any(-1).sum() if p.ndim > 1 else (p.grad != 0).sum()) > 20


def test_volume_pixel_router_splats_three_features_and_reads_them_with_the_ray(make_gaussians, make_camera):
    gs = three_experts(make_gaussians)
    router = make_router([len(g) for g in gs], "volume_pixel")
    assert router.config.temperature == 0.01 and router.config.lr == 0.5 and not router.config.expert_bias
    f = router.splat_features(1, gs[1].means, 0.5)
    assert f.shape == (250, 3)
    torch.testing.assert_close(f, torch.tensor([0.9, 0.9, 0.0]).expand(250, 3))  # b, v = 0.9; tau t = 0
    splatted = torch.rand(3, 24, 32, 3, generator=torch.Generator().manual_seed(1))
    a, b = make_camera(0.0, 32, 24), make_camera(0.4, 32, 24)
    with torch.no_grad():
        la, lb = (router.pixel_logits(splatted, cam, 0.5, (3, 24, 32)) for cam in (a, b))
        free = router.decoder(torch.cat([splatted[..., 1:], torch.zeros(3, 24, 32, 6)], -1))[..., 0]
    assert (la - lb).abs().max() > 1e-3  # the same splatted features, another camera: other logits
    assert (la - splatted[..., 0] - free).abs().max() > 1e-3  # the ray is an input, not a constant
    rays = camera_rays(a, "cpu")
    torch.testing.assert_close(rays[..., :3], torch.as_tensor(a.center, dtype=torch.float32).expand(24, 32, 3))
    torch.testing.assert_close(rays[..., 3:].norm(dim=-1), torch.ones(24, 32))
    centre = rays[11:13, 15:17, 3:].mean((0, 1))  # the camera looks at the origin from (0, -3, 0)
    torch.testing.assert_close(centre / centre.norm(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-3, rtol=0)
    for y, x in ((0, 0), (5, 30), (23, 31)):  # a point on each ray projects back to its pixel's centre
        p = rays[y, x, :3].double().numpy() + 2.0 * rays[y, x, 3:].double().numpy()
        q = np.asarray(a.K) @ (np.asarray(a.world_to_cam)[:3, :3] @ p + np.asarray(a.world_to_cam)[:3, 3])
        np.testing.assert_allclose(q[:2] / q[2], [x + 0.5, y + 0.5], atol=1e-4)


def test_pixel_router_weights_follow_the_ray_alone(make_gaussians, make_camera):
    gs = three_experts(make_gaussians)
    router = make_router([len(g) for g in gs], "pixel", temperature=1.0)
    assert router.splat_features(0, gs[0].means, 0.3) is None and router.splatted_channels == 0
    torch.manual_seed(0)
    with torch.no_grad():
        for p in router.parameters():
            p.normal_(0, 1)
        out = render_mixture(gs, router, make_camera(0.0, 32, 24), 0.3)
        far = render_mixture(gs[::-1], router, make_camera(0.0, 32, 24), 0.3)
    torch.testing.assert_close(out.weights, far.weights)  # other Gaussians, the same weights: geometry unseen
    assert out.weights.std((1, 2)).max() > 1e-3  # but they vary over the pixels


def test_bad_router_options_are_refused():
    with pytest.raises(InvalidInput, match="kind must be one of"):
        RouterConfig(kind="hash")
    with pytest.raises(InvalidInput, match="'sum' for the volume router"):
        RouterConfig(normalise="sum", kind="volume_pixel")
    with pytest.raises(InvalidInput, match="temperature must be > 0"):
        RouterConfig(temperature=0.0)
