"""Keyframe / explicit-motion expert (Ex4DGS, Lee et al. 2024).

K keyframes at times tau_k = k / (K - 1). Static Gaussians have one position and rotation; dynamic Gaussians
add explicit per-keyframe offsets P_ik (position) and R_ik (rotation) interpolated in time:

  mu_i(t) = mu_i + d_i * Hermite(P_i, t),      q_i(t) = q_i + d_i * lerp(R_i, t)

with d_i in {0, 1} the dynamic flag. Hermite is the cubic Hermite spline through the keyframe values with
Catmull-Rom tangents m_k = (P_{k+1} - P_{k-1}) / 2 (one-sided at the ends): for tau_k <= t <= tau_{k+1},
s = (t - tau_k) (K - 1),
  H(s) = (2s^3 - 3s^2 + 1) P_k + (s^3 - 2s^2 + s) m_k + (-2s^3 + 3s^2) P_{k+1} + (s^3 - s^2) m_{k+1}.
Rotations interpolate linearly (normalised by the renderer). Everything starts static; at each densification
step, static Gaussians whose mean screen-space gradient exceeds ``dynamic_threshold`` become dynamic (their
keyframe offsets start at 0, so the switch does not change the image), Ex4DGS's progressive static-to-dynamic
conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...gaussians import Gaussians
from .base import Expert, ExpertConfig


@dataclass
class KeyframeConfig(ExpertConfig):
    num_keyframes: int = 0  # 0: one keyframe every ``keyframe_interval`` frames
    keyframe_interval: int = 5
    lr_keyframes: float = 8e-4  # times the scene extent
    lr_keyrot: float = 1e-3
    dynamic_threshold: float = 1e-4


class KeyframeExpert(Expert):
    name = "keyframe"
    own_params = ("key_offsets", "key_rotations")
    per_gaussian_buffers = ("dynamic",)
    position_params = ("means", "key_offsets")

    def __init__(self, num_frames: int, config: KeyframeConfig | None = None, extent: float = 1.0):
        c = config or KeyframeConfig()
        k = c.num_keyframes or (int(num_frames) - 1) // c.keyframe_interval + 1
        super().__init__(num_frames, replace(c, num_keyframes=max(2, int(k))), extent)
        self.num_keyframes = self.config.num_keyframes

    def _init_params(self, points: torch.Tensor) -> None:
        n, k = points.shape[0], self.num_keyframes
        self._set_per_gaussian("key_offsets", torch.zeros(n, k, 3))
        self._set_per_gaussian("key_rotations", torch.zeros(n, k, 4))
        self._set_per_gaussian_buffer("dynamic", torch.zeros(n, dtype=torch.bool))

    def param_groups(self) -> list[dict]:
        c = self.config
        return super().param_groups() + [
            {"name": "key_offsets", "params": [self.key_offsets], "lr": c.lr_keyframes * self.extent},
            {"name": "key_rotations", "params": [self.key_rotations], "lr": c.lr_keyrot},
        ]

    def _interval(self, t: float) -> tuple[int, float]:
        x = min(max(float(t), 0.0), 1.0) * (self.num_keyframes - 1)
        k = min(int(x), self.num_keyframes - 2)
        return k, x - k

    def gaussians_at(self, t: float) -> Gaussians:
        k, s = self._interval(t)
        p = self.key_offsets
        last = self.num_keyframes - 1

        def tangent(j):
            return 0.5 * (p[:, min(j + 1, last)] - p[:, max(j - 1, 0)]) * (2.0 if j in (0, last) else 1.0)

        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        offset = h00 * p[:, k] + h10 * tangent(k) + h01 * p[:, k + 1] + h11 * tangent(k + 1)
        rot = (1 - s) * self.key_rotations[:, k] + s * self.key_rotations[:, k + 1]
        d = self.dynamic.to(offset.dtype)[:, None]
        return Gaussians(means=self.means + d * offset, quats=self.quats + d * rot, log_scales=self.log_scales,
                         opacity_logits=self.opacity_logits, sh=self.sh())

    @torch.no_grad()
    def densify_and_prune(self, optimizer, grad_accum, count, generator=None, prune_big=False) -> dict:
        g = grad_accum / count.clamp_min(1)
        promote = (~self.dynamic) & (g >= self.config.dynamic_threshold) & (count > 0)
        self.dynamic |= promote
        stats = super().densify_and_prune(optimizer, grad_accum, count, generator, prune_big)
        stats["made_dynamic"] = int(promote.sum())
        stats["dynamic"] = int(self.dynamic.sum())
        return stats
