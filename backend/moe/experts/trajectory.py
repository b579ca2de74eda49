"""Polynomial-trajectory expert with temporal opacity (Spacetime Gaussians, Li et al. 2024).

Every Gaussian i has a temporal centre c_i and scale sigma_i; with dt = t - c_i:

  mu_i(t)      = mu_i + b1_i dt + b2_i dt^2 + b3_i dt^3          (cubic polynomial motion)
  q_i(t)       = q_i + w_i dt                                    (linear rotation, normalised by the renderer)
  o_i(t)       = sigmoid(a_i) exp(-(dt / sigma_i)^2)             (temporal radial-basis opacity)

Scale and colour are constant. The cloud comes from the first frame only, so the temporal centres start
spread uniformly over [0, 1] (seeded) with sigma = 0.5, and the motion coefficients at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...gaussians import Gaussians
from .base import Expert, ExpertConfig, inverse_sigmoid


@dataclass
class TrajectoryConfig(ExpertConfig):
    lr_motion: float = 3.5e-3  # times the scene extent, as STG's polynomial coefficients
    lr_omega: float = 1e-3
    lr_tcenter: float = 1e-3
    lr_tscale: float = 3e-3
    init_tscale: float = 0.5


class TrajectoryExpert(Expert):
    name = "trajectory"
    own_params = ("motion", "omega", "t_center", "log_tscale")

    def __init__(self, num_frames: int, config: TrajectoryConfig | None = None, extent: float = 1.0):
        super().__init__(num_frames, config or TrajectoryConfig(), extent)

    def _init_params(self, points: torch.Tensor) -> None:
        n = points.shape[0]
        g = torch.Generator().manual_seed(self.config.seed)
        self._set_per_gaussian("motion", torch.zeros(n, 3, 3))  # b1, b2, b3 (rows) per Gaussian
        self._set_per_gaussian("omega", torch.zeros(n, 4))
        self._set_per_gaussian("t_center", torch.rand(n, generator=g))
        self._set_per_gaussian("log_tscale", torch.full((n,), float(torch.log(torch.tensor(self.config.init_tscale)))))

    def param_groups(self) -> list[dict]:
        c = self.config
        return super().param_groups() + [
            {"name": "motion", "params": [self.motion], "lr": c.lr_motion * self.extent},
            {"name": "omega", "params": [self.omega], "lr": c.lr_omega},
            {"name": "t_center", "params": [self.t_center], "lr": c.lr_tcenter},
            {"name": "log_tscale", "params": [self.log_tscale], "lr": c.lr_tscale},
        ]

    def gaussians_at(self, t: float) -> Gaussians:
        dt = (float(t) - self.t_center)[:, None]
        means = self.means + self.motion[:, 0] * dt + self.motion[:, 1] * dt ** 2 + self.motion[:, 2] * dt ** 3
        quats = self.quats + self.omega * dt
        opacity = self.opacity_logits.sigmoid() * torch.exp(-(dt[:, 0] / self.log_tscale.exp()) ** 2)
        return Gaussians(means=means, quats=quats, log_scales=self.log_scales,
                         opacity_logits=inverse_sigmoid(opacity), sh=self.sh())
