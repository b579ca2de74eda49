"""Fused Triton kernels for the hash-grid encoding (CUDA): forward and the table gradient.

Same function as ``hashgrid.encode_reference`` (see ``hashgrid.py`` for the maths). A program handles ``BLOCK``
points: it normalises the positions, finds the cell once per axis (both corners' hash terms and dense strides),
then for each of the 8 corners its row (spatial hash, or dense index with the modulo as one conditional
subtraction) and gathers the ``F`` features into the trilinear blend (accumulated in float32).

Three program orders (``ORDER``):
- 1, level-major: each program does one level of its block; all blocks of one level run together, so that
  level's table rows (<= 4 MB in float32) stay in L2. Each program writes ``F`` floats of every output row
  (8 bytes of a 32-byte sector for ``F`` = 2): the rows of 1M points (128 MB) do not stay in L2 between levels,
  so every sector is merged into DRAM again at each level;
- 2, point-major: each program does every level of its block, reading the positions once and writing whole
  output rows; the working set is the whole table, which fits the L2 of an H100 (50 MB) in float16 (25 MB for
  the default 16 levels x 2^19 rows x 2 features);
- 3, level groups: each program does ``LEVEL_GROUP`` (4) consecutive levels of its block, and all blocks of one
  group run together: the working set is four levels' rows, and a program writes 4 x F floats of each output row
  (a whole 32-byte sector for F = 2) and reads the positions once per group.

The forward pass reads the table in ``HashGridConfig.table_dtype``: float16 (the default, as tiny-cuda-nn) gathers
half the bytes; the parameters stay float32 (Adam updates them there) and a float16 copy is made per call (kept
while the table is unchanged: same storage and version counter; never kept while a CUDA graph is captured). Launch settings (block, warps, order) are tuned on the device at
the first call of each size class (``triton.autotune``, ~1-2 s once per process), or fixed by the constructor.
The backward pass scatters ``w * dL/dout`` into a float32 table gradient with atomic adds, as tiny-cuda-nn does.

Gradients w.r.t. the input positions are not computed by the kernel: when the positions require a gradient
the module evaluates through the torch reference instead (the motion field never needs them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..triton_env import interpreting
from .hashgrid import HashGridConfig, HashGridEncoding, encode_reference

LEVEL_MAJOR, POINT_MAJOR, LEVEL_GROUPS = 1, 2, 3
LEVEL_GROUP = tl.constexpr(4)  # levels per program in the LEVEL_GROUPS order
# (BLOCK, warps, ORDER) the autotuner tries. On the H100 (2026-12-07, eighth session) level groups of 64 x 8 warps
# led (1.21 G queries/s at 1M against 0.96 for the best level-major setting) and point-major trailed (0.82)
TUNED = [(64, 8, LEVEL_GROUPS), (64, 4, LEVEL_GROUPS), (128, 8, LEVEL_GROUPS),
         (64, 8, LEVEL_MAJOR), (256, 8, LEVEL_MAJOR), (64, 2, POINT_MAJOR), (128, 4, POINT_MAJOR)]


def programs(n: int, block: int, order: int, n_levels: int) -> int:
    """Programs of one launch over ``n`` points."""
    per_block = {LEVEL_MAJOR: n_levels, POINT_MAJOR: 1}.get(order, -(-n_levels // LEVEL_GROUP.value))
    return triton.cdiv(n, block) * per_block


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
def _pick(c: tl.constexpr, bit: tl.constexpr, h0, h1, d0, d1, f):
    if c & bit:
        return h1, d1, f
    else:
        return h0, d0, 1.0 - f


@triton.jit
def _level(ux, uy, uz, lvl, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr):
    """Level ``lvl``'s cell of the unit positions: per-axis corner terms and fractions, and the level's layout."""
    scale = tl.load(scale_ptr + lvl)
    res = tl.load(res_ptr + lvl)
    hx0, hx1, dx0, dx1, fx = _axis(ux, scale, 1, 1)
    hy0, hy1, dy0, dy1, fy = _axis(uy, scale, res, 2654435761)
    hz0, hz1, dz0, dz1, fz = _axis(uz, scale, res * res, 805459861)
    return (tl.load(size_ptr + lvl), tl.load(off_ptr + lvl), tl.load(hashed_ptr + lvl),
            hx0, hx1, dx0, dx1, fx, hy0, hy1, dy0, dy1, fy, hz0, hz1, dz0, dz1, fz)


@triton.jit
def _encode_level(table_ptr, out_ptr, n, m, lvl, ux, uy, uz, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr,
                  L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    (size, offset, hashed, hx0, hx1, dx0, dx1, fx, hy0, hy1, dy0, dy1, fy, hz0, hz1, dz0, dz1,
     fz) = _level(ux, uy, uz, lvl, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr)
    f = tl.arange(0, F)
    acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    for c in tl.static_range(8):
        hx, dx, wx = _pick(c, 1, hx0, hx1, dx0, dx1, fx)
        hy, dy, wy = _pick(c, 2, hy0, hy1, dy0, dy1, fy)
        hz, dz, wz = _pick(c, 4, hz0, hz1, dz0, dz1, fz)
        row, w = _corner(hx, hy, hz, dx, dy, dz, wx, wy, wz, size, offset, hashed)
        feat = tl.load(table_ptr + row.to(tl.int64)[:, None] * F + f[None, :], mask=m[:, None], other=0.0)
        acc += w[:, None] * feat.to(tl.float32)
    tl.store(out_ptr + n[:, None] * (L * F) + lvl * F + f[None, :], acc, mask=m[:, None])


@triton.jit
def _scatter_level(grad_out_ptr, grad_table_ptr, n, m, lvl, ux, uy, uz, scale_ptr, res_ptr, size_ptr, off_ptr,
                   hashed_ptr, L: tl.constexpr, F: tl.constexpr):
    (size, offset, hashed, hx0, hx1, dx0, dx1, fx, hy0, hy1, dy0, dy1, fy, hz0, hz1, dz0, dz1,
     fz) = _level(ux, uy, uz, lvl, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr)
    f = tl.arange(0, F)
    go = tl.load(grad_out_ptr + n[:, None] * (L * F) + lvl * F + f[None, :], mask=m[:, None], other=0.0)
    for c in tl.static_range(8):
        hx, dx, wx = _pick(c, 1, hx0, hx1, dx0, dx1, fx)
        hy, dy, wy = _pick(c, 2, hy0, hy1, dy0, dy1, fy)
        hz, dz, wz = _pick(c, 4, hz0, hz1, dz0, dz1, fz)
        row, w = _corner(hx, hy, hz, dx, dy, dz, wx, wy, wz, size, offset, hashed)
        tl.atomic_add(grad_table_ptr + row.to(tl.int64)[:, None] * F + f[None, :], w[:, None] * go,
                      mask=m[:, None], sem="relaxed")


@triton.jit
def _program(N, L: tl.constexpr, BLOCK: tl.constexpr, ORDER: tl.constexpr):
    """This program's rows and level (level-major order) or first level (level groups)."""
    pid = tl.program_id(0)
    if ORDER == 1:
        nblk = tl.cdiv(N, BLOCK)
        lvl = pid // nblk
        blk = pid % nblk
    elif ORDER == 3:
        nblk = tl.cdiv(N, BLOCK)
        lvl = (pid // nblk) * LEVEL_GROUP
        blk = pid % nblk
    else:
        lvl = 0
        blk = pid
    n = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return n, n < N, lvl


@triton.jit(do_not_specialize=["N", "NKEY"])  # a new size must not compile a new kernel
def _hashgrid_fwd(x_ptr, table_ptr, out_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr,
                  lo_x, lo_y, lo_z, inv_x, inv_y, inv_z, N, NKEY,
                  L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr, ORDER: tl.constexpr):
    n, m, lvl = _program(N, L, BLOCK, ORDER)
    ux, uy, uz = _unit(x_ptr, n, m, lo_x, lo_y, lo_z, inv_x, inv_y, inv_z)
    if ORDER == 1:
        _encode_level(table_ptr, out_ptr, n, m, lvl, ux, uy, uz, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr,
                      L, F, BLOCK)
    elif ORDER == 3:
        for j in tl.static_range(LEVEL_GROUP):
            if lvl + j < L:
                _encode_level(table_ptr, out_ptr, n, m, lvl + j, ux, uy, uz, scale_ptr, res_ptr, size_ptr, off_ptr,
                              hashed_ptr, L, F, BLOCK)
    else:
        for level in range(L):
            _encode_level(table_ptr, out_ptr, n, m, level, ux, uy, uz, scale_ptr, res_ptr, size_ptr, off_ptr,
                          hashed_ptr, L, F, BLOCK)


@triton.jit(do_not_specialize=["N", "NKEY"])
def _hashgrid_bwd(x_ptr, grad_out_ptr, grad_table_ptr, scale_ptr, res_ptr, size_ptr, off_ptr, hashed_ptr,
                  lo_x, lo_y, lo_z, inv_x, inv_y, inv_z, N, NKEY,
                  L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr, ORDER: tl.constexpr):
    n, m, lvl = _program(N, L, BLOCK, ORDER)
    ux, uy, uz = _unit(x_ptr, n, m, lo_x, lo_y, lo_z, inv_x, inv_y, inv_z)
    if ORDER == 1:
        _scatter_level(grad_out_ptr, grad_table_ptr, n, m, lvl, ux, uy, uz, scale_ptr, res_ptr, size_ptr, off_ptr,
                       hashed_ptr, L, F)
    elif ORDER == 3:
        for j in tl.static_range(LEVEL_GROUP):
            if lvl + j < L:
                _scatter_level(grad_out_ptr, grad_table_ptr, n, m, lvl + j, ux, uy, uz, scale_ptr, res_ptr, size_ptr,
                               off_ptr, hashed_ptr, L, F)
    else:
        for level in range(L):
            _scatter_level(grad_out_ptr, grad_table_ptr, n, m, level, ux, uy, uz, scale_ptr, res_ptr, size_ptr,
                           off_ptr, hashed_ptr, L, F)


def _quick_bench(kernel_call, quantiles):
    """The autotuner's timer: a few ms per setting (its default spends 125 ms on each)."""
    return triton.testing.do_bench(kernel_call, warmup=5, rep=40, quantiles=quantiles)


_CONFIGS = [triton.Config({"BLOCK": b, "ORDER": o}, num_warps=w) for b, w, o in TUNED]
_hashgrid_fwd_tuned = triton.autotune(_CONFIGS, key=["NKEY", "L", "F"], do_bench=_quick_bench)(_hashgrid_fwd)
_hashgrid_bwd_tuned = triton.autotune(_CONFIGS, key=["NKEY", "L", "F"], do_bench=_quick_bench,
                                      reset_to_zero=["grad_table_ptr"])(_hashgrid_bwd)


class _TritonEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, enc):
        out = torch.empty(x.shape[0], enc.output_dim, device=x.device, dtype=torch.float32)
        enc._launch("fwd", x, enc._read_table(table), out)
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
            ctx.enc._launch("bwd", x, grad_out.contiguous().float(), grad_table)
        return None, grad_table, None


