"""The ``Gaussians`` dataclass shared by io, render, world and moe.

Storage follows the INRIA 3DGS convention (raw, pre-activation parameters) so PLY round trips are exact:

- ``means``          (N, 3)    float32  world position (Blender Z-up metres unless a caller states otherwise)
- ``quats``          (N, 4)    float32  rotation quaternion (w, x, y, z), not necessarily normalised
- ``log_scales``     (N, 3)    float32  log of the per-axis standard deviation
- ``opacity_logits`` (N,)      float32  logit of opacity
- ``sh``             (N, K, 3) float32  SH coefficients, K = (degree + 1) ** 2; ``sh[:, 0]`` is the DC term
                                        (colour = 0.5 + SH_C0 * sh[:, 0])

Fields may hold numpy arrays or torch tensors (the backend converts with ``to_numpy`` / ``to_torch``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

SH_C0 = 0.28209479177387814


def sh_degree_for(k: int) -> int:
    """SH degree for K coefficients per channel (1, 4, 9, 16 -> 0..3)."""
    d = round(math.sqrt(k)) - 1
    if (d + 1) ** 2 != k or not 0 <= d <= 3:
        raise ValueError(f"{k} SH coefficients per channel is not (degree+1)^2 for a degree 0..3")
    return d


def rgb_to_sh_dc(rgb):
    """Colour in [0, 1] -> DC coefficient (works on numpy and torch)."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc):
    """DC coefficient -> colour (unclamped)."""
    return dc * SH_C0 + 0.5


@dataclass
class Gaussians:
    means: Any
    quats: Any
    log_scales: Any
    opacity_logits: Any
    sh: Any
    extra: dict[str, Any] = field(default_factory=dict)  # other per-Gaussian properties, kept for round trips

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_for(int(self.sh.shape[1]))

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        n = len(self)
        expect = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,)}
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name} has shape {got}, expected {shape}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh has shape {tuple(self.sh.shape)}, expected ({n}, K, 3)")
        sh_degree_for(int(self.sh.shape[1]))

    def to_numpy(self) -> Gaussians:
        def conv(x):
            if isinstance(x, np.ndarray):
                return x
            return x.detach().cpu().numpy()

        return Gaussians(**{f.name: conv(getattr(self, f.name)) for f in fields(self) if f.name != "extra"},
                         extra={k: conv(v) for k, v in self.extra.items()})

    def to_torch(self, device="cpu", dtype=None, requires_grad: bool = False) -> Gaussians:
        import torch

        dtype = dtype or torch.float32

        def conv(x):
            t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
            t = t.to(device=device, dtype=dtype)
            return t.requires_grad_(requires_grad) if requires_grad else t

        return Gaussians(**{f.name: conv(getattr(self, f.name)) for f in fields(self) if f.name != "extra"},
                         extra=dict(self.extra))

    def subset(self, index) -> Gaussians:
        """Gaussians selected by an index or boolean mask (same array type)."""
        return Gaussians(
            **{f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "extra"},
            extra={k: v[index] for k, v in self.extra.items()},
        )

    def with_(self, **changes) -> Gaussians:
        return replace(self, **changes)

    @staticmethod
    def concatenate(parts: list[Gaussians]) -> Gaussians:
        """Join clouds of the same SH degree (numpy or torch, not mixed)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        if isinstance(first.means, np.ndarray):
            cat = np.concatenate
        else:
            import torch

            cat = torch.cat
        keys = set(first.extra)
        for p in parts[1:]:
            keys &= set(p.extra)
        return Gaussians(
            **{f.name: cat([getattr(p, f.name) for p in parts]) for f in fields(first) if f.name != "extra"},
            extra={k: cat([p.extra[k] for p in parts]) for k in sorted(keys)},
        )

    # Activated values -------------------------------------------------------------------------
    def scales(self):
        return np.exp(self.log_scales) if isinstance(self.log_scales, np.ndarray) else self.log_scales.exp()

    def opacities(self):
        x = self.opacity_logits
        if isinstance(x, np.ndarray):
            return 1.0 / (1.0 + np.exp(-x))
        return x.sigmoid()

    def unit_quats(self):
        q = self.quats
        if isinstance(q, np.ndarray):
            return q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
