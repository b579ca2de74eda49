"""The router's prior options: a learned per-expert bias (the blend where no Gaussian says otherwise) and an L2
decay of the per-Gaussian gates toward it."""

from __future__ import annotations

import pytest
import torch

from backend.errors import InvalidInput
from backend.moe.mixture import render_mixture
from backend.moe.router import Router, RouterConfig


def _router(counts, **options):
    return Router(len(counts), counts, torch.full((3,), -1.5), torch.full((3,), 1.5), RouterConfig("param", kind="volume", **options))


def test_expert_bias_sets_the_blend_where_the_gates_are_equal(make_gaussians, make_camera):
    g = make_gaussians(300, 3)
    router = _router([300, 300], expert_bias=True)
    with torch.no_grad():
        router.bias.copy_(torch.tensor([1.0, -1.0]))
    out = render_mixture([g, g], router, make_camera(0.1, 40, 30), 0.5)
    want = torch.softmax(torch.tensor([1.0, -1.0]), 0)  # every gate 0: the bias alone, in every pixel
    torch.testing.assert_close(out.weights, want.view(2, 1, 1).expand(2, 30, 40), atol=1e-6, rtol=0)


def test_expert_bias_gets_a_gradient_toward_the_better_expert(make_gaussians, make_camera):
    good, bad = make_gaussians(300, 3), make_gaussians(300, 4)
    router = _router([300, 300], expert_bias=True)
    cam = make_camera(0.0, 32, 24)
    target = render_mixture([good, good], _router([300, 300]), cam, 0.5).color.detach()
    out = render_mixture([good, bad], router, cam, 0.5)
    (out.color - target).square().mean().backward()
    assert router.bias.grad[0] < 0 < router.bias.grad[1]  # a step of descent raises the good expert's share


def test_gate_decay_is_the_mean_squared_logit():
    router = _router([4, 2], gate_decay=0.1)
    with torch.no_grad():
        router.logits[0].copy_(torch.tensor([1.0, -1.0, 2.0, 0.0]))
        router.logits[1].copy_(torch.tensor([3.0, 0.0]))
    penalty = router.penalty()
    assert penalty.item() == pytest.approx(0.1 * (1 + 1 + 4 + 0 + 9 + 0) / 6)
    penalty.backward()
    torch.testing.assert_close(router.logits[1].grad, 0.1 * 2 * torch.tensor([3.0, 0.0]) / 6)
    assert _router([4, 2]).penalty() == 0.0


def test_bias_survives_a_checkpoint_and_bad_options_are_refused():
    router = _router([5, 5], expert_bias=True, gate_decay=0.01)
    with torch.no_grad():
        router.bias.copy_(torch.tensor([0.7, -0.2]))
    again = Router.from_checkpoint(router.checkpoint())
    torch.testing.assert_close(again.bias, router.bias)
    assert again.config.gate_decay == 0.01
    assert RouterConfig("param", kind="volume").expert_bias and not RouterConfig("param", "sum", kind="volume").expert_bias  # softmax only
    with pytest.raises(InvalidInput, match="'param' gate"):
        RouterConfig("field", gate_decay=0.1, kind="volume")
    with pytest.raises(InvalidInput, match=">= 0"):
        RouterConfig("param", gate_decay=-1.0, kind="volume")
