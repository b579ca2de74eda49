"""Fused Triton kernels for the hash-grid encoding (CUDA): forward and the table gradient.

Same function as ``hashgrid.encode_reference`` (see ``hashgrid.py`` for the maths). One program handles
``BLOCK`` points of one level: it normalises the positions, finds the cell once per axis (both corners' hash
terms and dense strides), then for each of the 8 corners its row (spatial hash, or dense index with the
modulo as one conditional subtraction) and gathers the ``F`` features into the trilinear blend. By default
programs are ordered level-major: all blocks of one level run together, so that level's table rows stay in L2
(1.14 G queries/s at 1M on an H200 against 0.96 for level-fastest order, where the L programs writing one block
of output rows run side by side; bench/fields_hashgrid_gpu.py, docs/bench/motion.md). The backward pass scatters ``w * dL/dout`` into the table
gradient with atomic adds, as tiny-cuda-nn does.

Gradients w.r.t. the input positions are not computed by the kernel: when the positions require a gradient
the module evaluates through the torch reference instead (the motion field never needs them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .hashgrid import HashGridConfig, HashGridEncoding, encode_reference

# launch settings (bench/fields_hashgrid_gpu.py sweeps them on the GPU; docs/bench/motion.md)
DEFAULT_BLOCK = 128
DEFAULT_WARPS = 4
DEFAULT_LEVEL_MAJOR = True


@triton.jit
def _unit(x_ptr, n, m, lo_x, lo_y, lo_z, inv_x, inv_y, inv_z):
    """Positions of rows ``n`` mapped to the unit cube and clamped (``HashGridEncoding.normalize``)."""
    ux = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 0, mask=m, other=0.0) - lo_x) * inv_x, 0.0), 1.0)
    uy = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 1, mask=m, other=0.0) - lo_y) * inv_y, 0.0), 1.0)
    uz = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 2, mask=m, other=0.0) - lo_z) * inv_z, 0.0), 1.0)
    return ux, uy, uz


@triton.jit
def _axis(u, scale, stride, prime):
    """One axis of a level's cell: the two corners' contributions to the hash (uint32 c * prime) and to the dense
    index (c * stride), and the fractional position f (weight of the upper corner)."""
    p = u * scale + 0.5
    g = tl.floor(p)
    c = g.to(tl.int32)
    h0 = c.to(tl.uint32) * prime
    h1 = (c + 1).to(tl.uint32) * prime
    d0 = c * stride
    return h0, h1, d0, d0 + stride, p - g


@triton.jit
def _corner(hx, hy, hz, dx, dy, dz, wx, wy, wz, size, offset, hashed):
    """Row in the flat table and trilinear weight of one corner. Dense indices stay below 2 P_l (corners reach at
    most R_l per axis), so ``mod P_l`` is one conditional subtraction."""
    h = (hx ^ hy ^ hz) & (size - 1)
    d = dx + dy + dz
    d = tl.where(d >= size, d - size, d)
    return tl.where(hashed != 0, h.to(tl.int32), d) + offset, wx * wy * wz


@triton.jit
def _level_cell(x_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr, lo_x, lo_y, lo_z, inv_x, inv_y, inv_z, N,
                NBLK, L: tl.constexpr, BLOCK: tl.constexpr, LEVEL_MAJOR: tl.constexpr):
    """This program's level and rows (level-fastest or level-major order) and their cells at that level."""
    pid = tl.program_id(0)
    if LEVEL_MAJOR:
        lvl = pid // NBLK
        blk = pid % NBLK
    else:
        lvl = pid % L
        blk = pid // L
    n = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = n < N
    ux, uy, uz = _unit(x_ptr, n, m, lo_x, lo_y, lo_z, inv_x, inv_y, inv_z)
    scale = tl.load(scale_ptr + lvl)
    res = tl.load(res_ptr + lvl)
    size = tl.load(size_ptr + lvl)
    offset = tl.load(off_ptr + lvl)
    hashed = tl.load(hashed_ptr + lvl)
    hx0, hx1, dx0, dx1, fx = _axis(ux, scale, 1, 1)
    hy0, hy1, dy0, dy1, fy = _axis(uy, scale, res, 2654435761)
    hz0, hz1, dz0, dz1, fz = _axis(uz, scale, res * res, 805459861)
    return (lvl, n, m, size, offset, hashed, hx0, hx1, dx0, dx1, fx, hy0, hy1, dy0, dy1, fy, hz0, hz1, dz0, dz1, fz)


@triton.jit
def _pick(c: tl.constexpr, bit: tl.constexpr, h0, h1, d0, d1, f):
    if c & bit:
        return h1, d1, f
    else:
        return h0, d0, 1.0 - f


