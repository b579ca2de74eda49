"""Fused Triton kernels for the hash-grid encoding (CUDA): forward and the table gradient.

Same function as ``hashgrid.encode_reference`` (see ``hashgrid.py`` for the maths). One program handles
``BLOCK`` points of one level: it normalises the positions, finds the 8 corners, computes their rows (dense
index or spatial hash), gathers the ``F`` features per corner and writes the trilinear blend. Programs are
ordered level-fastest so that the L programs writing one block of output rows run side by side (their writes
to the same 128-byte output rows meet in L2). The backward pass scatters ``w * dL/dout`` into the table
gradient with atomic adds, as tiny-cuda-nn does.

Gradients w.r.t. the input positions are not computed by the kernel: when the positions require a gradient
the module evaluates through the torch reference instead (the motion field never needs them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .hashgrid import HashGridConfig, HashGridEncoding, encode_reference

DEFAULT_BLOCK = 256


@triton.jit
def _corner_rows_weights(ux, uy, uz, scale, res, size, offset, hashed, C: tl.constexpr):
    """Row in the flat table and trilinear weight of corner C (bit d of C = +1 along axis d)."""
    px = ux * scale + 0.5
    py = uy * scale + 0.5
    pz = uz * scale + 0.5
    gx = tl.floor(px)
    gy = tl.floor(py)
    gz = tl.floor(pz)
    fx = px - gx
    fy = py - gy
    fz = pz - gz
    cx = gx.to(tl.int32)
    cy = gy.to(tl.int32)
    cz = gz.to(tl.int32)
    if C & 1:
        cx += 1
        wx = fx
    else:
        wx = 1.0 - fx
    if C & 2:
        cy += 1
        wy = fy
    else:
        wy = 1.0 - fy
    if C & 4:
        cz += 1
        wz = fz
    else:
        wz = 1.0 - fz
    h = (cx.to(tl.uint32) ^ (cy.to(tl.uint32) * 2654435761) ^ (cz.to(tl.uint32) * 805459861)) & (size - 1)
    dense = (cx + cy * res + cz * res * res) % size
    row = tl.where(hashed != 0, h.to(tl.int32), dense) + offset
    return row, wx * wy * wz


@triton.jit
def _hashgrid_fwd(x_ptr, table_ptr, out_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr,
                  lo_x, lo_y, lo_z, inv_x, inv_y, inv_z, N,
                  L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    lvl = pid % L
    blk = pid // L
    n = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = n < N
    ux = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 0, mask=m, other=0.0) - lo_x) * inv_x, 0.0), 1.0)
    uy = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 1, mask=m, other=0.0) - lo_y) * inv_y, 0.0), 1.0)
    uz = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 2, mask=m, other=0.0) - lo_z) * inv_z, 0.0), 1.0)
    scale = tl.load(scale_ptr + lvl)
    res = tl.load(res_ptr + lvl)
    size = tl.load(size_ptr + lvl)
    offset = tl.load(off_ptr + lvl)
    hashed = tl.load(hashed_ptr + lvl)
    f = tl.arange(0, F)
    acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    for c in tl.static_range(8):
        row, w = _corner_rows_weights(ux, uy, uz, scale, res, size, offset, hashed, c)
        feat = tl.load(table_ptr + row.to(tl.int64)[:, None] * F + f[None, :], mask=m[:, None], other=0.0)
        acc += w[:, None] * feat
    tl.store(out_ptr + n[:, None] * (L * F) + lvl * F + f[None, :], acc, mask=m[:, None])


@triton.jit
def _hashgrid_bwd(x_ptr, grad_out_ptr, grad_table_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr,
                  lo_x, lo_y, lo_z, inv_x, inv_y, inv_z, N,
                  L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    lvl = pid % L
    blk = pid // L
    n = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = n < N
    ux = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 0, mask=m, other=0.0) - lo_x) * inv_x, 0.0), 1.0)
    uy = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 1, mask=m, other=0.0) - lo_y) * inv_y, 0.0), 1.0)
    uz = tl.minimum(tl.maximum((tl.load(x_ptr + n * 3 + 2, mask=m, other=0.0) - lo_z) * inv_z, 0.0), 1.0)
    scale = tl.load(scale_ptr + lvl)
    res = tl.load(res_ptr + lvl)
    size = tl.load(size_ptr + lvl)
    offset = tl.load(off_ptr + lvl)
    hashed = tl.load(hashed_ptr + lvl)
    f = tl.arange(0, F)
    go = tl.load(grad_out_ptr + n[:, None] * (L * F) + lvl * F + f[None, :], mask=m[:, None], other=0.0)
    for c in tl.static_range(8):
        row, w = _corner_rows_weights(ux, uy, uz, scale, res, size, offset, hashed, c)
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

    def __init__(self, config: HashGridConfig, block: int = DEFAULT_BLOCK):
        super().__init__(config, dtype=torch.float32)
        if config.n_features_per_level & (config.n_features_per_level - 1):
            raise ValueError("the Triton hash grid needs a power-of-two n_features_per_level")
        lay = self.layout
        self.block = block
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
        grid = (triton.cdiv(n, self.block) * L,)
        kernel[grid](x, table_like, out_like, self._scale, self._res, self._size, self._off, self._hashed,
                     *self._lo, *self._inv, n, L=L, F=F, BLOCK=self.block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            raise ValueError("TritonHashGrid needs CUDA tensors; move the module and inputs with .cuda()")
        if x.requires_grad and torch.is_grad_enabled():
            return encode_reference(self.normalize(x), self.table, self.layout)
        return _TritonEncode.apply(x.float().contiguous(), self.table, self)
