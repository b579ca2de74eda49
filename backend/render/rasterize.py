"""``rasterize``: the one differentiable Gaussian rasterizer of the backend.

CUDA tensors go to gsplat (``gsplat_backend``), CPU tensors to the pure-torch reference (``reference``); both
compute the same function (the maths is in ``reference``'s docstring) and ``bench/render_gpu.py`` checks that.
On CUDA without a working gsplat (not installed, or its kernels cannot be built) ``resolve_backend`` falls back
to the reference on the GPU with one warning per process, so a job never stops on a missing renderer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from ..errors import InvalidInput
from ..gaussians import Gaussians
from . import reference
from .cameras import Camera
from .sh import sh_to_color


@dataclass(frozen=True)
class RasterConfig:
    """How to rasterize.

    sh_degree: SH degree to evaluate (None: all the Gaussians have). background: RGB behind the splats.
    eps2d: screen-space low-pass added to the 2D covariance (pixels^2). antialiased: gsplat's "antialiased"
    mode (opacity times sqrt(det Sigma_2d / det(Sigma_2d + eps2d I)), Mip-Splatting's compensation).
    radius_clip: Gaussians whose screen box half-size is <= this (pixels) are skipped. depth: composite the
    expected depth too (one more channel per splat and pixel). tile_size: pixels per tile side; ``AUTO_TILE``
    (0) picks it from the splats' screen footprints (``gsplat_backend.choose_tile_size``, about 1 ms at 1M
    splats on an H100) when gsplat renders without an autograd graph, and 16 otherwise; the render job picks
    once, on its first frame, and keeps that tile (``meta["tile_size"]``). backend: "auto" (gsplat on CUDA, reference on CPU and on
    CUDA without gsplat: ``resolve_backend``), or force "reference" / "gsplat".
    Near and far planes come from the camera.
    """

    sh_degree: int | None = None
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    eps2d: float = 0.3
    antialiased: bool = False
    radius_clip: float = 0.0
    tile_size: int = 16
    backend: Literal["auto", "reference", "gsplat"] = "auto"
    depth: bool = True  # False: no depth channel is composited (RenderOutput.depth is None; a frame for display)


@dataclass
class RenderOutput:
    """One rendered view.

    color (H, W, 3) = sum_i w_i c_i + (1 - alpha) background · alpha (H, W) = sum_i w_i · depth (H, W) expected
    camera z = sum_i w_i z_i / alpha (0 where nothing was hit; None with ``RasterConfig(depth=False)``) ·
    extra (H, W, C) = sum_i w_i e_i or None ·
    meta: "means2d" (N, 2) projected means (a tensor of the graph: ``retain_grad()`` it before backward for
    densification), "radii" (N,) int32 largest screen-box half-size in pixels (0 = culled), "visible" (N,) bool,
    "depths" (N,) camera z, "backend" ("gsplat" | "reference").
    """

    color: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor | None
    extra: torch.Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)


def _check_inputs(gaussians: Gaussians, camera: Camera, extra, sh_degree: int | None) -> int:
    try:
        gaussians.validate()
    except ValueError as exc:
        raise InvalidInput(f"cannot rasterize: {exc}") from exc
    if not isinstance(gaussians.means, torch.Tensor):
        raise InvalidInput("rasterize needs torch tensors: call gaussians.to_torch(device) first")
    if camera.width <= 0 or camera.height <= 0:
        raise InvalidInput(f"camera image size must be positive, got {camera.width}x{camera.height}")
    if extra is not None and (extra.ndim != 2 or extra.shape[0] != len(gaussians)):
        raise InvalidInput(f"extra must be (N, C) with N = {len(gaussians)}, got {tuple(extra.shape)}")
    have = gaussians.sh_degree
    degree = have if sh_degree is None else sh_degree
    if not 0 <= degree <= have:
        raise InvalidInput(f"SH degree {degree} requested but the Gaussians have degree {have}")
    return degree


AUTO_TILE = 0
_warned: set[str] = set()


def resolve_backend(requested: str, device: torch.device) -> str:
    """The renderer that runs for ``requested`` ("auto" | "reference" | "gsplat") on ``device``.

    "auto": gsplat on CUDA when ``gsplat_backend.status()`` says its kernels run, else the reference (on CUDA
    with one ``RuntimeWarning`` per process saying why and how to install gsplat). "gsplat" on a machine where
    it cannot run raises ``InvalidInput`` with the reason.
    """
    from . import gsplat_backend

    device = torch.device(device)
    if requested == "reference" or (requested == "auto" and device.type != "cuda"):
        return "reference"
    if requested not in ("auto", "gsplat"):
        raise InvalidInput(f"unknown rasterizer backend {requested!r}; choose auto, reference or gsplat")
    if device.type != "cuda":
        raise InvalidInput("the gsplat backend needs CUDA tensors; use backend='reference' on CPU")
    ok, why = gsplat_backend.status()
    if ok:
        return "gsplat"
    if requested == "gsplat":
        raise InvalidInput(f"rasterizer backend 'gsplat' cannot run: {why}")
    if why not in _warned:
        _warned.add(why)
        warnings.warn(f"LivingWorld renders with the torch reference on CUDA (slower than gsplat): {why}",
                      RuntimeWarning, stacklevel=3)
    return "reference"


def _small_to(values, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host array on ``device``. To CUDA through pinned memory without blocking: a copy from pageable
    memory makes the host wait for every kernel queued before it (four such waits per render, every training
    step)."""
    t = torch.as_tensor(values, dtype=dtype)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _needs_graph(gaussians: Gaussians, extra) -> bool:
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in (
        gaussians.means, gaussians.quats, gaussians.log_scales, gaussians.opacity_logits, gaussians.sh, extra))


