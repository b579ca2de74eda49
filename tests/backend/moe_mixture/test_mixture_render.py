"""Single-pass multi-expert rendering and the router's blend."""

from __future__ import annotations

import pytest
import torch

from backend.gaussians import Gaussians
from backend.moe.mixture import render_mixture, splat_experts
from backend.moe.router import Router, RouterConfig
from backend.render.rasterize import RasterConfig, rasterize


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


@pytest.mark.parametrize("normalise", ["softmax", "sum"])
@pytest.mark.parametrize("gate", ["field", "param"])
def test_identical_experts_give_that_experts_image(gate, normalise, make_gaussians, make_camera):
    g = make_gaussians(300, 3)
    router = Router(3, [300] * 3, torch.full((3,), -1.5), torch.full((3,), 1.5), RouterConfig(gate, normalise))
    with torch.no_grad():  # non-uniform gates, so the weights really differ per pixel and expert
        for p in router.parameters():
            p.normal_(0, 1)
    cam = make_camera(0.1, 40, 30)
    raster = RasterConfig(background=(0.1, 0.2, 0.3))
    out = render_mixture([g, g, g], router, cam, 0.4, raster)
    assert out.weights.std(0).max() > 0.05
    torch.testing.assert_close(out.weights.sum(0), torch.ones(30, 40))
    torch.testing.assert_close(out.color, rasterize(g, cam, raster).color, atol=1e-5, rtol=0)


@pytest.mark.parametrize("gate", ["field", "param"])
def test_gradients_reach_the_gate_parameters(gate, make_gaussians, make_camera):
    gs = three_experts(make_gaussians)
    router = Router(3, [len(g) for g in gs], torch.full((3,), -1.5), torch.full((3,), 1.5), RouterConfig(gate))
    out = render_mixture(gs, router, make_camera(0.0, 32, 24), 0.5)
    target = torch.rand(24, 32, 3, generator=torch.Generator().manual_seed(0))
    (out.color - target).abs().mean().backward()
    grads = [p.grad for p in router.parameters()]
    assert all(gr is not None for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0
    if gate == "param":  # each Gaussian that paints a pixel gets its own gradient
        assert all(int((p.grad != 0).sum()) > 20 for p in router.logits)
