"""Pure-torch 3D Gaussian splatting: the same function as gsplat's CUDA kernels (v1.5.3), differentiable by autograd.

Steps (one pinhole camera, OpenCV frame, intrinsics fx, fy, cx, cy, image W x H):

1. Covariance:   Sigma = R S S^T R^T,  R = rotmat(q / |q|),  S = diag(exp(log_scales)).
2. To camera:    t = W_R mu + W_t,  Sigma_c = W_R Sigma W_R^T.
3. EWA:          Sigma_2d = J Sigma_c J^T + eps2d I with J = [[fx/z, 0, -fx x'/z^2], [0, fy/z, -fy y'/z^2]],
                 where x' = z clamp(x/z, -(cx/fx + 0.15 W/fx), (W-cx)/fx + 0.15 W/fx) (same for y'), and
                 mu_2d = (fx x/z + cx, fy y/z + cy).
                 Antialiased mode multiplies opacity by sqrt(det(Sigma_2d - eps2d I) / det(Sigma_2d)).
4. Culling:      z outside [near, far], det <= 0, opacity o < 1/255, or the box of half-size
                 r = ceil(min(3.33, sqrt(2 ln(255 o))) sqrt(diag Sigma_2d)) off-screen (or r <= radius_clip).
5. Per pixel p (centre (j + 0.5, i + 0.5)), Gaussians sorted by depth z, front to back:
                 sigma = 0.5 d^T Sigma_2d^-1 d with d = mu_2d - p,  alpha = min(0.999, o exp(-sigma)),
                 alpha skipped when < 1/255 (or sigma < 0), T_i = prod_{j<i} (1 - alpha_j),
                 stop (exclusively) at the first Gaussian after which T <= 1e-4,
                 C = sum_i alpha_i T_i c_i + T_final * background,  A = 1 - T_final = sum_i alpha_i T_i.

The image is cut into square tiles; every Gaussian is listed in the tiles its box touches (the box contains the
whole alpha >= 1/255 ellipse, so the tiling does not change the result). Tiles are processed in batches of
similar Gaussian count as dense (tiles, gaussians, pixels) tensors: T comes from a cumulative sum of log(1 - alpha)
over the depth-sorted Gaussians of each tile (cheaper to differentiate than a cumulative product) and the colours
are a batched matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
T_STOP = 1e-4
EXTEND = 3.33
# Elements (tiles x gaussians x pixels) per compositing batch: bounds the working memory (~16 MB per float32 array).
_BATCH_ELEMENTS = 1 << 22
# Gaussians per tile composited at once before checking whether the tile is opaque.
_DEPTH_BLOCK = 64


@dataclass
class Projection:
    """Gaussians projected into one camera; every tensor has N rows (culled ones included, flagged by ``valid``).

    means2d (N, 2) pixels · conics (N, 3) upper triangle of Sigma_2d^-1 (a, b, c) · depths (N,) camera z ·
    opacities (N,) activated (times the antialiasing compensation) · radii (N, 2) int box half-size (0 = culled) ·
    valid (N,) bool.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    opacities: torch.Tensor
    radii: torch.Tensor
    valid: torch.Tensor


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz quaternions (any norm) -> (N, 3, 3) rotation matrices."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def project(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
            viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int, *, eps2d: float, near: float,
            far: float, radius_clip: float, antialiased: bool) -> Projection:
    """Steps 1-4 of the module docstring for one camera.

    means (N, 3), quats (N, 4), scales (N, 3) linear, opacities (N,) in 0..1, viewmat (4, 4) world->camera,
    K (3, 3) pixels.
    """
    rot = quat_to_rotmat(quats)
    m = rot * scales[:, None, :]  # R S
    cov = m @ m.transpose(1, 2)
    w_r, w_t = viewmat[:3, :3], viewmat[:3, 3]
    mean_c = means @ w_r.T + w_t
    cov_c = w_r @ cov @ w_r.T
    x, y, z = mean_c.unbind(-1)
    in_depth = (z >= near) & (z <= far)
    # Culled Gaussians still get finite values (z := 1) so that no inf/nan reaches the backward pass.
    z = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    rz = 1.0 / z
    tx = z * torch.minimum(torch.maximum(x * rz, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y * rz, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], -1).reshape(-1, 2, 3)
    cov2d = jac @ cov_c @ jac.transpose(1, 2)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)

    a, b, c = cov2d[:, 0, 0], 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0]), cov2d[:, 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    ok_det = det > 0
    det = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)
    if antialiased:
        opacities = opacities * (det_orig / det).clamp_min(0.0).sqrt()

    with torch.no_grad():
        o = opacities.detach()
        visible = in_depth & ok_det & (o >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(o.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(EXTEND)
        rx = torch.ceil(extend * a.detach().clamp_min(0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp_min(0).sqrt())
        visible &= ~((rx <= radius_clip) & (ry <= radius_clip))
        mx, my = means2d.detach().unbind(-1)
        visible &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], -1).to(torch.int32) * visible[:, None]
    return Projection(means2d, conics, mean_c[:, 2], opacities, radii, visible)


def tile_box(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int, tile_size: int):
    """The tiles each splat's screen box covers, as gsplat's ``isect_tiles`` finds them: x in [x0, x1), y in [y0,
    y1) of a ceil(W / tile) x ceil(H / tile) grid (float tensors of whole numbers, clamped to the grid). means2d
    (N, 2), radii (N, 2) or (N,) half-sizes in pixels."""
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    rad = (radii if radii.ndim == 2 else radii[:, None]).to(means2d.dtype) / tile_size
    mean = means2d.detach() / tile_size
    lo, hi = torch.floor(mean - rad), torch.ceil(mean + rad)
    return lo[:, 0].clamp(0, tw), hi[:, 0].clamp(0, tw), lo[:, 1].clamp(0, th), hi[:, 1].clamp(0, th)


@torch.no_grad()
def tile_pairs(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int, tile_size: int) -> torch.Tensor:
    """How many (tile, splat) pairs ``tile_intersections`` (and gsplat) list for these splats (radii 0: culled). A
    0-d tensor, no host sync."""
    x0, x1, y0, y1 = tile_box(means2d.to(torch.float32), radii, width, height, tile_size)
    # where: gsplat leaves the means of culled splats unwritten (any value, NaN and inf included)
    live = (radii > 0).all(-1) if radii.ndim == 2 else radii > 0
    return torch.where(live, (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0), 0.0).sum()


@torch.no_grad()
def tile_intersections(proj: Projection, width: int, height: int, tile_size: int):
    """List (tile, gaussian) pairs, sorted by tile then depth.

    Returns (tile_ids (P,) int64, gauss_ids (P,) int64, counts (n_tiles,) int64), tiles numbered row-major over a
    ceil(H / tile) x ceil(W / tile) grid.
    """
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    ids = torch.nonzero(proj.valid).squeeze(1)
    ids = ids[torch.argsort(proj.depths.detach()[ids], stable=True)]
    x0, x1, y0, y1 = (v.long() for v in tile_box(proj.means2d.detach()[ids], proj.radii[ids], width, height,
                                                  tile_size))
    nx, ny = x1 - x0, y1 - y0
    per = (nx * ny).clamp_min(0)
    dev = ids.device
    gauss = torch.repeat_interleave(ids, per)
    owner = torch.repeat_interleave(torch.arange(len(ids), device=dev), per)
    start = torch.cumsum(per, 0) - per
    local = torch.arange(len(gauss), device=dev) - start[owner]
    tx = x0[owner] + local % nx[owner]
    ty = y0[owner] + local // nx[owner]
    tiles = ty * tw + tx
    order = torch.argsort(tiles, stable=True)  # stable: keeps depth order within a tile
    tiles, gauss = tiles[order], gauss[order]
    counts = torch.bincount(tiles, minlength=tw * th)
    return tiles, gauss, counts


def composite(proj: Projection, features: torch.Tensor, width: int, height: int, tile_size: int):
    """Step 5 for every pixel: front-to-back alpha compositing of ``features`` (N, F).

    Returns (image (H, W, F) = sum_i w_i f_i, alpha (H, W) = sum_i w_i) with w_i = alpha_i T_i (background not added).
    """
    dtype, device = features.dtype, features.device
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles, n_pix, n_feat = tw * th, tile_size * tile_size, features.shape[1]
    _, gauss, counts = tile_intersections(proj, width, height, tile_size)
    starts = torch.cumsum(counts, 0) - counts

    ar = torch.arange(tile_size, dtype=dtype, device=device)
    iy, ix = torch.meshgrid(ar, ar, indexing="ij")
    offsets = torch.stack([ix.reshape(-1), iy.reshape(-1)], -1) + 0.5  # (P, 2) pixel centres within a tile

    done_ids, done_vals = [], []
    # Batches of tiles with similar counts keep the padding of the dense (tiles, gaussians, pixels) blocks small.
    order = torch.argsort(counts, stable=True)
    busy = order[counts[order] > 0].tolist()
    counts_l = counts.tolist()
    i = 0
    while i < len(busy):
        j = i + 1
        while j < len(busy) and (j - i + 1) * min(counts_l[busy[j]], _DEPTH_BLOCK) * n_pix <= _BATCH_ELEMENTS:
            j += 1
        b_ids = torch.tensor(busy[i:j], device=device)
        i = j
        origin = torch.stack([b_ids % tw, b_ids // tw], -1).to(dtype) * tile_size  # (B, 2)
        pix = origin[:, None, :] + offsets[None]  # (B, P, 2)
        done_ids.append(b_ids)
        done_vals.append(_composite_tiles(proj, features, gauss, starts[b_ids], counts[b_ids], pix))

    full = torch.zeros(n_tiles, n_pix, n_feat + 1, dtype=dtype, device=device)
    if done_ids:
        full = full.index_put((torch.cat(done_ids),), torch.cat(done_vals))
    img = full.reshape(th, tw, tile_size, tile_size, n_feat + 1).permute(0, 2, 1, 3, 4)
    img = img.reshape(th * tile_size, tw * tile_size, n_feat + 1)[:height, :width]
    return img[..., :n_feat], img[..., n_feat]


def _composite_tiles(proj: Projection, features, gauss, starts, counts, pix):
    """Composite B tiles: ``gauss[starts[b] : starts[b] + counts[b]]`` are tile b's Gaussians front to back, ``pix``
    (B, P, 2) its pixel centres. Returns (B, P, F + 1): weighted features and alpha.

    The depth-sorted lists are walked in blocks of _DEPTH_BLOCK Gaussians carrying the transmittance T; a tile
    leaves the loop once every pixel has T <= T_STOP (nothing behind can contribute), which is what makes opaque
    scenes cheap.
    """
    device = features.device
    n_b, n_pix = pix.shape[:2]
    out = torch.zeros(n_b, n_pix, features.shape[1] + 1, dtype=features.dtype, device=device)
    trans = torch.ones(n_b, n_pix, dtype=features.dtype, device=device)
    active = torch.arange(n_b, device=device)
    for s in range(0, int(counts.max()), _DEPTH_BLOCK):
        active = active[counts[active] > s]
        if len(active) == 0:
            break
        slot = s + torch.arange(min(_DEPTH_BLOCK, int(counts[active].max()) - s), device=device)
        present = slot[None, :] < counts[active, None]  # (b, g)
        gid = gauss[torch.where(present, starts[active, None] + slot[None, :], 0)]  # padding masked below
        d = proj.means2d[gid][:, :, None, :] - pix[active][:, None, :, :]  # (b, g, P, 2)
        con = proj.conics[gid]  # (b, g, 3)
        dx, dy = d[..., 0], d[..., 1]
        sigma = 0.5 * (con[..., 0, None] * dx * dx + con[..., 2, None] * dy * dy) + con[..., 1, None] * dx * dy
        alpha = (proj.opacities[gid][..., None] * torch.exp(-sigma)).clamp_max(MAX_ALPHA)
        keep = present[..., None] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
        t0 = trans[active][:, None, :]
        t_incl = t0 * torch.exp(torch.cumsum(torch.log1p(-alpha), dim=1))  # T after each Gaussian
        t_excl = torch.cat([t0, t_incl[:, :-1]], dim=1)
        weights = alpha * t_excl * (t_incl.detach() > T_STOP)  # (b, g, P)
        contrib = torch.cat([torch.einsum("bgp,bgf->bpf", weights, features[gid]), weights.sum(1)[..., None]], -1)
        out = out.index_add(0, active, contrib)
        trans = trans.index_put((active,), t_incl[:, -1])
        active = active[(t_incl[:, -1].detach() > T_STOP).any(-1)]
    return out