class TritonHashGrid(HashGridEncoding):
    """Hash grid evaluated by fused Triton kernels (float32 parameters on CUDA, read in ``config.table_dtype``).

    ``block``, ``num_warps`` and ``order`` (1 level-major, 2 point-major, 3 level groups) fix the launch settings; left None,
    the autotuner picks them per size class on the device.
    """

    name = "triton"

    def __init__(self, config: HashGridConfig, block: int | None = None, num_warps: int | None = None,
                 order: int | None = None):
        super().__init__(config, dtype=torch.float32)
        if config.n_features_per_level & (config.n_features_per_level - 1):
            raise ValueError("the Triton hash grid needs a power-of-two n_features_per_level")
        fixed = (block, num_warps, order)
        if any(v is not None for v in fixed) and any(v is None for v in fixed):
            raise ValueError("give block, num_warps and order together, or none of them (autotuned)")
        lay = self.layout
        self.fixed = None if block is None else (block, num_warps, order)
        self.read_dtype = {"float32": torch.float32, "float16": torch.float16}[config.table_dtype]
        self._half: tuple[tuple[int, int, torch.device], torch.Tensor] | None = None  # (table key, copy)
        self.register_buffer("_scale", torch.as_tensor(lay.scale, dtype=torch.float32), persistent=False)
        self.register_buffer("_res", torch.as_tensor(lay.resolution, dtype=torch.int32), persistent=False)
        self.register_buffer("_size", torch.as_tensor(lay.size, dtype=torch.int32), persistent=False)
        self.register_buffer("_off", torch.as_tensor(lay.offset[:-1], dtype=torch.int32), persistent=False)
        self.register_buffer("_hashed", torch.as_tensor(lay.hashed, dtype=torch.int32), persistent=False)
        lo = [float(v) for v in config.bbox_min]
        self._lo = lo
        self._inv = [1.0 / (float(h) - v) for h, v in zip(config.bbox_max, lo)]

    def _read_table(self, table: torch.Tensor) -> torch.Tensor:
        """The table in the read precision. Unless a CUDA graph is being captured (its replays must convert the
        table anew) the copy is kept while the table is the same: same storage (``data_ptr``, so a replaced or
        reloaded parameter is never read stale) and same version counter (it moves with every in-place update,
        an optimiser step included, so in training the copy is remade every step)."""
        if self.read_dtype == table.dtype:
            return table.detach()
        reuse = table.is_cuda and not torch.cuda.is_current_stream_capturing()
        key = (table.data_ptr(), table._version, table.device)
        if reuse and self._half is not None and self._half[0] == key:
            return self._half[1]
        half = table.detach().to(self.read_dtype)
        self._half = (key, half) if reuse else None
        return half

    def _launch(self, which: str, x, table_like, out_like):
        n = x.shape[0]
        if n == 0:
            return
        L, F = self.config.n_levels, self.config.n_features_per_level
        args = (x, table_like, out_like, self._scale, self._res, self._size, self._off, self._hashed, *self._lo,
                *self._inv, n, n.bit_length())
        if self.fixed is not None:
            block, warps, order = self.fixed
            kernel = _hashgrid_fwd if which == "fwd" else _hashgrid_bwd
            grid = (programs(n, block, order, L),)
            kernel[grid](*args, L=L, F=F, BLOCK=block, ORDER=order, num_warps=warps)
            return
        kernel = _hashgrid_fwd_tuned if which == "fwd" else _hashgrid_bwd_tuned

        def grid(meta):
            return (programs(n, meta["BLOCK"], meta["ORDER"], L),)

        kernel[grid](*args, L=L, F=F)

    def launch_settings(self, n: int) -> tuple[int, int, int] | None:
        """(block, warps, order) the forward pass runs ``n`` points with (None before the first such call)."""
        if self.fixed is not None:
            return self.fixed
        for key, cfg in getattr(_hashgrid_fwd_tuned, "cache", {}).items():
            if key[:3] == (n.bit_length(), self.config.n_levels, self.config.n_features_per_level):
                return cfg.kwargs["BLOCK"], cfg.num_warps, cfg.kwargs["ORDER"]
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda and not interpreting():
            raise ValueError("TritonHashGrid needs CUDA tensors; move the module and inputs with .cuda()")
        if x.requires_grad and torch.is_grad_enabled():
            return encode_reference(self.normalize(x), self.table, self.layout)
        return _TritonEncode.apply(x.float().contiguous(), self.table, self)


