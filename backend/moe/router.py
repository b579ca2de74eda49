"""The routers of MoE-GS: per-pixel expert weights for blending K experts' images.

Three kinds (``RouterConfig.kind``), the paper's ablation (MOEGS.md):

"volume_pixel" -- the paper's volume-aware pixel router (its released code). Gaussian i of expert k carries
    learnable gate features: base b_i and view v_i (both start at 0.9) and a time feature tau_i (starts at 0, it
    is multiplied by the frame time t). The three are splatted with the expert's own projected geometry and
    opacity (the colour's compositing weights, ``mixture.splat_experts``):

        B_k(p), V_k(p), T_k(p) = sum_{i in k} alpha_i(p) T_i(p) (b_i, v_i, tau_i t)

    and a per-pixel decoder D shared by the experts (1x1 convolutions without bias, 8 -> 6 -> 3 -> 1, ReLU
    between) reads the splatted view and time channels with the pixel's camera ray (origin o, unit direction d,
    world frame): the expert's logit is

        l_k(p) = B_k(p) + D(V_k(p), T_k(p), o, d(p)),      w_k(p) = softmax_k(l_k(p) / temperature)

    with temperature 0.01 (near-hard routing). Trained with RAdam: lr 0.5 on (b, v), 0.05 on tau and D.
"volume" -- the volume-only ablation (ours before; the paper's volume-only row): one gate value g_k,i per
    Gaussian splatted the same way, G_k(p) = sum_i alpha_i T_i g_k,i, and

        softmax:  w_k(p) = softmax_k((G_k(p) + beta_k) / temperature)   (g = raw logits; temperature 1)
        sum:      w_k(p) = (G_k(p) + eps) / sum_j (G_j(p) + eps)         (g = sigmoid(logit) >= 0, eps = 1e-4)

    ``gate`` "param": a free logit per Gaussian (starts at 0); "field": a small MLP on a frequency encoding of
    the Gaussian's position at t and of t (ours), logit_k,i = MLP(gamma(x_i(t)), gamma_t(t))[k], gamma(x) =
    (x, sin(2^l pi x), cos(2^l pi x))_{l < L} with x normalised to [-1, 1] over the experts' canonical box; the
    last layer starts at zero; it is defined everywhere, so it survives pruning unchanged. ``expert_bias`` adds
    a learned logit beta_k per expert to every pixel (the blend where no Gaussian argues); ``gate_decay`` adds
    gate_decay * mean(g^2) of the per-Gaussian logits to the loss. Adam, lr 5e-3.
"pixel" -- the pixel-only ablation: no splatting. Each expert has ONE feature triple (b_k, v_k, tau_k) instead
    of one per Gaussian, and l_k(p) = b_k + D(v_k, tau_k t, o, d(p)) with the same decoder, temperature and
    optimiser as "volume_pixel": a router that knows the ray and the time but not the experts' geometry.

In every kind sum_k w_k(p) = 1 and the blended image is I(p) = sum_k w_k(p) I_k(p) (``mixture.blend``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInput

SUM_EPS = 1e-4
KINDS = ("volume_pixel", "volume", "pixel")
RAY_CHANNELS = 6  # the decoder's ray input: origin (3) and unit direction (3), world frame
# per kind: (gate lr, softmax temperature, expert bias) when the config leaves them None
_KIND_DEFAULTS = {"volume_pixel": (0.5, 0.01, False), "pixel": (0.5, 0.01, False), "volume": (5e-3, 1.0, True)}


@dataclass
class RouterConfig:
    """Which router and how it trains (module docstring). ``lr``, ``temperature`` and ``expert_bias`` left None
    take their kind's value: volume_pixel / pixel 0.5, 0.01, no bias (the paper's); volume 5e-3, 1, bias."""

    gate: Literal["field", "param"] = "param"  # kind "volume": where each Gaussian's gate logit comes from
    normalise: Literal["softmax", "sum"] = "softmax"  # kind "volume"
    frequencies: int = 4  # L of the position encoding ("field" gate)
    time_frequencies: int = 3  # L of the time encoding ("field" gate)
    width: int = 64  # hidden width of the "field" gate's MLP
    lr: float | None = None  # gate parameters: per-Gaussian (b, v) / logits / field MLP
    expert_bias: bool | None = None  # a learned logit per expert added to every pixel (softmax only)
    gate_decay: float = 0.0  # L2 weight on the per-Gaussian logits ("volume" kind, "param" gate)
    kind: Literal["volume_pixel", "volume", "pixel"] = "volume"  # the H100 ablation's best (docs/bench/moe_mixture.md)
    temperature: float | None = None  # softmax temperature
    decoder_lr: float = 0.05  # volume_pixel / pixel: the time features and the per-pixel decoder
    feature_init: float = 0.9  # volume_pixel / pixel: starting value of the base and view features

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InvalidInput(f"router kind must be one of {KINDS}, got {self.kind!r}")
        if self.gate not in ("field", "param"):
            raise InvalidInput(f"router gate must be 'field' or 'param', got {self.gate!r}")
        if self.normalise not in ("softmax", "sum") or (self.normalise == "sum" and self.kind != "volume"):
            raise InvalidInput(f"router normalise must be 'softmax' (or 'sum' for the volume router), got "
                               f"{self.normalise!r} with kind {self.kind!r}")
        lr, temperature, bias = _KIND_DEFAULTS[self.kind]
        self.lr = lr if self.lr is None else float(self.lr)
        self.temperature = temperature if self.temperature is None else float(self.temperature)
        self.expert_bias = bias if self.expert_bias is None else bool(self.expert_bias)
        if self.normalise != "softmax":
            self.expert_bias = False  # a logit added before the softmax: nothing to add it to
        if not (self.lr > 0 and self.decoder_lr > 0 and self.temperature > 0):
            raise InvalidInput(f"router lr, decoder_lr and temperature must be > 0, got {self.lr}, "
                               f"{self.decoder_lr}, {self.temperature}")
        if self.gate_decay < 0 or (self.gate_decay and (self.gate != "param" or self.kind != "volume")):
            raise InvalidInput(f"router gate_decay must be >= 0 and is for the volume router's 'param' gate, got "
                               f"{self.gate_decay} with kind {self.kind!r}, gate {self.gate!r}")


def frequency_encoding(x: torch.Tensor, levels: int) -> torch.Tensor:
    """gamma(x) = (x, sin(2^l pi x), cos(2^l pi x)) for l < levels: (M, D) -> (M, D (1 + 2 levels))."""
    parts = [x]
    for level in range(levels):
        parts += [torch.sin((2.0 ** level) * math.pi * x), torch.cos((2.0 ** level) * math.pi * x)]
    return torch.cat(parts, -1)


def camera_rays(camera, device, dtype=torch.float32) -> torch.Tensor:
    """The pixel rays of ``camera`` (``backend.render.cameras.Camera``) in the world frame: (H, W, 6) = origin
    (the camera centre) and unit direction d = normalise(R^T K^-1 (x + 0.5, y + 0.5, 1)) through each pixel
    centre (OpenCV convention, R the world-to-camera rotation). Built in float64 on ``device`` (a grid built on
    the host cost a 1352x1014 mixture frame ~100 ms of its ~110 ms on the H100)."""
    w, h = int(camera.width), int(camera.height)
    f64 = {"dtype": torch.float64, "device": device}
    m = np.asarray(camera.world_to_cam, np.float64)[:3, :3].T @ np.linalg.inv(np.asarray(camera.K, np.float64))
    yy, xx = torch.meshgrid(torch.arange(h, **f64) + 0.5, torch.arange(w, **f64) + 0.5, indexing="ij")
    dirs = torch.stack([xx, yy, torch.ones_like(xx)], -1) @ torch.as_tensor(m.T, **f64)  # (H, W, 3)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origin = torch.as_tensor(np.asarray(camera.center, np.float64), **f64).expand(h, w, 3)
    return torch.cat([origin, dirs], -1).to(dtype)


def pixel_decoder(generator: torch.Generator | None = None) -> nn.Sequential:
    """D: 1x1 convolutions without bias, 8 -> 6 -> 3 -> 1 channels with ReLU between, as per-pixel linear layers
    on the last axis ((..., 8) -> (..., 1)); weights drawn as torch's default layer init, from ``generator``."""
    layers = [nn.Linear(2 + RAY_CHANNELS, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False), nn.ReLU(),
              nn.Linear(3, 1, bias=False)]
    for layer in layers[::2]:
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    return nn.Sequential(*layers)


