"""Per-Gaussian embedding expert (E-D3DGS, Bae et al. 2024): every Gaussian carries a learned code, decoded with a
learned code of the time into its deformation.

Gaussian i has an embedding z_i (``gaussian_dim``); time t in [0, 1] reads two tables of temporal embeddings by
linear interpolation, a coarse one (``coarse_frames`` entries over [0, 1]: slow motion) and a fine one (one entry
per dataset frame: fast motion). Each goes through its own decoder:

  d_c = D_c(z_i, e_c(t)),   d_f = D_f(z_i, e_f(t)),   d = d_c + d_f = (d_mu, d_q, d_s, d_o)
  mu' = mu + extent d_mu,   q' = q + d_q,   s' = s + d_s (log-scale),   o' = o + d_o (logit)

D = Linear(gaussian_dim + temporal_dim, width) -> ReLU -> Linear(width, width) -> ReLU -> Linear(width, 11) with the
last layer at zero, so training starts from the canonical cloud. Unlike the deformation field (4DGaussians), the
motion is not a function of position: Gaussians side by side can move apart, which suits fast motion that is
consistent over time (the paper's reading of E-D3DGS). As in E-D3DGS the first ``static_fraction`` of the steps
train the canonical cloud alone. Not kept from E-D3DGS: per-camera time offsets and the local smoothness loss on
neighbouring embeddings (ours: the plain photometric loss of every expert).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...gaussians import Gaussians
from .base import Expert, ExpertConfig


@dataclass
class EmbeddingConfig(ExpertConfig):
    gaussian_dim: int = 32
    temporal_dim: int = 32
    coarse_frames: int = 0  # 0: a quarter of the dataset's frames (at least 2)
    width: int = 128  # E-D3DGS on N3V: net_width 128
    init_std: float = 0.1  # of the per-Gaussian and temporal codes
    lr_embedding: float = 2.5e-3
    lr_temporal: float = 2.5e-3
    lr_mlp: float = 1.6e-4
    static_fraction: float = 0.1


def _decoder(in_dim: int, width: int) -> nn.Sequential:
    head = nn.Linear(width, 3 + 4 + 3 + 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), head)


def interpolate_rows(table: torch.Tensor, t: float) -> torch.Tensor:
    """Row of ``table`` (K, D) at t in [0, 1], rows evenly spaced over [0, 1], linearly interpolated."""
    x = min(max(float(t), 0.0), 1.0) * (table.shape[0] - 1)
    i = min(int(x), table.shape[0] - 2)
    w = x - i
    return table[i] * (1.0 - w) + table[i + 1] * w


class EmbeddingExpert(Expert):
    name = "embedding"
    own_params = ("embedding",)

    def __init__(self, num_frames: int, config: EmbeddingConfig | None = None, extent: float = 1.0):
        super().__init__(num_frames, config or EmbeddingConfig(), extent)
        c = self.config
        coarse = c.coarse_frames or max(2, -(-self.num_frames // 4))
        g = torch.Generator().manual_seed(c.seed + 1)
        self.temporal_coarse = nn.Parameter(c.init_std * torch.randn(max(coarse, 2), c.temporal_dim, generator=g))
        self.temporal_fine = nn.Parameter(c.init_std * torch.randn(max(self.num_frames, 2), c.temporal_dim,
                                                                    generator=g))
        with torch.random.fork_rng(devices=[]):  # seeded MLP initialisation, global generator left untouched
            torch.manual_seed(c.seed)
            self.decoder_coarse = _decoder(c.gaussian_dim + c.temporal_dim, c.width)
            self.decoder_fine = _decoder(c.gaussian_dim + c.temporal_dim, c.width)
        self.deform = True  # False during the static stage

    def on_step(self, step: int, total: int) -> None:
        self.deform = step >= self.config.static_fraction * total

    def _init_params(self, points: torch.Tensor) -> None:
        g = torch.Generator().manual_seed(self.config.seed)
        n = points.shape[0]
        self._set_per_gaussian("embedding", self.config.init_std * torch.randn(n, self.config.gaussian_dim, generator=g))

    def param_groups(self) -> list[dict]:
        c = self.config
        mlp = list(self.decoder_coarse.parameters()) + list(self.decoder_fine.parameters())
        return super().param_groups() + [
            {"name": "embedding", "params": [self.embedding], "lr": c.lr_embedding},
            {"name": "temporal", "params": [self.temporal_coarse, self.temporal_fine], "lr": c.lr_temporal},
            {"name": "mlp", "params": mlp, "lr": c.lr_mlp},
        ]

    def gaussians_at(self, t: float) -> Gaussians:
        if not self.deform:
            return Gaussians(means=self.means, quats=self.quats, log_scales=self.log_scales,
                             opacity_logits=self.opacity_logits, sh=self.sh())
        n = self.num_gaussians
        d = 0.0
        for table, decoder in ((self.temporal_coarse, self.decoder_coarse), (self.temporal_fine, self.decoder_fine)):
            code = interpolate_rows(table, t).expand(n, -1)
            d = d + decoder(torch.cat([self.embedding, code], -1))
        return Gaussians(means=self.means + d[:, :3] * self.extent, quats=self.quats + d[:, 3:7],
                         log_scales=self.log_scales + d[:, 7:10], opacity_logits=self.opacity_logits + d[:, 10],
                         sh=self.sh())
