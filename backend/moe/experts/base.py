"""The ``Expert`` interface and what every expert shares: per-Gaussian parameters, Adam with per-group learning
rates, and 3DGS adaptive density control (clone / split by screen-space gradient, opacity pruning).

An expert is a dynamic Gaussian model: ``gaussians_at(t)`` returns the Gaussians (torch, differentiable) at
normalised time t in [0, 1]. Per-Gaussian parameters are ``nn.Parameter`` tensors whose first dimension is
the Gaussian count N (listed in ``per_gaussian``); other parameters (grids, MLPs) are shared. Densification
changes N and keeps Adam's moments for the surviving Gaussians (new ones start at zero moments), as 3DGS does.

Density control (Kerbl et al. 2023), with g_i the mean over views where Gaussian i was visible of
|d L / d mu2d_i| measured in NDC units (pixel gradient times (W/2, H/2)):
  - clone  where g_i >= tau and max(scale_i) <= p_dense * extent: one copy,
  - split  where g_i >= tau and max(scale_i) >  p_dense * extent: two Gaussians at positions sampled from
    N(mu_i, Sigma_i), scales divided by 1.6, the original removed,
  - prune  where opacity_i < o_min or (after the first opacity reset) max(scale_i) > 0.1 * extent.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from ...gaussians import Gaussians, rgb_to_sh_dc


@dataclass
class ExpertConfig:
    """Learning rates and density control shared by every expert (3DGS defaults, lr_means scaled by extent)."""

    sh_degree: int = 1
    lr_means: float = 1.6e-4
    lr_sh_dc: float = 2.5e-3
    lr_sh_rest: float = 1.25e-4
    lr_opacity: float = 5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    max_gaussians: int = 300_000
    seed: int = 0  # for the expert's random initial values (reproducible runs and resumes)


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-6, 1 - 1e-6)
    return torch.log(x) - torch.log1p(-x)


def knn_log_scales(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """log of the mean distance to the k nearest neighbours (3DGS's initial isotropic scale), (N, 3)."""
    n = points.shape[0]
    out = torch.empty(n)
    for s in range(0, n, 4096):
        d = torch.cdist(points[s:s + 4096], points)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out[s:s + 4096] = d.topk(min(k, max(n - 1, 1)), largest=False).values.mean(1)
    out = out.clamp_min(1e-7)
    return out.log()[:, None].repeat(1, 3)


class Expert(nn.Module, ABC):
    """A dynamic Gaussian model behind one interface. Subclasses define ``name``, ``_init_params``,
    ``gaussians_at`` and (if they add per-Gaussian or shared parameters) ``param_groups``."""

    name: str = ""
    # per-Gaussian parameters (first dimension N): the shared ones, then the expert's own, then buffers
    base_params: tuple[str, ...] = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")
    own_params: tuple[str, ...] = ()
    per_gaussian_buffers: tuple[str, ...] = ()
    # per-Gaussian parameters moved with the Gaussian's position when it is split (added offset broadcasts)
    position_params: tuple[str, ...] = ("means",)

    def __init__(self, num_frames: int, config: ExpertConfig | None = None, extent: float = 1.0):
        super().__init__()
        self.config = config or ExpertConfig()
        self.num_frames = int(num_frames)
        self.extent = float(extent)

    @property
    def per_gaussian(self) -> tuple[str, ...]:
        return self.base_params + self.own_params

    # -- construction -------------------------------------------------------------------------------
    def init_from_points(self, points, colors) -> None:
        """Start from a coloured point cloud: points (P, 3), colors (P, 3) in [0, 1] (numpy or torch)."""
        pts = torch.as_tensor(points, dtype=torch.float32)
        cols = torch.as_tensor(colors, dtype=torch.float32)
        n = pts.shape[0]
        k = (self.config.sh_degree + 1) ** 2
        sh = torch.zeros(n, k, 3)
        sh[:, 0] = rgb_to_sh_dc(cols)
        base = {
            "means": pts.clone(),
            "quats": torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
            "log_scales": knn_log_scales(pts),
            "opacity_logits": inverse_sigmoid(torch.full((n,), 0.1)),
            "sh_dc": sh[:, :1].contiguous(),
            "sh_rest": sh[:, 1:].contiguous(),
        }
        for key, value in base.items():
            self._set_per_gaussian(key, value)
        self._init_params(pts)

    def _set_per_gaussian(self, key: str, value: torch.Tensor) -> None:
        setattr(self, key, nn.Parameter(value))

    def _set_per_gaussian_buffer(self, key: str, value: torch.Tensor) -> None:
        self.register_buffer(key, value)

    @abstractmethod
    def _init_params(self, points: torch.Tensor) -> None:
        """Create the expert's own parameters once the base per-Gaussian ones exist."""

    # -- the model ----------------------------------------------------------------------------------
    @abstractmethod
    def gaussians_at(self, t: float) -> Gaussians:
        """The Gaussians at normalised time t in [0, 1]: torch tensors, differentiable, N rows in a fixed order."""

    def on_step(self, step: int, total: int) -> None:
        """Called by the trainer before each step (``step`` of ``total``); experts with stages override it."""

    def sh(self) -> torch.Tensor:
        return torch.cat([self.sh_dc, self.sh_rest], 1)

    def base_opacity(self) -> torch.Tensor:
        """(N,) opacity used for pruning (time-independent part)."""
        return self.opacity_logits.sigmoid()

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    def num_bytes(self) -> int:
        """Model size: bytes of every parameter and buffer."""
        return sum(t.numel() * t.element_size() for t in list(self.parameters()) + list(self.buffers()))

    # -- optimisation -------------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Adam groups {"name", "params": [p], "lr"}; one group per per-Gaussian parameter."""
        c = self.config
        lrs = {"means": c.lr_means * self.extent, "quats": c.lr_quats, "log_scales": c.lr_scales,
               "opacity_logits": c.lr_opacity, "sh_dc": c.lr_sh_dc, "sh_rest": c.lr_sh_rest}
        return [{"name": k, "params": [getattr(self, k)], "lr": lrs[k]} for k in lrs]

    def make_optimizer(self) -> torch.optim.Adam:
        return torch.optim.Adam(self.param_groups(), lr=0.0, eps=1e-15)

    # -- density control ----------------------------------------------------------------------------
    @torch.no_grad()
    def densify_and_prune(self, optimizer: torch.optim.Optimizer, grad_accum: torch.Tensor, count: torch.Tensor,
                          generator: torch.Generator | None = None, prune_big: bool = False) -> dict:
        """Clone / split / prune (module docstring). grad_accum, count: (N,) sums of NDC gradient norms and
        visibility counts since the last call. Returns counts of what was done."""
        c = self.config
        g = grad_accum / count.clamp_min(1)
        scale_max = self.log_scales.exp().max(1).values
        grow = (g >= c.grad_threshold) & (count > 0)
        room = max(c.max_gaussians - self.num_gaussians, 0)
        if int(grow.sum()) > room:  # keep the strongest within the budget
            idx = torch.nonzero(grow).squeeze(1)
            grow = torch.zeros_like(grow)
            grow[idx[g[idx].argsort(descending=True)[:room]]] = True
        clone = grow & (scale_max <= c.percent_dense * self.extent)
        split = grow & ~clone
        n0 = self.num_gaussians
        new = {k: getattr(self, k)[clone] for k in self.per_gaussian + self.per_gaussian_buffers}
        if split.any():
            idx = torch.nonzero(split).squeeze(1).repeat(2)
            std = self.log_scales[idx].exp()
            # the generator lives on the CPU (seeded, device-independent): draw there, then move
            noise = torch.randn(std.shape, generator=generator).to(std.device) * std
            rot = _quat_to_rotmat(self.quats[idx])
            offset = (rot @ noise[:, :, None]).squeeze(-1)
            for k in self.per_gaussian + self.per_gaussian_buffers:
                v = getattr(self, k)[idx]
                if k in self.position_params:
                    v = v + offset.reshape((len(idx),) + (1,) * (v.ndim - 2) + (3,))
                elif k == "log_scales":
                    v = v - math.log(1.6)
                new[k] = torch.cat([new[k], v])
        self._append(optimizer, new)
        keep = torch.ones(self.num_gaussians, dtype=torch.bool, device=self.opacity_logits.device)
        keep[:n0][split] = False
        keep &= self.base_opacity() >= c.prune_opacity
        if prune_big:
            keep &= self.log_scales.exp().max(1).values <= 0.1 * self.extent
        pruned = int((~keep).sum())
        self._keep(optimizer, keep)
        return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": pruned, "count": self.num_gaussians}

    def _param_group(self, optimizer, key):
        for group in optimizer.param_groups:
            if group.get("name") == key:
                return group
        raise KeyError(key)

    def _replace(self, optimizer, key: str, value: torch.Tensor, state_fn) -> None:
        if key in self.per_gaussian_buffers:
            setattr(self, key, value)
            return
        old = getattr(self, key)
        new = nn.Parameter(value.contiguous())
        if optimizer is not None:
            group = self._param_group(optimizer, key)
            state = optimizer.state.pop(old, None)
            if state:
                for s in ("exp_avg", "exp_avg_sq"):
                    state[s] = state_fn(state[s])
                optimizer.state[new] = state
            group["params"][0] = new
        setattr(self, key, new)

    def _append(self, optimizer, new: dict[str, torch.Tensor]) -> None:
        n = next(iter(new.values())).shape[0]
        if n == 0:
            return
        for k, v in new.items():
            self._replace(optimizer, k, torch.cat([getattr(self, k).detach(), v]),
                          lambda s, v=v: torch.cat([s, torch.zeros_like(v)]))

    def _keep(self, optimizer, mask: torch.Tensor) -> None:
        if bool(mask.all()):
            return
        for k in self.per_gaussian + self.per_gaussian_buffers:
            self._replace(optimizer, k, getattr(self, k).detach()[mask], lambda s: s[mask])

    @torch.no_grad()
    def reset_opacity(self, optimizer, value: float = 0.01) -> None:
        """3DGS opacity reset: clamp opacities to at most ``value`` (and zero their Adam moments)."""
        v = torch.minimum(self.opacity_logits, inverse_sigmoid(torch.tensor(value)))
        self._replace(optimizer, "opacity_logits", v, torch.zeros_like)

    # -- checkpoints --------------------------------------------------------------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a state whose Gaussian count may differ from this expert's (resizes per-Gaussian tensors)."""
        for k in self.per_gaussian:
            if k in state_dict:
                setattr(self, k, nn.Parameter(torch.empty_like(state_dict[k])))
        for k in self.per_gaussian_buffers:
            if k in state_dict:
                self.register_buffer(k, torch.empty_like(state_dict[k]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    from ...render.reference import quat_to_rotmat

    return quat_to_rotmat(q)