class Router(nn.Module):
    """Per-pixel weights for the images of K experts (module docstring).

    num_experts: K · counts: Gaussians per expert (per-Gaussian parameters) · box_lo, box_hi: (3,) box that
    normalises positions for the "field" gate · seed: the decoder's initial weights.
    """

    def __init__(self, num_experts: int, counts: list[int], box_lo, box_hi, config: RouterConfig | None = None,
                 seed: int = 0):
        super().__init__()
        if num_experts < 1 or len(counts) != num_experts:
            raise InvalidInput(f"a router needs one Gaussian count per expert, got {counts} for {num_experts}")
        self.config = config or RouterConfig()
        self.num_experts = int(num_experts)
        self.register_buffer("box_lo", torch.as_tensor(box_lo, dtype=torch.float32).clone())
        self.register_buffer("box_hi", torch.as_tensor(box_hi, dtype=torch.float32).clone())
        c = self.config
        if c.kind == "volume" and c.gate == "field":
            d_in = 3 * (1 + 2 * c.frequencies) + (1 + 2 * c.time_frequencies)
            self.mlp = nn.Sequential(nn.Linear(d_in, c.width), nn.ReLU(), nn.Linear(c.width, c.width), nn.ReLU(),
                                     nn.Linear(c.width, self.num_experts))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        elif c.kind == "volume":
            self.logits = nn.ParameterList([nn.Parameter(torch.zeros(int(n))) for n in counts])
        else:  # per Gaussian (volume_pixel) or per expert (pixel): (b, v) and tau
            sizes = [int(n) for n in counts] if c.kind == "volume_pixel" else [1] * self.num_experts
            self.features = nn.ParameterList([nn.Parameter(torch.full((n, 2), c.feature_init)) for n in sizes])
            self.time_features = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in sizes])
            self.decoder = pixel_decoder(torch.Generator().manual_seed(int(seed)))
        if c.expert_bias:
            self.bias = nn.Parameter(torch.zeros(self.num_experts))

    @staticmethod
    def for_experts(experts, config: RouterConfig | None = None, seed: int = 0) -> Router:
        """A router sized for ``experts`` (their canonical means set the field's box, padded by 10 %)."""
        means = torch.cat([e.means.detach().float().cpu() for e in experts])
        lo, hi = means.min(0).values, means.max(0).values
        pad = 0.1 * (hi - lo).clamp_min(1e-3)
        device = experts[0].means.device
        return Router(len(experts), [e.num_gaussians for e in experts], lo - pad, hi + pad, config, seed).to(device)

    @property
    def splatted_channels(self) -> int:
        """C: channels each Gaussian splats for this router (volume 1, volume_pixel 3, pixel 0)."""
        return {"volume": 1, "volume_pixel": 3, "pixel": 0}[self.config.kind]

    def _check_count(self, k: int, n: int, have: int) -> None:
        if n != have:
            raise InvalidInput(f"expert {k} has {n} Gaussians but its gates were made for {have}; retrain the router")

    def logits_at(self, k: int, means: torch.Tensor, t: float) -> torch.Tensor:
        """Raw gate logits of the volume router for expert ``k``'s Gaussians at time t: means (N_k, 3) -> (N_k,)."""
        if self.config.gate == "param":
            self._check_count(k, means.shape[0], self.logits[k].shape[0])
            return self.logits[k]
        return self.field_logits(means, t)[:, k]

    def field_logits(self, points: torch.Tensor, t: float) -> torch.Tensor:
        """All K logits of the "field" gate at ``points`` (M, 3) and time t: (M, K)."""
        c = self.config
        q = (2.0 * (points - self.box_lo) / (self.box_hi - self.box_lo) - 1.0).clamp(-1.5, 1.5)
        tt = torch.full_like(q[:, :1], 2.0 * float(t) - 1.0)
        return self.mlp(torch.cat([frequency_encoding(q, c.frequencies), frequency_encoding(tt, c.time_frequencies)],
                                  -1))

    def splat_features(self, k: int, means: torch.Tensor, t: float) -> torch.Tensor | None:
        """What expert k's Gaussians (``means`` (N_k, 3) at time t) splat: (N_k, C) with C =
        ``splatted_channels`` -- volume: the gate (logit, or sigmoid(logit) for "sum"); volume_pixel: (b, v, tau t);
        None for the pixel router, which splats nothing."""
        kind = self.config.kind
        if kind == "pixel":
            return None
        if kind == "volume_pixel":
            self._check_count(k, means.shape[0], self.features[k].shape[0])
            return torch.cat([self.features[k], (self.time_features[k] * float(t))[:, None]], 1)
        logit = self.logits_at(k, means, t)
        return (logit if self.config.normalise == "softmax" else logit.sigmoid())[:, None]

    def pixel_logits(self, splatted: torch.Tensor | None, camera, t: float, size: tuple[int, int, int]) -> torch.Tensor:
        """Per-pixel logits l (K, H, W) from the splatted channels (K, H, W, C) (None for the pixel router) seen
        from ``camera`` at time t; ``size`` = (K, H, W). volume: G; volume_pixel: B + D(V, T, ray);
        pixel: b_k + D(v_k, tau_k t, ray)."""
        kind = self.config.kind
        if kind == "volume":
            return splatted[..., 0]
        k, h, w = size
        device = self.decoder[0].weight.device
        rays = camera_rays(camera, device, self.decoder[0].weight.dtype)  # (H, W, 6)
        if kind == "volume_pixel":
            base, view_time = splatted[..., 0], splatted[..., 1:3]
        else:
            feats = torch.stack([torch.cat([f[0], tau * float(t)]) for f, tau in zip(self.features, self.time_features)])
            base = feats[:, 0, None, None].expand(k, h, w)
            view_time = feats[:, None, None, 1:3].expand(k, h, w, 2)
        inputs = torch.cat([view_time, rays[None].expand(k, h, w, RAY_CHANNELS)], -1)  # (K, H, W, 8)
        return base + self.decoder(inputs)[..., 0]

    def normalise(self, logits: torch.Tensor) -> torch.Tensor:
        """Pixel weights w (K, H, W) from logits l (K, H, W): softmax((l + beta) / temperature) over K, or the sum
        rule of the volume router; sum over K is 1."""
        if self.config.normalise == "softmax":
            if self.config.expert_bias:
                logits = logits + self.bias.view(-1, *([1] * (logits.ndim - 1)))
            return torch.softmax(logits / self.config.temperature, 0)
        s = logits.clamp_min(0) + SUM_EPS
        return s / s.sum(0, keepdim=True)

    def pixel_weights(self, splatted: torch.Tensor | None, camera, t: float, size: tuple[int, int, int]):
        """w (K, H, W) = normalise(pixel_logits(...)): the experts' blend weights in every pixel."""
        return self.normalise(self.pixel_logits(splatted, camera, t, size))

    def penalty(self) -> torch.Tensor | float:
        """The router's own loss term: gate_decay times the mean squared per-Gaussian logit (0 without decay)."""
        if not self.config.gate_decay:
            return 0.0
        sq = torch.cat([p.pow(2) for p in self.logits])
        return self.config.gate_decay * sq.mean()

    def param_groups(self) -> list[dict]:
        """Optimizer groups: volume_pixel / pixel: "gates" (b, v and the expert bias) at ``lr``, "decoder" (tau
        and D) at ``decoder_lr``; volume: every parameter at ``lr``."""
        c = self.config
        if c.kind == "volume":
            return [{"name": "router", "params": list(self.parameters()), "lr": c.lr}]
        gates = list(self.features) + ([self.bias] if c.expert_bias else [])
        return [{"name": "gates", "params": gates, "lr": c.lr},
                {"name": "decoder", "params": list(self.time_features) + list(self.decoder.parameters()),
                 "lr": c.decoder_lr}]

    def make_optimizer(self) -> torch.optim.Optimizer:
        """RAdam for volume_pixel / pixel (the paper's code), Adam for volume (ours before)."""
        if self.config.kind == "volume":
            return torch.optim.Adam(self.param_groups(), eps=1e-15)
        return torch.optim.RAdam(self.param_groups())

    def per_gaussian(self) -> list[nn.ParameterList]:
        """The parameter lists with one row per Gaussian of each expert (what pruning must slice)."""
        c = self.config
        if c.kind == "volume_pixel":
            return [self.features, self.time_features]
        return [self.logits] if c.kind == "volume" and c.gate == "param" else []

    @torch.no_grad()
    def keep(self, k: int, mask: torch.Tensor) -> None:
        """Drop the per-Gaussian parameters of expert k's removed Gaussians (``mask`` (N_k,) bool: kept)."""
        for plist in self.per_gaussian():
            plist[k] = nn.Parameter(plist[k].detach()[mask].clone())

    def checkpoint(self) -> dict:
        """{"config", "num_experts", "counts", "state"}: what ``Router.from_checkpoint`` rebuilds from (plain data:
        loadable with ``torch.load(weights_only=True)``)."""
        lists = self.per_gaussian()
        counts = [int(p.shape[0]) for p in lists[0]] if lists else [0] * self.num_experts
        return {"config": asdict(self.config), "num_experts": self.num_experts, "counts": counts,
                "state": dict(self.state_dict())}

    @staticmethod
    def from_checkpoint(ckpt: dict, device="cpu") -> Router:
        # older checkpoints: without the kind (all were volume routers), the expert bias and gate decay
        config = RouterConfig(**{"kind": "volume", "expert_bias": False, "gate_decay": 0.0, **ckpt["config"]})
        r = Router(ckpt["num_experts"], ckpt["counts"], torch.zeros(3), torch.ones(3), config)
        r.load_state_dict(ckpt["state"])
        return r.to(device)