@triton.jit(do_not_specialize=["N", "NBLK"])  # a new size must not compile a new kernel
def _hashgrid_fwd(x_ptr, table_ptr, out_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr,
                  lo_x, lo_y, lo_z, inv_x, inv_y, inv_z, N, NBLK,
                  L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr, LEVEL_MAJOR: tl.constexpr):
    (lvl, n, m, size, offset, hashed, hx0, hx1, dx0, dx1, fx, hy0, hy1, dy0, dy1, fy, hz0, hz1, dz0, dz1,
     fz) = _level_cell(x_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr, lo_x, lo_y, lo_z, inv_x, inv_y,
                       inv_z, N, NBLK, L, BLOCK, LEVEL_MAJOR)
    f = tl.arange(0, F)
    acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    for c in tl.static_range(8):
        hx, dx, wx = _pick(c, 1, hx0, hx1, dx0, dx1, fx)
        hy, dy, wy = _pick(c, 2, hy0, hy1, dy0, dy1, fy)
        hz, dz, wz = _pick(c, 4, hz0, hz1, dz0, dz1, fz)
        row, w = _corner(hx, hy, hz, dx, dy, dz, wx, wy, wz, size, offset, hashed)
        feat = tl.load(table_ptr + row.to(tl.int64)[:, None] * F + f[None, :], mask=m[:, None], other=0.0)
        acc += w[:, None] * feat
    tl.store(out_ptr + n[:, None] * (L * F) + lvl * F + f[None, :], acc, mask=m[:, None])


@triton.jit(do_not_specialize=["N", "NBLK"])  # a new size must not compile a new kernel
def _hashgrid_bwd(x_ptr, grad_out_ptr, grad_table_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr,
                  lo_x, lo_y, lo_z, inv_x, inv_y, inv_z, N, NBLK,
                  L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr, LEVEL_MAJOR: tl.constexpr):
    (lvl, n, m, size, offset, hashed, hx0, hx1, dx0, dx1, fx, hy0, hy1, dy0, dy1, fy, hz0, hz1, dz0, dz1,
     fz) = _level_cell(x_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr, lo_x, lo_y, lo_z, inv_x, inv_y,
                       inv_z, N, NBLK, L, BLOCK, LEVEL_MAJOR)
    f = tl.arange(0, F)
    go = tl.load(grad_out_ptr + n[:, None] * (L * F) + lvl * F + f[None, :], mask=m[:, None], other=0.0)
    for c in tl.static_range(8):
        hx, dx, wx = _pick(c, 1, hx0, hx1, dx0, dx1, fx)
        hy, dy, wy = _pick(c, 2, hy0, hy1, dy0, dy1, fy)
        hz, dz, wz = _pick(c, 4, hz0, hz1, dz0, dz1, fz)
        row, w = _corner(hx, hy, hz, dx, dy, dz, wx, wy, wz, size, offset, hashed)
        tl.atomic_add(grad_table_ptr + row.to(tl.int64)[:, None] * F + f[None, :], w[:, None] * go,
                      mask=m[:, None], sem="relaxed")


class _TritonEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, enc):
        out = torch.empty(x.shape[0], enc.output_dim, device=x.device, dtype=torch.float32)
        enc._launch(_hashgrid_fwd, x, table, out)
        ctx.save_for_backward(x)
        ctx.enc = enc
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = torch.zeros(ctx.table_shape, device=x.device, dtype=torch.float32)
            ctx.enc._launch(_hashgrid_bwd, x, grad_out.contiguous().float(), grad_table)
        return None, grad_table, None


class TritonHashGrid(HashGridEncoding):
    """Hash grid evaluated by fused Triton kernels (float32 table on CUDA)."""

    name = "triton"

    def __init__(self, config: HashGridConfig, block: int = DEFAULT_BLOCK, num_warps: int = DEFAULT_WARPS,
                 level_major: bool = DEFAULT_LEVEL_MAJOR):
        super().__init__(config, dtype=torch.float32)
        if config.n_features_per_level & (config.n_features_per_level - 1):
            raise ValueError("the Triton hash grid needs a power-of-two n_features_per_level")
        lay = self.layout
        self.block, self.num_warps, self.level_major = block, num_warps, level_major
        self.register_buffer("_scale", torch.as_tensor(lay.scale, dtype=torch.float32), persistent=False)
        self.register_buffer("_res", torch.as_tensor(lay.resolution, dtype=torch.int32), persistent=False)
        self.register_buffer("_size", torch.as_tensor(lay.size, dtype=torch.int32), persistent=False)
        self.register_buffer("_off", torch.as_tensor(lay.offset[:-1], dtype=torch.int32), persistent=False)
        self.register_buffer("_hashed", torch.as_tensor(lay.hashed, dtype=torch.int32), persistent=False)
        lo = [float(v) for v in config.bbox_min]
        self._lo = lo
        self._inv = [1.0 / (float(h) - v) for h, v in zip(config.bbox_max, lo)]

    def _launch(self, kernel, x, table_like, out_like):
        n = x.shape[0]
        if n == 0:
            return
        L, F = self.config.n_levels, self.config.n_features_per_level
        nblk = triton.cdiv(n, self.block)
        kernel[(nblk * L,)](x, table_like, out_like, self._scale, self._res, self._size, self._off, self._hashed,
                            *self._lo, *self._inv, n, nblk, L=L, F=F, BLOCK=self.block,
                            LEVEL_MAJOR=self.level_major, num_warps=self.num_warps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            raise ValueError("TritonHashGrid needs CUDA tensors; move the module and inputs with .cuda()")
        if x.requires_grad and torch.is_grad_enabled():
            return encode_reference(self.normalize(x), self.table, self.layout)
        return _TritonEncode.apply(x.float().contiguous(), self.table, self)
