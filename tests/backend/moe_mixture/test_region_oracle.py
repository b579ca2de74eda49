"""evaluate.region_oracle and blend_oracle: the best expert (or blend of experts) per tile, chosen with the truth
(the headroom a hard or a soft router could reach)."""

from __future__ import annotations

import pytest
import torch

from backend.errors import InvalidInput
from backend.moe.evaluate import blend_oracle, region_oracle
from backend.moe.losses import psnr


def _two_halves():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 16, 24, 3, generator=g)  # 3 images
    left = truth.clone()
    left[..., 12:, :] = torch.rand(3, 16, 12, 3, generator=g)  # exact on the left half only
    right = truth.clone()
    right[..., :12, :] = (truth[..., :12, :] + 0.2).clamp(0, 1)  # exact on the right half, a little off on the left
    return torch.stack([left, right]), truth


def test_oracle_picks_the_right_expert_per_tile():
    renders, truth = _two_halves()  # expert 0 exact on the left half, expert 1 exact on the right half
    o = region_oracle(renders, truth, 4)
    assert o["choice"].shape == (3, 16, 24)
    assert (o["choice"][..., :12] == 0).all() and (o["choice"][..., 12:] == 1).all()
    assert o["wins"] == pytest.approx([0.5, 0.5])
    assert o["psnr"] > 100  # every tile has an exact expert
    singles = [sum(psnr(r, t) for r, t in zip(renders[k], truth)) / 3 for k in range(2)]
    assert max(singles) < 20  # each alone is wrong on half the image
    renders[0] = (truth + 0.3).clamp(0, 1)  # expert 0 now off everywhere: expert 1 takes the left half too
    o = region_oracle(renders, truth, 4)
    assert (o["choice"] == 1).all() and o["wins"] == pytest.approx([0.0, 1.0])


def test_coarse_tiles_and_per_pixel_bound_the_best_expert():
    g = torch.Generator().manual_seed(1)
    truth = torch.rand(2, 20, 30, 3, generator=g)
    renders = (truth[None] + 0.1 * torch.randn(3, 2, 20, 30, 3, generator=g)).clamp(0, 1)
    singles = [sum(psnr(r, t) for r, t in zip(renders[k], truth)) / 2 for k in range(3)]
    by_block = {b: region_oracle(renders, truth, b)["psnr"] for b in (1, 8, 64)}
    assert by_block[1] > by_block[8] > max(singles) - 1e-6  # finer tiles: more room
    assert by_block[64] == pytest.approx(max(singles), abs=0.3)  # one tile per image: the best expert per image
    assert region_oracle(renders, truth, 7)["choice"].shape == (2, 20, 30)  # tiles that do not divide the image


def test_oracle_rejects_mismatched_shapes():
    with pytest.raises(InvalidInput, match="same images"):
        region_oracle(torch.zeros(2, 3, 8, 8, 3), torch.zeros(2, 8, 8, 3), 4)
    with pytest.raises(InvalidInput, match="block >= 1"):
        region_oracle(torch.zeros(2, 3, 8, 8, 3), torch.zeros(3, 8, 8, 3), 0)


def test_blend_oracle_averages_independent_errors():
    g = torch.Generator().manual_seed(2)
    truth = 0.2 + 0.6 * torch.rand(2, 32, 32, 3, generator=g)
    renders = truth[None] + 0.05 * torch.randn(2, 2, 32, 32, 3, generator=g)  # same size, independent noise
    single = max(sum(psnr(r, t) for r, t in zip(renders[k], truth)) / 2 for k in range(2))
    whole = blend_oracle(renders, truth, 32)  # one blend per image: the best constant blend
    assert whole["psnr"] == pytest.approx(single + 10 * torch.log10(torch.tensor(2.0)).item(), abs=0.3)  # ~ +3 dB
    assert whole["weights"] == pytest.approx([0.5, 0.5], abs=0.05)
    assert whole["weight_maps"].shape == (2, 2, 32, 32)
    assert torch.allclose(whole["weight_maps"].sum(0), torch.ones(2, 32, 32, dtype=torch.float64))
    # a blend per tile does at least as well as the best single expert per tile
    for b in (4, 8):
        assert blend_oracle(renders, truth, b)["psnr"] >= region_oracle(renders, truth, b)["psnr"] - 1e-6


def test_blend_oracle_matches_a_search_over_the_simplex():
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(1, 6, 6, 3, generator=g)
    bias = torch.tensor([0.1, -0.05, 0.2]).view(3, 1, 1, 1, 1)  # three experts, correlated errors, one poor
    renders = (truth[None] + bias + 0.05 * torch.randn(3, 1, 6, 6, 3, generator=g)).clamp(0, 1)
    o = blend_oracle(renders, truth, 6)
    steps = torch.linspace(0, 1, 101)
    best = -1.0
    for a in steps:
        for b in steps[steps <= 1 - a + 1e-9]:
            w = torch.tensor([a, b, max(0.0, 1 - a - b)]).view(3, 1, 1, 1, 1)
            best = max(best, psnr((w * renders.clamp(0, 1)).sum(0), truth))
    assert o["psnr"] == pytest.approx(best, abs=0.02)
    assert o["psnr"] >= best - 1e-6
    assert all(x >= 0 for x in o["weights"]) and sum(o["weights"]) == pytest.approx(1.0)
    assert o["weights"][2] < 0.2  # the poor expert gets little


def test_blend_oracle_gives_each_half_to_its_exact_expert():
    renders, truth = _two_halves()
    o = blend_oracle(renders, truth, 4)
    assert o["psnr"] > 100
    assert (o["weight_maps"][0, ..., :12] > 0.999).all() and (o["weight_maps"][1, ..., 12:] > 0.999).all()
    with pytest.raises(InvalidInput, match="same images"):
        blend_oracle(renders[:, :2], truth, 4)
    with pytest.raises(InvalidInput, match="1 to 6 experts"):
        blend_oracle(torch.zeros(7, 1, 4, 4, 3), torch.zeros(1, 4, 4, 3), 4)


def test_blend_oracle_builds_every_tensor_on_the_renders_device():
    """bench/moe_oracle.py runs the oracles on the GPU: every tensor the blend oracle makes must live where the
    renders do (one made on the CPU stopped the H100 run of 2026-12-06). On the ``meta`` device a CPU tensor fails
    with a device mismatch; built right, the solve runs through and only the final PSNR, a number, cannot be read."""
    renders, truth = torch.rand(3, 2, 16, 16, 3, device="meta"), torch.rand(2, 16, 16, 3, device="meta")
    with pytest.raises(RuntimeError, match="meta tensors"):
        blend_oracle(renders, truth, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_blend_oracle_on_cuda_matches_the_cpu():
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(2, 24, 24, 3, generator=g)
    renders = (truth[None] + 0.1 * torch.randn(3, 2, 24, 24, 3, generator=g)).clamp(0, 1)
    cpu, gpu = blend_oracle(renders, truth, 8), blend_oracle(renders.cuda(), truth.cuda(), 8)
    assert gpu["psnr"] == pytest.approx(cpu["psnr"], abs=1e-4)
    assert gpu["weights"] == pytest.approx(cpu["weights"], abs=1e-5)