@triton.jit
def _adam_kernel(p_ptr, g_ptr, m_ptr, v_ptr, coef_ptr, N, beta1, beta2, eps, BLOCK: tl.constexpr):
    """One Adam step over a flat float32 table, in torch.optim.Adam's arithmetic (no weight decay): IEEE-rounded
    division and square root, and the bias corrections as ``coef_ptr`` = (lr / (1 - beta1^t), sqrt(1 - beta2^t)),
    two device scalars computed in float64 (as torch's Adam does on the host), so a captured graph replays with the
    step it reads. Triton's default division and sqrt and an exp2 / log2 bias correction made graphed fits end
    ~50 % worse than torch's Adam on the H100 (docs/bench/motion.md, ninth session)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    step_size = tl.load(coef_ptr)
    bc2_sqrt = tl.load(coef_ptr + 1)
    g = tl.load(g_ptr + i, mask=ok, other=0.0)
    m = tl.load(m_ptr + i, mask=ok, other=0.0)
    m = m + (1.0 - beta1) * (g - m)  # lerp, as torch's exp_avg.lerp_
    v = beta2 * tl.load(v_ptr + i, mask=ok, other=0.0) + (1.0 - beta2) * (g * g)
    denom = tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps
    p = tl.load(p_ptr + i, mask=ok, other=0.0) - step_size * tl.div_rn(m, denom)
    tl.store(m_ptr + i, m, mask=ok)
    tl.store(v_ptr + i, v, mask=ok)
    tl.store(p_ptr + i, p, mask=ok)


class TableAdam:
    """Adam for a hash table on CUDA in one Triton kernel per step: reads the parameter, its gradient and both
    moments once and writes the parameter and moments once (torch's fused Adam over a 16.8 M-entry table ran at
    about a third of the H100's bandwidth, docs/bench/motion.md). The same update as ``torch.optim.Adam`` (no
    weight decay; bias corrections from the step count on the device, in float64), so a CUDA graph can replay it.
    Skips a step whose gradient is None."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, block: int = 2048):
        if param.dtype != torch.float32 or not param.is_contiguous():
            raise ValueError("TableAdam takes a contiguous float32 table")
        self.param = param
        self.lr, self.betas, self.eps, self.block = float(lr), (float(betas[0]), float(betas[1])), float(eps), block
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.step_count = torch.zeros((), dtype=torch.float32, device=param.device)
        self._betas = torch.tensor(self.betas, dtype=torch.float64, device=param.device)
        self._coef = torch.zeros(2, dtype=torch.float32, device=param.device)  # the kernel's step size, sqrt(bc2)

    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        self.step_count += 1
        bc = 1.0 - torch.pow(self._betas, self.step_count.double())
        self._coef.copy_(torch.stack((self.lr / bc[0], bc[1].sqrt())))
        n = self.param.numel()
        _adam_kernel[(triton.cdiv(n, self.block),)](
            self.param.detach(), grad.contiguous(), self.exp_avg, self.exp_avg_sq, self._coef, n,
            self.betas[0], self.betas[1], self.eps, BLOCK=self.block, num_warps=8)
        # the kernel writes through a pointer: bump the table's version as an in-place op would, so that what is
        # keyed on it (the encoding's float16 copy, ``TritonHashGrid._read_table``) is made anew. Without it the
        # eager warm-up steps before a fit's capture read the table of the first of them.
        torch.autograd.graph.increment_version(self.param)
