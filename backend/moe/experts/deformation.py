"""Deformation-field expert (4DGaussians, Wu et al. 2024): canonical Gaussians + a HexPlane field + MLP heads.

For a canonical Gaussian at mu (normalised to [-1, 1]^3 by the initial cloud's box, q = (x, y, z)) at time t
(mapped to [-1, 1]):

  f(mu, t) = concat over resolutions r of  prod_{(a, b) in planes} bilinear(P_r^{ab}, (q_a, q_b))
             with planes (x,y) (x,z) (y,z) (x,t) (y,t) (z,t)  (HexPlane / K-planes, multiplicative fusion),
  h = MLP(f)  (ReLU, ``width`` hidden units),
  mu'  = mu + W_x h,   q' = q + W_q h,   s' = s + W_s h   (log-scale),

opacity and colour are canonical. Time planes start at 1 (the product is then the spatial field alone) and
the heads at 0. As in 4DGaussians, a coarse stage (the first ``coarse_fraction`` of the steps) trains the
canonical cloud alone (deformation switched off), then the field joins. Learning rates follow 4DGaussians
(grid 1.6e-3, MLP 1.6e-4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...gaussians import Gaussians
from .base import Expert, ExpertConfig

PLANES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # axes of (x, y, z, t)


@dataclass
class DeformationConfig(ExpertConfig):
    resolutions: tuple[int, ...] = (16, 32)  # spatial plane resolution per level
    time_resolution: int = 0  # plane size along t; 0: half the frame count, at least 2 (4DGaussians' recipe)
    features: int = 16
    width: int = 64
    lr_grid: float = 1.6e-3  # 4DGaussians: grid 1.6e-3, deformation MLP 1.6e-4
    lr_mlp: float = 1.6e-4
    coarse_fraction: float = 0.2


class HexPlane(nn.Module):
    """Multi-resolution HexPlane field: (M, 4) points in [-1, 1] -> (M, features * levels)."""

    def __init__(self, resolutions, time_resolution: int, features: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.planes = nn.ParameterList()
        for r in resolutions:
            for a, b in PLANES:
                size_b = time_resolution if b == 3 else r
                if b == 3:
                    init = torch.ones(1, features, size_b, r)
                else:
                    init = 0.1 + 0.4 * torch.rand(1, features, size_b, r, generator=g)
                self.planes.append(nn.Parameter(init))
        self.levels = len(resolutions)
        self.out_dim = features * self.levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for level in range(self.levels):
            f = 1.0
            for p, (a, b) in enumerate(PLANES):
                plane = self.planes[level * len(PLANES) + p]
                grid = torch.stack([x[:, a], x[:, b]], -1)[None, :, None, :]  # grid_sample: (x -> width, y -> h)
                v = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
                f = f * v[0, :, :, 0].T
            outs.append(f)
        return torch.cat(outs, -1)


class DeformationExpert(Expert):
    name = "deformation"

    def __init__(self, num_frames: int, config: DeformationConfig | None = None, extent: float = 1.0):
        super().__init__(num_frames, config or DeformationConfig(), extent)
        c = self.config
        self.field = HexPlane(c.resolutions, c.time_resolution or max(2, self.num_frames // 2), c.features, c.seed)
        with torch.random.fork_rng(devices=[]):  # seeded MLP initialisation, global generator left untouched
            torch.manual_seed(c.seed)
            self.mlp = nn.Sequential(nn.Linear(self.field.out_dim, c.width), nn.ReLU(), nn.Linear(c.width, c.width),
                                     nn.ReLU())
            self.heads = nn.Linear(c.width, 3 + 4 + 3)
        nn.init.zeros_(self.heads.weight)
        nn.init.zeros_(self.heads.bias)
        self.register_buffer("box_lo", torch.full((3,), -1.0))
        self.register_buffer("box_hi", torch.full((3,), 1.0))
        self.deform = True  # False during the coarse stage

    def on_step(self, step: int, total: int) -> None:
        self.deform = step >= self.config.coarse_fraction * total

    def _init_params(self, points: torch.Tensor) -> None:
        lo, hi = points.min(0).values, points.max(0).values
        pad = 0.1 * (hi - lo).clamp_min(1e-3)
        self.box_lo.copy_(lo - pad)
        self.box_hi.copy_(hi + pad)

    def param_groups(self) -> list[dict]:
        c = self.config
        return super().param_groups() + [
            {"name": "grid", "params": list(self.field.parameters()), "lr": c.lr_grid},
            {"name": "mlp", "params": list(self.mlp.parameters()) + list(self.heads.parameters()), "lr": c.lr_mlp},
        ]

    def gaussians_at(self, t: float) -> Gaussians:
        if not self.deform:
            return Gaussians(means=self.means, quats=self.quats, log_scales=self.log_scales,
                             opacity_logits=self.opacity_logits, sh=self.sh())
        q = 2.0 * (self.means - self.box_lo) / (self.box_hi - self.box_lo) - 1.0
        x = torch.cat([q.clamp(-1, 1), torch.full_like(q[:, :1], 2.0 * float(t) - 1.0)], -1)
        d = self.heads(self.mlp(self.field(x)))
        return Gaussians(means=self.means + d[:, :3], quats=self.quats + d[:, 3:7],
                         log_scales=self.log_scales + d[:, 7:10], opacity_logits=self.opacity_logits, sh=self.sh())
