"""The volume-aware pixel router of MoE-GS: Gaussian-level gates splatted into per-pixel expert weights.

Every Gaussian i of expert k carries a gate value g_k,i. Splatting it with the colour's compositing weights
(``backend.render.rasterize``'s extra channels, or the single-pass renderer of ``mixture``) gives per pixel

    G_k(p) = sum_{i in expert k} T_i(p) alpha_i(p) g_k,i          (differentiable weight splatting)

and the experts' pixel weights are normalised across k:

    softmax:  w_k(p) = exp(G_k(p)) / sum_j exp(G_j(p))            (g = raw logits; the default)
    sum:      w_k(p) = (G_k(p) + eps) / sum_j (G_j(p) + eps)       (g = sigmoid(logit) >= 0, eps = 1e-4)

so that sum_k w_k(p) = 1 and the blended image is I(p) = sum_k w_k(p) I_k(p). Options (ours, not MoE-GS's):
``expert_bias`` adds a learned logit b_k per expert to every pixel, w = softmax(G + b): the blend of regions no
Gaussian argues about (zero gates give softmax(b) instead of an even blend of all experts, which starts far below
the best expert); ``gate_decay`` adds gate_decay * mean(g^2) over the per-Gaussian logits to the router's loss,
pulling gates that the training views do not need back to that blend. Because the weights come from
3D Gaussians they agree across views and vary smoothly in time (the "volume-aware" part).

Gate functions (``RouterConfig.gate``):

    "field": a small MLP on a frequency encoding of the Gaussian's position at time t and of t (ours):
             logit_k,i = MLP(gamma(x_i(t)), gamma_t(t))[k],
             gamma(x) = (x, sin(2^l pi x), cos(2^l pi x))_{l < L} with x normalised to [-1, 1] over the box of
             the experts' canonical means. One MLP with K outputs; the last layer starts at zero (uniform
             weights). It is defined everywhere, so it survives pruning and densification unchanged.
    "param": a free per-Gaussian logit per expert (starts at 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from ..errors import InvalidInput

SUM_EPS = 1e-4


@dataclass
class RouterConfig:
    """How gates are computed and normalised (module docstring)."""

    gate: Literal["field", "param"] = "field"
    normalise: Literal["softmax", "sum"] = "softmax"
    frequencies: int = 4  # L of the position encoding
    time_frequencies: int = 3  # L of the time encoding
    width: int = 64
    lr: float = 5e-3  # Adam learning rate of the gate parameters (field MLP or per-Gaussian logits)
    expert_bias: bool = True  # a learned logit b_k per expert added to every pixel's G_k (softmax; off for sum)
    gate_decay: float = 0.0  # L2 weight on the per-Gaussian logits ("param" gate) in the router's loss

    def __post_init__(self):
        if self.gate not in ("field", "param"):
            raise InvalidInput(f"router gate must be 'field' or 'param', got {self.gate!r}")
        if self.normalise not in ("softmax", "sum"):
            raise InvalidInput(f"router normalise must be 'softmax' or 'sum', got {self.normalise!r}")
        if self.normalise != "softmax":
            self.expert_bias = False  # a logit added before the softmax: nothing to add it to
        if self.gate_decay < 0 or (self.gate_decay and self.gate != "param"):
            raise InvalidInput(f"router gate_decay must be >= 0 and is for the 'param' gate, got {self.gate_decay} "
                               f"with gate {self.gate!r}")


def frequency_encoding(x: torch.Tensor, levels: int) -> torch.Tensor:
    """gamma(x) = (x, sin(2^l pi x), cos(2^l pi x)) for l < levels: (M, D) -> (M, D (1 + 2 levels))."""
    parts = [x]
    for level in range(levels):
        parts += [torch.sin((2.0 ** level) * math.pi * x), torch.cos((2.0 ** level) * math.pi * x)]
    return torch.cat(parts, -1)


class Router(nn.Module):
    """Gate values for the Gaussians of K experts.

    num_experts: K · counts: Gaussians per expert (used by the "param" gate) · box_lo, box_hi: (3,) box that
    normalises positions for the "field" gate.
    """

    def __init__(self, num_experts: int, counts: list[int], box_lo, box_hi, config: RouterConfig | None = None):
        super().__init__()
        if num_experts < 1 or len(counts) != num_experts:
            raise InvalidInput(f"a router needs one Gaussian count per expert, got {counts} for {num_experts}")
        self.config = config or RouterConfig()
        self.num_experts = int(num_experts)
        self.register_buffer("box_lo", torch.as_tensor(box_lo, dtype=torch.float32).clone())
        self.register_buffer("box_hi", torch.as_tensor(box_hi, dtype=torch.float32).clone())
        c = self.config
        if c.gate == "field":
            d_in = 3 * (1 + 2 * c.frequencies) + (1 + 2 * c.time_frequencies)
            self.mlp = nn.Sequential(nn.Linear(d_in, c.width), nn.ReLU(), nn.Linear(c.width, c.width), nn.ReLU(),
                                     nn.Linear(c.width, self.num_experts))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        else:
            self.logits = nn.ParameterList([nn.Parameter(torch.zeros(int(n))) for n in counts])
        if c.expert_bias:
            self.bias = nn.Parameter(torch.zeros(self.num_experts))

    @staticmethod
    def for_experts(experts, config: RouterConfig | None = None) -> Router:
        """A router sized for ``experts`` (their canonical means set the field's box, padded by 10 %)."""
        means = torch.cat([e.means.detach().float().cpu() for e in experts])
        lo, hi = means.min(0).values, means.max(0).values
        pad = 0.1 * (hi - lo).clamp_min(1e-3)
        device = experts[0].means.device
        return Router(len(experts), [e.num_gaussians for e in experts], lo - pad, hi + pad, config).to(device)

    def logits_at(self, k: int, means: torch.Tensor, t: float) -> torch.Tensor:
        """Raw gate logits of expert ``k``'s Gaussians at time t: means (N_k, 3) positions at t -> (N_k,)."""
        if self.config.gate == "param":
            if means.shape[0] != self.logits[k].shape[0]:
                raise InvalidInput(f"expert {k} has {means.shape[0]} Gaussians but its gates were made for "
                                   f"{self.logits[k].shape[0]}; retrain the router")
            return self.logits[k]
        return self.field_logits(means, t)[:, k]

    def field_logits(self, points: torch.Tensor, t: float) -> torch.Tensor:
        """All K logits of the "field" gate at ``points`` (M, 3) and time t: (M, K)."""
        c = self.config
        q = (2.0 * (points - self.box_lo) / (self.box_hi - self.box_lo) - 1.0).clamp(-1.5, 1.5)
        tt = torch.full_like(q[:, :1], 2.0 * float(t) - 1.0)
        return self.mlp(torch.cat([frequency_encoding(q, c.frequencies), frequency_encoding(tt, c.time_frequencies)],
                                  -1))

    def gate_values(self, k: int, means: torch.Tensor, t: float) -> torch.Tensor:
        """What is splatted for expert k: logits (softmax mode) or sigmoid(logits) (sum mode), (N_k,)."""
        logit = self.logits_at(k, means, t)
        return logit if self.config.normalise == "softmax" else logit.sigmoid()

    def normalise(self, splatted: torch.Tensor) -> torch.Tensor:
        """Pixel weights w (K, H, W) from the splatted gates G (K, H, W); sum over K is 1."""
        if self.config.normalise == "softmax":
            if self.config.expert_bias:
                splatted = splatted + self.bias.view(-1, *([1] * (splatted.ndim - 1)))
            return torch.softmax(splatted, 0)
        s = splatted.clamp_min(0) + SUM_EPS
        return s / s.sum(0, keepdim=True)

    def penalty(self) -> torch.Tensor | float:
        """The router's own loss term: gate_decay times the mean squared per-Gaussian logit (0 without decay)."""
        if not self.config.gate_decay:
            return 0.0
        sq = torch.cat([p.pow(2) for p in self.logits])
        return self.config.gate_decay * sq.mean()

    @torch.no_grad()
    def keep(self, k: int, mask: torch.Tensor) -> None:
        """Drop the per-Gaussian gates of expert k's removed Gaussians (``mask`` (N_k,) bool: kept)."""
        if self.config.gate == "param":
            self.logits[k] = nn.Parameter(self.logits[k].detach()[mask].clone())

    def checkpoint(self) -> dict:
        """{"config", "num_experts", "counts", "state"}: what ``Router.from_checkpoint`` rebuilds from."""
        counts = [int(p.shape[0]) for p in self.logits] if self.config.gate == "param" else [0] * self.num_experts
        return {"config": asdict(self.config), "num_experts": self.num_experts, "counts": counts,
                "state": self.state_dict()}

    @staticmethod
    def from_checkpoint(ckpt: dict, device="cpu") -> Router:
        config = RouterConfig(**{"expert_bias": False, "gate_decay": 0.0, **ckpt["config"]})  # older: without them
        r = Router(ckpt["num_experts"], ckpt["counts"], torch.zeros(3), torch.ones(3), config)
        r.load_state_dict(ckpt["state"])
        return r.to(device)
