"""Multiresolution hash-grid encoding (Instant-NGP, Mueller et al. 2022), the torch reference.

Layout and maths follow tiny-cuda-nn's ``GridEncoding`` exactly, so the three implementations (this torch
reference, the Triton kernel in ``hashgrid_triton.py`` and tiny-cuda-nn itself) compute the same function of the
same parameters:

- Inputs are world positions ``x`` (N, 3); they are mapped to the unit cube of the config's bounding box,
  ``u = clamp((x - lo) / (hi - lo), 0, 1)``.
- Level ``l`` (0..L-1) has scale ``s_l = base_resolution * per_level_scale**l - 1`` and resolution
  ``R_l = ceil(s_l) + 1``. The continuous grid position is ``p = u * s_l + 0.5``; the cell is ``g = floor(p)``
  and the fractional part ``f = p - g``.
- Each level owns ``P_l = min(next_multiple_of_8(R_l**3), T)`` rows of the flat table (T = 2**log2_table_size);
  levels are stored one after another (offsets ``o_l``), each row holds F features.
- Corner ``c = g + b`` (b in {0,1}^3) has index ``c_x + c_y R_l + c_z R_l**2 (mod P_l)`` when ``R_l**3 <= P_l``
  (dense level) and the spatial hash ``(c_x * 1 XOR c_y * 2654435761 XOR c_z * 805459861) mod T`` (uint32
  arithmetic) otherwise.
- Trilinear interpolation: ``e_l(x) = sum_b prod_d (b_d ? f_d : 1 - f_d) * table[o_l + index(c)]``.
- The output is ``(N, L * F)``, level-major (``out[:, l * F + j]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from backend.errors import InvalidInput

PRIMES = (1, 2654435761, 805459861)

Backend = Literal["auto", "torch", "triton", "tcnn"]


@dataclass(frozen=True)
class HashGridConfig:
    """Hash-grid settings (Instant-NGP defaults) over an axis-aligned bounding box in world units.

    ``backend`` picks the implementation: ``torch`` (reference, any device), ``triton`` (fused CUDA kernel),
    ``tcnn`` (tiny-cuda-nn, when importable) or ``auto`` (tcnn if importable on CUDA, else Triton on CUDA,
    else torch). ``table_dtype``: the precision the Triton kernel gathers the table in (float16 halves the bytes
    and fits the default table in an H100's L2; the features then differ from the float32 reference by the
    table's rounding, ~5e-4 of its magnitude); the torch reference and tcnn read float32.
    """

    n_levels: int = 16
    n_features_per_level: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.447
    bbox_min: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    bbox_max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    init_scale: float = 1e-4  # table entries start uniform in [-init_scale, init_scale] (as tcnn)
    backend: Backend = "auto"
    table_dtype: Literal["float16", "float32"] = "float16"  # what the Triton kernel reads (parameters stay float32)

    def __post_init__(self):
        if self.n_levels < 1 or self.n_features_per_level < 1 or not 2 <= self.log2_table_size <= 30:
            raise InvalidInput("hash grid needs n_levels >= 1, n_features_per_level >= 1, 2 <= log2_table_size <= 30")
        if self.base_resolution < 2 or self.per_level_scale < 1.0:
            raise InvalidInput("hash grid needs base_resolution >= 2 and per_level_scale >= 1")
        if self.table_dtype not in ("float16", "float32"):
            raise InvalidInput(f"hash grid table_dtype {self.table_dtype!r}: choose float16 or float32")
        if any(hi <= lo for lo, hi in zip(self.bbox_min, self.bbox_max)):
            raise InvalidInput(f"empty bounding box {self.bbox_min} .. {self.bbox_max}: every max must exceed its min")

    @property
    def table_size(self) -> int:
        return 1 << self.log2_table_size

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level


@dataclass(frozen=True)
class LevelLayout:
    """Per-level constants shared by all implementations (numpy arrays of length L, offsets of length L+1)."""

    scale: np.ndarray  # float32 s_l
    resolution: np.ndarray  # int64 R_l
    size: np.ndarray  # int64 P_l
    offset: np.ndarray  # int64 o_l, offset[-1] = total rows
    hashed: np.ndarray  # bool, R_l**3 > P_l

    @property
    def n_rows(self) -> int:
        return int(self.offset[-1])


def level_layout(config: HashGridConfig) -> LevelLayout:
    """Scales, resolutions and table offsets of every level (tiny-cuda-nn's rule, see module docstring)."""
    t = config.table_size
    scales, res, sizes = [], [], []
    log2_pls = math.log2(config.per_level_scale)
    for lvl in range(config.n_levels):
        # float32 like tcnn: exp2f(level * log2(per_level_scale)) * base_resolution - 1
        s = np.float32(np.exp2(np.float32(lvl * log2_pls)) * np.float32(config.base_resolution) - np.float32(1.0))
        r = math.ceil(float(s)) + 1
        dense = r**3
        sizes.append(min(((dense + 7) // 8) * 8, t))
        scales.append(s)
        res.append(r)
    sizes_a = np.asarray(sizes, dtype=np.int64)
    return LevelLayout(
        scale=np.asarray(scales, dtype=np.float32),
        resolution=np.asarray(res, dtype=np.int64),
        size=sizes_a,
        offset=np.concatenate([[0], np.cumsum(sizes_a)]).astype(np.int64),
        hashed=np.asarray([r**3 > p for r, p in zip(res, sizes)], dtype=bool),
    )


class HashGridEncoding(nn.Module):
    """Interface: ``forward(x (N, 3) world) -> (N, L * F)``; parameters are one flat table ``(rows, F)``.

    Subclasses differ only in how they evaluate; they share ``table`` layout, so a state dict moves between
    them. Use ``make_encoding(config)`` to get the implementation the config asks for.
    """

    name = "abstract"

    def __init__(self, config: HashGridConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        self.layout = level_layout(config)
        table = torch.empty(self.layout.n_rows, config.n_features_per_level, dtype=dtype)
        nn.init.uniform_(table, -config.init_scale, config.init_scale)
        self.table = nn.Parameter(table)
        self.register_buffer("bbox_lo", torch.tensor(config.bbox_min, dtype=torch.float32), persistent=False)
        self.register_buffer("bbox_hi", torch.tensor(config.bbox_max, dtype=torch.float32), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """World positions (N, 3) -> unit-cube coordinates u (N, 3) clamped to [0, 1]."""
        lo = self.bbox_lo.to(x.dtype)
        hi = self.bbox_hi.to(x.dtype)
        return ((x - lo) * (1.0 / (hi - lo))).clamp(0.0, 1.0)  # multiply by the inverse, as the kernels do


class TorchHashGrid(HashGridEncoding):
    """Pure-torch reference: differentiable w.r.t. the table and the inputs (any device, any float dtype)."""

    name = "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return encode(self.normalize(x), self.table, self.layout)


def _corner_index(c: torch.Tensor, level: int, layout: LevelLayout) -> torch.Tensor:
    """Row (within the level) of integer grid corners c (..., 3) int64."""
    size = int(layout.size[level])
    if layout.hashed[level]:
        h = c[..., 0] * PRIMES[0] ^ c[..., 1] * PRIMES[1] ^ c[..., 2] * PRIMES[2]
        return h & (size - 1)  # T is a power of two; low bits of the int64 product equal uint32 arithmetic
    r = int(layout.resolution[level])
    return (c[..., 0] + c[..., 1] * r + c[..., 2] * (r * r)) % size


_CORNERS = torch.tensor([[(k >> d) & 1 for d in range(3)] for k in range(8)], dtype=torch.int64)  # (8, 3)


def _encode_level(u: torch.Tensor, table: torch.Tensor, layout: LevelLayout, lvl: int) -> torch.Tensor:
    """Level ``lvl`` of ``encode_reference``: (N, 3) unit-cube points -> (N, F)."""
    # made on the device by device ops: a host-to-device copy would synchronise (refused inside CUDA graph capture)
    corners = _CORNERS if u.device.type == "cpu" else (torch.arange(8, device=u.device)[:, None] >>
                                                        torch.arange(3, device=u.device)) & 1
    p = u.to(table.dtype) * float(layout.scale[lvl]) + 0.5
    g = torch.floor(p)
    f = p - g  # (N, 3), differentiable w.r.t. u
    c = g.detach().to(torch.int64)[:, None, :] + corners[None]  # (N, 8, 3)
    rows = _corner_index(c, lvl, layout) + int(layout.offset[lvl])  # (N, 8)
    b = corners[None].to(f.dtype)  # (1, 8, 3)
    w = (b * f[:, None, :] + (1 - b) * (1 - f[:, None, :])).prod(dim=-1)  # (N, 8)
    feats = table[rows]  # (N, 8, F)
    return (w[..., None] * feats).sum(dim=1)


def encode_reference(u: torch.Tensor, table: torch.Tensor, layout: LevelLayout) -> torch.Tensor:
    """Hash-grid features of unit-cube points.

    Args:
        u: (N, 3) coordinates in [0, 1].
        table: (rows, F) parameters, levels stored at ``layout.offset``.
    Returns:
        (N, L * F) features, level-major, dtype of ``table``.
    """
    return torch.cat([_encode_level(u, table, layout, lvl) for lvl in range(len(layout.scale))], dim=-1)


def _dense_level(u: torch.Tensor, table: torch.Tensor, layout: LevelLayout, lvl: int) -> torch.Tensor | None:
    """Level ``lvl`` of ``encode_reference`` as one ``grid_sample`` (a fused trilinear kernel, several times faster
    than the reference's gathers on a CPU), or None where that is not the same function.

    It is the same on a dense level (row = c_x + c_y R + c_z R^2, the table slice is an R^3 volume) when every
    corner lies inside the volume: p = u s + 0.5 <= R - 1 on every axis (beyond, the reference's modulo wraps a
    corner to another row). grid_sample with align_corners samples index coordinate (x + 1) / 2 (R - 1) at x, so
    x = 2 p / (R - 1) - 1 puts it at p.

    On a CPU the test reads the largest coordinate. Elsewhere it must not read a value back (a host sync on
    every level of every forward, and an error while a CUDA graph is captured, as ``MotionField`` trains), so
    it decides from the level alone: u is in [0, 1] (``normalize`` clamps it), hence p <= s + 0.5."""
    r = int(layout.resolution[lvl])
    s = float(layout.scale[lvl])
    if layout.hashed[lvl] or len(u) == 0:
        return None
    u_max = float(u.detach().max()) if u.device.type == "cpu" else 1.0
    if u_max * s + 0.5 > r - 1:
        return None
    o = int(layout.offset[lvl])
    volume = table[o:o + r**3].view(r, r, r, -1).permute(3, 0, 1, 2)[None]  # (1, F, z, y, x)
    grid = (u.to(table.dtype) * (2.0 * s / (r - 1)) + (1.0 / (r - 1) - 1.0)).view(1, 1, 1, -1, 3)
    out = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(table.shape[1], -1).t()


def encode(u: torch.Tensor, table: torch.Tensor, layout: LevelLayout) -> torch.Tensor:
    """``encode_reference``, with each level that allows it evaluated by ``_dense_level``."""
    outs = []
    for lvl in range(len(layout.scale)):
        out = _dense_level(u, table, layout, lvl)
        outs.append(_encode_level(u, table, layout, lvl) if out is None else out)
    return torch.cat(outs, dim=-1)


def _spread_bits(v: torch.Tensor) -> torch.Tensor:
    """The low 21 bits of ``v`` (int64) spread to every third bit (bit i -> bit 3 i)."""
    v = v & 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    return (v | (v << 2)) & 0x1249249249249249


def morton_order(points: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """The permutation (M,) int64 that sorts ``points`` (M, 3) along a Z-order (Morton) curve over their own box,
    ``bits`` per axis (<= 21). Neighbours in that order are neighbours in space, so a warp of hash-grid queries
    in it shares cells and table rows at the coarse and middle levels, where uniformly scattered points gather
    one L2 sector per corner (docs/bench/motion.md)."""
    if not 1 <= bits <= 21:
        raise InvalidInput(f"morton_order takes 1..21 bits per axis, got {bits}")
    if points.shape[0] < 2:
        return torch.arange(points.shape[0], device=points.device)
    p = points.detach().float()
    lo, hi = p.amin(0), p.amax(0)
    q = ((p - lo) / (hi - lo).clamp_min(1e-12) * ((1 << bits) - 1)).round().long()
    code = _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << 1) | (_spread_bits(q[:, 2]) << 2)
    return torch.argsort(code)


def triton_available() -> bool:
    """True when Triton imports and CUDA is present (the fused kernel can run)."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def tcnn_available() -> bool:
    """True when tiny-cuda-nn's torch bindings import and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return False
    return True


def make_encoding(config: HashGridConfig) -> HashGridEncoding:
    """The implementation ``config.backend`` asks for (``auto``: tcnn > Triton > torch by availability)."""
    backend = config.backend
    if backend == "auto":
        backend = "tcnn" if tcnn_available() else "triton" if triton_available() else "torch"
    if backend == "torch":
        return TorchHashGrid(config)
    if backend == "triton":
        if not triton_available():
            raise InvalidInput("hash grid backend 'triton' needs CUDA and the triton package; use backend='torch'")
        from .hashgrid_triton import TritonHashGrid

        return TritonHashGrid(config)
    if backend == "tcnn":
        if not tcnn_available():
            raise InvalidInput("hash grid backend 'tcnn' needs tiny-cuda-nn's torch bindings and CUDA; "
                               "use backend='triton' or 'torch'")
        from .hashgrid_tcnn import TcnnHashGrid

        return TcnnHashGrid(config)
    raise InvalidInput(f"unknown hash grid backend {backend!r}; choose auto, torch, triton or tcnn")
