"""Rendering a mixture of experts: every expert's image and splatted gate, blended by the router's pixel weights.

Two ways to get the K expert images (colour with background, alpha, splatted extra channels):

- ``multipass``: one ``rasterize`` call per expert (K projections, K sorts, K compositing passes).
- ``single``: all experts' Gaussians (each at time t) in ONE pass: one projection and one shading of the union,
  one sort of the (expert, tile, depth) keys, one compositing launch. A Gaussian contributes only to its own
  expert's channels AND only its own expert's Gaussians attenuate them: expert k's image is

      I_k(p) = sum_{i in k} alpha_i c_i prod_{j in k, j before i} (1 - alpha_j)  +  T_k(p) background,

  exactly what expert k's own pass computes. A plain one-pass rasterization of the union with colours masked
  per expert would NOT be this: its transmittance is shared, so expert j's Gaussians in front of expert k's
  would darken I_k (``bench/moe_mixture_single_pass.py`` measures how far that is off). Keeping one
  transmittance per expert is what the sort key does: the lists of (expert, tile) are composited as separate
  "virtual tiles", which is how gsplat renders a batch of images in one launch (its intersection key is
  (image, tile, depth)). On CPU the virtual tiles go through the torch reference compositor; on CUDA through
  gsplat's ``rasterize_to_pixels`` with the K experts as K images of the same projected union (opacity and
  tile lists masked per image). The result matches ``multipass`` up to float rounding; the tests check it.

The blend (``router``): I(p) = sum_k w_k(p) I_k(p) with w = ``Router.pixel_weights`` of the channels each
expert's Gaussians splatted (``Router.splat_features``: its gate, or the volume-aware router's features), the
camera's pixel rays and the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..errors import InvalidInput
from ..gaussians import Gaussians
from ..render import reference
from ..render.cameras import Camera
from ..render.rasterize import RasterConfig, _check_inputs, rasterize, resolve_backend
from ..render.sh import sh_to_color
from .router import Router

Mode = Literal["single", "multipass"]


@dataclass
class ExpertImages:
    """K experts rendered from one camera: colors (K, H, W, 3) with background · alphas (K, H, W) ·
    extras (K, H, W, C) splatted extra channels (None when none were given)."""

    colors: torch.Tensor
    alphas: torch.Tensor
    extras: torch.Tensor | None


@dataclass
class MixtureOutput:
    """color (H, W, 3) blended image · weights (K, H, W) pixel weights (sum 1 over K) · experts: the K images."""

    color: torch.Tensor
    weights: torch.Tensor
    experts: ExpertImages


def splat_experts(gaussians: list[Gaussians], camera: Camera, raster: RasterConfig | None = None,
                  extras: list[torch.Tensor] | None = None, mode: Mode = "single") -> ExpertImages:
    """Render each expert's Gaussians (``gaussians[k]``, torch, one device) and splat ``extras[k]`` (N_k, C).

    mode "single": one pass over the union with one transmittance per expert (module docstring);
    "multipass": one ``rasterize`` call per expert. Both give the same images.
    """
    raster = raster or RasterConfig()
    if not gaussians:
        raise InvalidInput("a mixture needs at least one expert")
    if extras is not None and len(extras) != len(gaussians):
        raise InvalidInput(f"{len(extras)} extra tensors for {len(gaussians)} experts")
    if mode == "multipass":
        outs = [rasterize(g, camera, raster, None if extras is None else extras[k]) for k, g in enumerate(gaussians)]
        return ExpertImages(torch.stack([o.color for o in outs]), torch.stack([o.alpha for o in outs]),
                            None if extras is None else torch.stack([o.extra for o in outs]))
    if mode != "single":
        raise InvalidInput(f"mixture render mode must be 'single' or 'multipass', got {mode!r}")
    union = Gaussians.concatenate(gaussians)
    extra = None if extras is None else torch.cat(extras).to(union.means.dtype)
    degree = _check_inputs(union, camera, extra, raster.sh_degree)
    means = union.means
    dtype, device = means.dtype, means.device
    num = len(gaussians)
    expert_id = torch.cat([torch.full((len(g),), k, dtype=torch.long, device=device) for k, g in enumerate(gaussians)])
    viewmat = torch.as_tensor(camera.world_to_cam, dtype=dtype, device=device)
    K = torch.as_tensor(camera.K, dtype=dtype, device=device)
    campos = torch.as_tensor(camera.center, dtype=dtype, device=device)
    w, h = int(camera.width), int(camera.height)
    scales, opacities = union.log_scales.exp(), union.opacity_logits.sigmoid()
    opts = {"eps2d": raster.eps2d, "near": float(camera.near), "far": float(camera.far),
            "radius_clip": raster.radius_clip, "antialiased": raster.antialiased}
    backend = resolve_backend(raster.backend, device)  # gsplat on CUDA when it runs, else the reference
    tile = raster.tile_size if raster.tile_size > 0 else 16  # K images from one projection: not chosen per view
    if backend == "gsplat":
        img, alpha = _single_pass_gsplat(means, union.quats, scales, opacities, union.sh, degree, extra, expert_id,
                                         num, viewmat, K, campos, w, h, tile, **opts)
    else:
        proj = reference.project(means, union.quats, scales, opacities, viewmat, K, w, h, **opts)
        colors = sh_to_color(degree, means - campos, union.sh)
        feats = colors if extra is None else torch.cat([colors, extra], -1)
        img, alpha = composite_by_expert(proj, feats, expert_id, num, w, h, tile)
    bg = torch.as_tensor(raster.background, dtype=dtype, device=device)
    color = img[..., :3] + (1.0 - alpha)[..., None] * bg
    return ExpertImages(color, alpha, None if extra is None else img[..., 3:])


def composite_by_expert(proj: reference.Projection, features: torch.Tensor, expert_id: torch.Tensor,
                        num_experts: int, width: int, height: int, tile_size: int):
    """Front-to-back compositing of the union with one transmittance per expert (torch, differentiable).

    proj: the union's projection (N rows) · features (N, F) · expert_id (N,) int64 in [0, K).
    Returns (image (K, H, W, F) = per expert sum_i alpha_i T_i^(k) f_i, alpha (K, H, W)).

    The (tile, gaussian) pairs of ``reference.tile_intersections`` (sorted by tile, then depth) are re-keyed
    by expert * n_tiles + tile (stable, so depth order holds inside a key): each key is a "virtual tile"
    composited by the reference's own tile routine, batched with the others by list length as in
    ``reference.composite``.
    """
    dtype, device = features.dtype, features.device
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles, n_pix, n_feat = tw * th, tile_size * tile_size, features.shape[1]
    tiles, gauss, _ = reference.tile_intersections(proj, width, height, tile_size)
    key = expert_id[gauss] * n_tiles + tiles
    order = torch.argsort(key, stable=True)
    key, gauss = key[order], gauss[order]
    counts = torch.bincount(key, minlength=num_experts * n_tiles)
    starts = torch.cumsum(counts, 0) - counts

    ar = torch.arange(tile_size, dtype=dtype, device=device)
    iy, ix = torch.meshgrid(ar, ar, indexing="ij")
    offsets = torch.stack([ix.reshape(-1), iy.reshape(-1)], -1) + 0.5
    done_ids, done_vals = [], []
    order = torch.argsort(counts, stable=True)
    busy = order[counts[order] > 0].tolist()
    counts_l = counts.tolist()
    budget = reference._BATCH_ELEMENTS
    i = 0
    while i < len(busy):
        j = i + 1
        while j < len(busy) and (j - i + 1) * min(counts_l[busy[j]], reference._DEPTH_BLOCK) * n_pix <= budget:
            j += 1
        b_ids = torch.tensor(busy[i:j], device=device)
        i = j
        tile = b_ids % n_tiles
        origin = torch.stack([tile % tw, tile // tw], -1).to(dtype) * tile_size
        done_ids.append(b_ids)
        done_vals.append(reference._composite_tiles(proj, features, gauss, starts[b_ids], counts[b_ids],
                                                    origin[:, None, :] + offsets[None]))
    full = torch.zeros(num_experts * n_tiles, n_pix, n_feat + 1, dtype=dtype, device=device)
    if done_ids:
        full = full.index_put((torch.cat(done_ids),), torch.cat(done_vals))
    img = full.reshape(num_experts, th, tw, tile_size, tile_size, n_feat + 1).permute(0, 1, 3, 2, 4, 5)
    img = img.reshape(num_experts, th * tile_size, tw * tile_size, n_feat + 1)[:, :height, :width]
    return img[..., :n_feat], img[..., n_feat]


def _single_pass_gsplat(means, quats, scales, opacities, sh, degree, extra, expert_id, num, viewmat, K, campos,
                        width, height, tile_size, *, eps2d, near, far, radius_clip, antialiased):
    """The CUDA single pass: project and shade the union once, then composite it as K images in one
    ``rasterize_to_pixels`` launch; image k sees only expert k's Gaussians (radii and opacities masked), so
    each image keeps its own transmittance. Returns (image (K, H, W, F), alpha (K, H, W))."""
    from gsplat import (
        fully_fused_projection,
        isect_offset_encode,
        isect_tiles,
        rasterize_to_pixels,
        spherical_harmonics,
    )

    radii, means2d, depths, conics, comp = fully_fused_projection(
        means, None, quats, scales, viewmat[None], K[None], width, height, eps2d=eps2d, near_plane=near,
        far_plane=far, radius_clip=radius_clip, packed=False, calc_compensations=antialiased, opacities=opacities)
    if antialiased:
        opacities = opacities * comp[0]
    visible = (radii[0] > 0).all(-1)
    colors = torch.clamp_min(spherical_harmonics(degree, means - campos, sh, masks=visible) + 0.5, 0.0)
    feats = colors if extra is None else torch.cat([colors, extra], -1)
    own = expert_id[None, :] == torch.arange(num, device=means.device)[:, None]  # (K, N)
    radii_k = radii.expand(num, -1, -1) * own[..., None]
    means2d_k = means2d.expand(num, -1, -1).contiguous()
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, isect_ids, flatten_ids = isect_tiles(means2d_k, radii_k.contiguous(), depths.expand(num, -1).contiguous(),
                                            tile_size, tw, th)
    offsets = isect_offset_encode(isect_ids, num, tw, th)
    img, alpha = rasterize_to_pixels(means2d_k, conics.expand(num, -1, -1).contiguous(),
                                     feats[None].expand(num, -1, -1).contiguous(),
                                     (opacities[None] * own).contiguous(), width, height, tile_size, offsets,
                                     flatten_ids)
    return img, alpha[..., 0]


def blend(images: ExpertImages, router: Router, camera: Camera, t: float) -> MixtureOutput:
    """I(p) = sum_k w_k(p) I_k(p), w = ``router.pixel_weights`` of the router's splatted channels (the first
    ``router.splatted_channels`` of ``images.extras``; other channels may follow them) from ``camera`` at time t."""
    c = router.splatted_channels
    weights = router.pixel_weights(images.extras[..., :c] if c else None, camera, t, tuple(images.alphas.shape))
    return MixtureOutput((weights[..., None] * images.colors).sum(0), weights, images)


def router_features(gaussians: list[Gaussians], router: Router, t: float) -> list[torch.Tensor] | None:
    """What each expert's Gaussians splat for ``router`` at time t ((N_k, C) each), or None when it splats nothing."""
    feats = [router.splat_features(k, g.means, t) for k, g in enumerate(gaussians)]
    return None if feats[0] is None else feats


