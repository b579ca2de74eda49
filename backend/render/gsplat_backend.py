"""The CUDA path: gsplat 1.5.3's kernels, composed like ``gsplat.rasterization`` (unpacked, one camera).

We call the stages (projection, SH, tile intersection, rasterization) ourselves instead of
``gsplat.rasterization`` so that the projected means are one (N, 2) tensor of the graph (``meta["means2d"]``,
which densification reads with ``retain_grad``) and so that colour, depth and extra channels go through one
rasterization call with the same weights. gsplat is imported lazily: CPU machines never need it.
"""

from __future__ import annotations

import functools
import math
import subprocess

import torch

from .reference import Projection, tile_pairs

TILE_CHOICES = (16, 32)
# Compositing cost of one tile-splat pair per 16 x 16 pixels, relative to the pair's sort and intersection. Fitted to
# the H100 frames of bench/render_gpu.py at 16 and 32 px (docs/bench/render.md, 2026-12-07): the ball (pairs
# 16 px / 32 px = 2.70) took 3.51 / 2.40 ms, i.e. a weight of 0.46; the world (pairs ratio 1.60) 1.6 / 2.2 ms, 0.67.
# 0.55 puts the switch at a pairs ratio of 2.06, clear of both.
RASTER_WEIGHT = 0.55


def choose_tile_size(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int) -> int:
    """The tile side of ``TILE_CHOICES`` whose estimated frame cost is least: cost(t) = pairs(t) * (1 +
    RASTER_WEIGHT * (t / 16)^2), pairs(t) = ``reference.tile_pairs``. Large splats favour big tiles (fewer pairs to
    sort), small ones small tiles (fewer pixels testing a splat that misses them). One host sync."""
    costs = [tile_pairs(means2d, radii, width, height, t) * (1.0 + RASTER_WEIGHT * (t / 16.0) ** 2)
             for t in TILE_CHOICES]
    return TILE_CHOICES[int(torch.stack(costs).argmin())]

PINNED_VERSION = "1.5.3"  # pyproject.toml's [gpu] extra; the kernels this module composes are that release's
INSTALL_HINT = "install it with `make gpu` or `pip install -e '.[gpu]'`"


@functools.cache
def status() -> tuple[bool, str]:
    """Whether gsplat's CUDA kernels can run in this process, and why (one line).

    Importing ``gsplat.cuda._backend`` builds the kernels on first use (a JIT build with nvcc, ~1.5 min on 16
    cores; ``TORCH_CUDA_ARCH_LIST`` limits it to the cards you have), or loads the build cached under
    ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``). Cached per process: the check runs once.
    """
    try:
        import gsplat
    except ImportError as exc:
        return False, f"gsplat is not installed ({exc}); {INSTALL_HINT}"
    version = getattr(gsplat, "__version__", "?")
    try:
        from gsplat.cuda._backend import _C
    except (ImportError, RuntimeError, OSError, subprocess.SubprocessError) as exc:  # what torch's JIT build raises
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return False, (f"gsplat {version} could not build its CUDA kernels ({first}); check that nvcc matches "
                       f"torch's CUDA ({torch.version.cuda}) and run `lw doctor --build` to see the build log")
    if _C is None:
        return False, (f"gsplat {version} found no CUDA toolkit (nvcc) to build its kernels; install the CUDA "
                       f"toolkit matching torch's CUDA {torch.version.cuda} or set CUDA_HOME")
    if version != PINNED_VERSION:
        return True, f"gsplat {version} (the backend is tested with {PINNED_VERSION})"
    return True, f"gsplat {version}"


def render(means, quats, scales, opacities, sh, sh_degree: int, extra, viewmat, K, campos, width: int, height: int,
           *, eps2d: float, near: float, far: float, radius_clip: float, antialiased: bool, tile_size: int,
           depth: bool = True):
    """Project, shade and composite on the GPU (viewmat (4, 4) world->camera, K (3, 3), campos (3,) camera centre).

    Returns (features (H, W, 3 + depth + C) = [rgb, z (if ``depth``), extra] weighted sums, alpha (H, W),
    Projection, tile size used). ``tile_size`` 0: chosen from the footprints (``choose_tile_size``).
    """
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
    means2d, radii, depths, conics = means2d[0], radii[0], depths[0], conics[0]
    if antialiased:
        opacities = opacities * comp[0]
    visible = (radii > 0).all(-1)
    colors = spherical_harmonics(sh_degree, means - campos, sh, masks=visible)
    colors = torch.clamp_min(colors + 0.5, 0.0)
    parts = [colors] + ([depths[:, None]] if depth else []) + ([extra] if extra is not None else [])
    features = torch.cat(parts, -1)

    if tile_size <= 0:
        tile_size = choose_tile_size(means2d, radii, width, height)
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, isect_ids, flatten_ids = isect_tiles(means2d[None], radii[None], depths[None], tile_size, tw, th)
    offsets = isect_offset_encode(isect_ids, 1, tw, th).reshape(1, th, tw)
    img, alpha = rasterize_to_pixels(means2d[None], conics[None], features[None], opacities[None], width, height,
                                     tile_size, offsets, flatten_ids)
    proj = Projection(means2d, conics, depths, opacities, radii, visible)
    return img[0], alpha[0, ..., 0], proj, tile_size


def project_fixed(means, quats, scales, viewmat, K, width: int, height: int, *, eps2d: float, near: float,
                  far: float, radius_clip: float, antialiased: bool, tile_size: int):
    """Projection and tile lists for ``rasterize.FixedGeometry`` (opacity 1 for the boxes: the widest any opacity
    needs). Returns (means2d, conics, radii, compensation or None, offsets, flatten_ids)."""
    from gsplat import fully_fused_projection, isect_offset_encode, isect_tiles

    ones = torch.ones(len(means), dtype=means.dtype, device=means.device)
    radii, means2d, depths, conics, comp = fully_fused_projection(
        means, None, quats, scales, viewmat[None], K[None], width, height, eps2d=eps2d, near_plane=near,
        far_plane=far, radius_clip=radius_clip, packed=False, calc_compensations=antialiased, opacities=ones)
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, tile_size, tw, th)
    offsets = isect_offset_encode(isect_ids, 1, tw, th).reshape(1, th, tw)
    return (means2d.detach(), conics.detach(), radii[0], comp[0] if antialiased else None, offsets, flatten_ids)


def composite_fixed(state, colors, opacities, width: int, height: int, tile_size: int):
    """``rasterize_to_pixels`` over a ``project_fixed`` state: (features (H, W, C), alpha (H, W))."""
    from gsplat import rasterize_to_pixels

    means2d, conics, _, _, offsets, flatten_ids = state
    img, alpha = rasterize_to_pixels(means2d, conics, colors[None], opacities[None], width, height, tile_size,
                                     offsets, flatten_ids)
    return img[0], alpha[0, ..., 0]
