"""evaluate.region_oracle: the best expert per tile, chosen with the truth (the headroom a router could reach)."""

from __future__ import annotations

import pytest
import torch

from backend.errors import InvalidInput
from backend.moe.evaluate import region_oracle
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