def render_mixture(gaussians: list[Gaussians], router: Router, camera: Camera, t: float,
                   raster: RasterConfig | None = None, mode: Mode = "single") -> MixtureOutput:
    """Render the mixture of the experts whose Gaussians at time t are ``gaussians`` (list of K) from ``camera``."""
    raster = raster or RasterConfig()
    images = splat_experts(gaussians, camera, raster, router_features(gaussians, router, t), mode)
    return blend(images, router, camera, t)


@torch.no_grad()
def bake_mixture(experts: list, mean_weights: list[torch.Tensor], out, times, fps: float = 30.0,
                 coordinate_frame: str = "blender_z_up_m", progress=None, replace: bool = False):
    """Bake a mixture into ONE ``.lw4d`` cloud: the union of the experts' Gaussians at each time, the opacity of
    Gaussian i of expert k scaled by m_i, its expert's mean pixel weight where it is seen
    (``prune.GateScores.mean_weight``): a_i' = m_i a_i(t). Blending per pixel cannot be stored in one cloud;
    this is its time-independent per-Gaussian approximation. Every Gaussian whose position, rotation, scale or
    opacity changes over ``times`` is dynamic. ``replace``: an earlier sequence at ``out`` may be replaced
    (``SequenceWriter``). Returns the sequence path."""
    from ..io.lw4d import SequenceWriter

    def decoded(t):
        gs = Gaussians.concatenate([e.gaussians_at(float(t)) for e in experts])
        scale = torch.cat(mean_weights).to(gs.means.device)
        return gs, {"position": gs.means, "rotation": gs.unit_quats(), "scale": gs.log_scales.exp(),
                    "opacity": gs.opacity_logits.sigmoid() * scale}

    def numpy(d):
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in d.items()}

    first, ref = decoded(times[0])
    ref = numpy(ref)
    moved = np.zeros(len(first), bool)
    for t in times[1:]:
        cur = numpy(decoded(t)[1])
        for k, v in cur.items():
            moved |= (np.abs(v - ref[k]) > 1e-6 * np.maximum(1.0, np.abs(ref[k]))).reshape(len(v), -1).any(1)
    dynamic = np.nonzero(moved)[0].astype(np.int64)
    base = Gaussians(means=ref["position"], quats=ref["rotation"], log_scales=np.log(np.maximum(ref["scale"], 1e-30)),
                     opacity_logits=np.log(np.clip(ref["opacity"], 1e-6, 1 - 1e-6) / np.clip(1 - ref["opacity"], 1e-6, 1)),
                     sh=first.sh.detach().cpu().numpy().astype(np.float32))
    channels = ("position", "rotation", "scale", "opacity")
    with SequenceWriter(out, base, dynamic, len(times), channels=channels, fps=fps, loop=False,
                        coordinate_frame=coordinate_frame, replace=replace) as w:
        for i, t in enumerate(times):
            cur = numpy(decoded(t)[1])
            w.append(**{k: cur[k][dynamic] for k in channels})
            if progress is not None:
                progress((i + 1) / len(times), f"baked frame {i + 1}/{len(times)}")
    return out
