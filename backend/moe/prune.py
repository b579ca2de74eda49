"""Gate-aware Gaussian pruning: remove the Gaussians whose expert never wins where they are seen.

Gate contribution of Gaussian i of expert k, over V views v (camera, frame) with pixel weights w_k^v(p):

    s_i = (1 / V) sum_v sum_p w_k^v(p) alpha_i^v(p) T_i^v(p)        (pixels; T is expert k's transmittance)

i.e. how many pixels per view Gaussian i paints into the blended image. It is read off autograd: splat a zero
probe channel e_i with the colour's weights, take L = sum_p w_k(p) E_k(p) with w detached; then
dL/de_i = sum_p w_k(p) alpha_i(p) T_i(p). A second probe with weight 1 gives the coverage
c_i = (1 / V) sum_v sum_p alpha_i T_i, and m_i = s_i / c_i is the Gaussian's mean pixel weight where it is seen
(used to bake a mixture into one cloud, ``mixture_bake``).

Pruning reads the peak contribution p_i = max_v sum_p w_k^v(p) alpha_i^v(p) T_i^v(p): a Gaussian is removed
when in no training view its expert's gate lets it paint ``threshold`` pixels or more, i.e. its expert never
wins where it is. (The mean s_i would also remove the Gaussians of dynamic experts that exist for a short time
only: averaged over every frame they look negligible. Measured on an 8-camera, 20-frame scene with densified
experts, pruning on s_i < 0.05 removed 83 % of the Gaussians and lost 5.2 dB on the held-out camera.) They
are removed from their expert, and their gates from a per-Gaussian router.

The paper's gate-aware score (``method="gate_gradient"``, MOEGS.md): the magnitude of the gradient of the router's
loss on the blended image with respect to the Gaussian's weight (its opacity logit o_i), averaged over views:

    q_i = (1 / V) sum_v  H W |dL_v / do_i|,     L_v = 0.8 L1 + 0.2 (1 - SSIM) of I_v = sum_k w_k I_k vs the truth

(H W: L is a mean over pixels, so q_i is the loss summed over the image). The gradient runs through the gated blend:
a Gaussian whose expert's weight is ~0 where it paints gets ~0, whatever its own opacity. Pruning removes
q_i < threshold * mean_j(q_j) (the scale of q follows the loss, so the threshold is relative).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..errors import InvalidInput, JobCancelled
from ..gaussians import Gaussians
from ..render.rasterize import RasterConfig
from .data import MultiViewVideo
from .losses import photometric_loss
from .mixture import Mode, blend, router_features, splat_experts
from .train_router import Mixture

METHODS = ("peak", "gate_gradient")


@dataclass
class PruneConfig:
    """``method`` "peak": remove p_i < threshold pixels (ours); "gate_gradient": remove q_i < threshold x the mean
    q (the paper's score; module docstring). ``fraction``: at least this fraction of all the mixture's Gaussians
    goes, the lowest scores first (the cut is raised to that quantile when the threshold removes fewer; 0: the
    threshold alone). Default: at least half and everything under 0.05 px; on the H100 ablation's generated scenes
    that lost 0.02-0.09 dB after a router fine-tune, 0.00 / -0.02 dB after ``run_mixture``'s default fine-tune of
    router and experts (docs/bench/moe_mixture.md)."""

    method: Literal["peak", "gate_gradient"] = "peak"
    threshold: float = 0.05
    fraction: float = 0.5
    max_views: int = 0  # views (training camera, frame) to accumulate over; 0: all

    def __post_init__(self):
        if self.method not in METHODS or self.threshold < 0:
            raise InvalidInput(f"pruning method must be one of {METHODS} with a threshold >= 0, got "
                               f"{self.method!r}, {self.threshold}")
        if not 0.0 <= self.fraction < 1.0:
            raise InvalidInput(f"pruning fraction must be in [0, 1) (the share of Gaussians removed at least), got "
                               f"{self.fraction}")


@dataclass
class GateScores:
    """Per expert: contribution s (N_k,) and coverage c (N_k,) in pixels per view, and peak contribution p (N_k,)
    in pixels in the best view (module docstring)."""

    contribution: list[torch.Tensor]
    coverage: list[torch.Tensor]
    peak: list[torch.Tensor]

    def select(self, keeps: list[torch.Tensor]) -> GateScores:
        """The scores of the kept Gaussians (``keeps``: a mask per expert)."""
        return GateScores(*([v[k] for v, k in zip(values, keeps)]
                            for values in (self.contribution, self.coverage, self.peak)))

    def mean_weight(self) -> list[torch.Tensor]:
        """m_i = s_i / c_i, the mean pixel weight of each Gaussian's expert where the Gaussian is seen (0 if unseen)."""
        return [torch.where(c > 0, s / c.clamp_min(1e-12), torch.zeros_like(s))
                for s, c in zip(self.contribution, self.coverage)]


def training_views(video: MultiViewVideo, max_views: int = 0, seed: int = 0) -> list[tuple[int, int]]:
    """(camera, frame) pairs of the training cameras; an evenly strided subset of ``max_views`` when > 0."""
    views = [(c, f) for c in video.train for f in range(video.num_frames)]
    if max_views and len(views) > max_views:
        views = [views[i] for i in np.linspace(0, len(views) - 1, max_views).round().astype(int)]
    return views


Progress = Callable[[float, str], None]


def each_view(views: list[tuple[int, int]], what: str, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> Iterator[tuple[int, int]]:
    """``views`` one by one, with ``progress`` after each (every view is a mixture render and its backward pass: a
    CPU run has hundreds of them, about a second each; at most 100 reports) and ``JobCancelled`` as soon as
    ``cancel`` is set."""
    every = max(1, -(-len(views) // 100))  # ceil: at most 100 reports
    for i, view in enumerate(views):
        if cancel is not None and cancel.is_set():
            raise JobCancelled(f"{what} cancelled at view {i} of {len(views)}")
        yield view
        if progress is not None and ((i + 1) % every == 0 or i + 1 == len(views)):
            progress((i + 1) / len(views), f"{what}: view {i + 1}/{len(views)}")


def gate_scores(mixture: Mixture, video: MultiViewVideo, raster: RasterConfig | None = None,
                mode: Mode = "single", max_views: int = 0, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> GateScores:
    """Accumulate s_i, c_i and p_i over the training views (module docstring)."""
    raster = raster or RasterConfig()
    views = training_views(video, max_views)
    sums = [torch.zeros(e.num_gaussians, 2, device=e.means.device) for e in mixture.experts]
    peaks = [torch.zeros(e.num_gaussians, device=e.means.device) for e in mixture.experts]
    router = mixture.router
    c = router.splatted_channels
    for cam, frame in each_view(views, "gate scores", progress, cancel):
        t = float(video.times[frame])
        with torch.no_grad():
            gs = mixture.gaussians_at(t)
            feats = router_features(gs, router, t) or [torch.zeros(len(g), 0, device=g.means.device) for g in gs]
        probes = [torch.zeros(len(g), 2, device=g.means.device, requires_grad=True) for g in gs]
        images = splat_experts(gs, video.cameras[cam], raster, [torch.cat([f, p], 1) for f, p in zip(feats, probes)],
                               mode)
        with torch.no_grad():
            weights = blend(images, router, video.cameras[cam], t).weights
        loss = (weights * images.extras[..., c]).sum() + images.extras[..., c + 1].sum()
        loss.backward()
        for acc, peak, p in zip(sums, peaks, probes):
            acc += p.grad
            torch.maximum(peak, p.grad[:, 0], out=peak)
    n = max(len(views), 1)
    return GateScores([s[:, 0] / n for s in sums], [s[:, 1] / n for s in sums], peaks)


def gate_gradient_scores(mixture: Mixture, video: MultiViewVideo, raster: RasterConfig | None = None,
                         mode: Mode = "single", max_views: int = 0, ssim_weight: float = 0.2,
                         progress: Progress | None = None, cancel: threading.Event | None = None) -> list[torch.Tensor]:
    """The paper's score q_i (N_k,) per expert (module docstring), over the training views with their truth."""
    raster = raster or RasterConfig()
    views = training_views(video, max_views)
    sums = [torch.zeros(e.num_gaussians, device=e.means.device) for e in mixture.experts]
    for cam, frame in each_view(views, "gate-gradient scores", progress, cancel):
        t = float(video.times[frame])
        with torch.no_grad():
            gs = mixture.gaussians_at(t)
            feats = router_features(gs, mixture.router, t)
        probes = [torch.zeros(len(g), device=g.means.device, requires_grad=True) for g in gs]
        moved = [Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits + p, g.sh) for g, p in zip(gs, probes)]
        camera = video.cameras[cam]
        out = blend(splat_experts(moved, camera, raster, feats, mode), mixture.router, camera, t)
        truth = torch.from_numpy(video.frame(cam, frame)).to(out.color.device)
        photometric_loss(out.color, truth, ssim_weight).backward()
        for acc, p in zip(sums, probes):
            acc += p.grad.abs() * (camera.width * camera.height)
    return [s / max(len(views), 1) for s in sums]


def prune_scores(mixture: Mixture, video: MultiViewVideo, config: PruneConfig, raster: RasterConfig | None = None,
                 mode: Mode = "single", scores: GateScores | None = None, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> list[torch.Tensor]:
    """The per-expert values ``prune_mixture`` compares with ``config.threshold``: p_i (pixels) for "peak" (from
    ``scores`` when given), q_i / mean(q) for "gate_gradient"."""
    if config.method == "peak":
        return (scores or gate_scores(mixture, video, raster, mode, config.max_views, progress, cancel)).peak
    q = gate_gradient_scores(mixture, video, raster, mode, config.max_views, progress=progress, cancel=cancel)
    mean = torch.cat(q).mean().clamp_min(1e-30)
    return [v / mean for v in q]


def quantile_cut(values: list[torch.Tensor], fraction: float) -> float:
    """The value under which ``fraction`` of all Gaussians lie (``values``: one score tensor per expert; removing
    ``s < cut`` then removes round(fraction N) of them, or more on ties); -inf for fraction 0."""
    flat = torch.cat([v.flatten() for v in values]).float()
    if fraction <= 0 or flat.numel() == 0:
        return float("-inf")
    kth = torch.kthvalue(flat.cpu(), max(1, round(fraction * flat.numel()))).values
    return float(torch.nextafter(kth, torch.tensor(float("inf"))))  # the next float32 up: the k-th goes too


def prune_cut(values: list[torch.Tensor], config: PruneConfig) -> float:
    """The cut ``prune_mixture`` applies to ``prune_scores``' values: ``config.threshold``, raised to the
    ``config.fraction`` quantile when the threshold alone would remove fewer."""
    return max(float(config.threshold), quantile_cut(values, config.fraction))


@torch.no_grad()
def prune_mixture(mixture: Mixture, values: list[torch.Tensor], threshold: float) -> tuple[dict, list[torch.Tensor]]:
    """Remove the Gaussians whose value (``prune_scores``, one (N_k,) tensor per expert) is < ``threshold`` from their
    experts (and per-Gaussian router parameters). Returns ({"before", "after", "removed": {expert: count}}, the kept
    masks (N_k,) per expert)."""
    stats, keeps = {"before": mixture.num_gaussians(), "removed": {}}, []
    for k, (expert, s) in enumerate(zip(mixture.experts, values)):
        keep = s >= threshold
        keeps.append(keep)
        stats["removed"][mixture.names[k]] = int((~keep).sum())
        expert._keep(None, keep)
        mixture.router.keep(k, keep)
    stats["after"] = mixture.num_gaussians()
    return stats, keeps