def rasterize(gaussians: Gaussians, camera: Camera, config: RasterConfig = RasterConfig(),
              extra: torch.Tensor | None = None) -> RenderOutput:
    """Render ``gaussians`` (raw parameters, torch, one device) from ``camera``.

    ``extra`` (N, C) is splatted with the colour's weights (MoE-GS routing weights, features). Differentiable
    with respect to means, quats, log_scales, opacity_logits, sh and extra.
    """
    degree = _check_inputs(gaussians, camera, extra, config.sh_degree)
    means = gaussians.means
    dtype, device = means.dtype, means.device
    backend = resolve_backend(config.backend, device)
    if backend == "gsplat" and dtype != torch.float32:
        raise InvalidInput(f"gsplat renders float32 Gaussians, got {dtype}; convert them or use backend='reference'")
    viewmat = _small_to(camera.world_to_cam, dtype, device)
    K = _small_to(camera.K, dtype, device)
    campos = _small_to(camera.center, dtype, device)
    w, h = int(camera.width), int(camera.height)
    scales = gaussians.log_scales.exp()
    opacities = gaussians.opacity_logits.sigmoid()
    opts = {"eps2d": config.eps2d, "near": float(camera.near), "far": float(camera.far),
            "radius_clip": config.radius_clip, "antialiased": config.antialiased}
    if extra is not None:
        extra = extra.to(dtype)

    tile = config.tile_size if config.tile_size > 0 else 16
    if backend == "gsplat":
        from . import gsplat_backend

        if config.tile_size <= 0 and not (torch.is_grad_enabled() and _needs_graph(gaussians, extra)):
            tile = AUTO_TILE  # chosen by gsplat_backend.render once the footprints are known
        img, alpha, proj, tile = gsplat_backend.render(means, gaussians.quats, scales, opacities, gaussians.sh,
                                                       degree, extra, viewmat, K, campos, w, h, tile_size=tile,
                                                       depth=config.depth, **opts)
    else:
        proj = reference.project(means, gaussians.quats, scales, opacities, viewmat, K, w, h, **opts)
        colors = sh_to_color(degree, means - campos, gaussians.sh)
        parts = [colors] + ([proj.depths[:, None]] if config.depth else []) + ([extra] if extra is not None else [])
        img, alpha = reference.composite(proj, torch.cat(parts, -1), w, h, tile)

    bg = _small_to(config.background, dtype, device)
    color = img[..., :3] + (1.0 - alpha)[..., None] * bg
    depth = img[..., 3] / alpha.clamp_min(1e-10) if config.depth else None
    first_extra = 4 if config.depth else 3
    meta = {"means2d": proj.means2d, "radii": proj.radii.max(-1).values.to(torch.int32), "visible": proj.valid,
            "depths": proj.depths, "backend": backend, "tile_size": tile}
    return RenderOutput(color, alpha, depth, img[..., first_extra:] if extra is not None else None, meta)


class FixedGeometry:
    """Gaussians projected and sorted into tiles once, then rendered again and again with new colours and
    opacities (their positions, rotations and scales stay put: the expansion's brief optimisation of new
    Gaussians' colour and opacity).

    The boxes are those of opacity 1 (the widest: extent 3.33 sigma), so every pixel any opacity reaches is in a
    listed tile, and the per-pixel test alpha >= 1/255 skips the rest: ``render(colors, opacities)`` is
    ``rasterize`` of the same Gaussians with those colours and opacities (background black), without a
    projection, a sort or gsplat's host-side intersection count per call. Differentiable w.r.t. colours (N, 3)
    and opacities (N,) in 0..1.
    """

    def __init__(self, gaussians: Gaussians, camera: Camera, config: RasterConfig = RasterConfig()):
        _check_inputs(gaussians, camera, None, 0)
        dtype, device = gaussians.means.dtype, gaussians.means.device
        self.backend = resolve_backend(config.backend, device)
        self.width, self.height = int(camera.width), int(camera.height)
        self.tile_size = config.tile_size if config.tile_size > 0 else 16  # trained through: not chosen per view
        viewmat = _small_to(camera.world_to_cam, dtype, device)
        K = _small_to(camera.K, dtype, device)
        means, quats = gaussians.means.detach(), gaussians.quats.detach()
        scales = gaussians.log_scales.detach().exp()
        opts = {"eps2d": config.eps2d, "near": float(camera.near), "far": float(camera.far),
                "radius_clip": config.radius_clip, "antialiased": config.antialiased}
        if self.backend == "gsplat":
            from . import gsplat_backend

            self._state = gsplat_backend.project_fixed(means, quats, scales, viewmat, K, self.width, self.height,
                                                       tile_size=self.tile_size, **opts)
            self.radii, self._comp = self._state[2], self._state[3]
        else:
            ones = torch.ones(len(means), dtype=dtype, device=device)
            self._proj = reference.project(means, quats, scales, ones, viewmat, K, self.width, self.height, **opts)
            self.radii = self._proj.radii
            self._comp = self._proj.opacities if config.antialiased else None

    def render(self, colors: torch.Tensor, opacities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(color (H, W, 3), alpha (H, W)) of the Gaussians with ``colors`` (N, 3) and ``opacities`` (N,)."""
        if self._comp is not None:
            opacities = opacities * self._comp
        if self.backend == "gsplat":
            from . import gsplat_backend

            return gsplat_backend.composite_fixed(self._state, colors, opacities, self.width, self.height,
                                                  self.tile_size)
        return reference.composite(replace(self._proj, opacities=opacities), colors, self.width, self.height,
                                   self.tile_size)
