"""``gather_frame`` in one Triton kernel (CUDA): interpolate the dynamic channels between two frames, encode them
(log scale, logit opacity, SH DC) and write them into the base tensors. The torch path in ``frames`` launches ~10
small kernels per frame, whose launch time (not their memory traffic) set the cost of a 4D frame's gather; this
is one launch. Same arithmetic as ``frames.gather_frame``: ``torch.lerp``'s two-sided formula, nlerp on the
shorter arc, the opacity logit in float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..gaussians import SH_C0
from ..io.decoded import OPACITY_EPS

BLOCK = 256
CHANNELS = {"position": 3, "rotation": 4, "scale": 3, "opacity": 1, "color": 3}
OPACITY_EPS_C = tl.constexpr(OPACITY_EPS)
SH_C0_C = tl.constexpr(SH_C0)


@triton.jit
def _lerp(a, b, w, LERP: tl.constexpr):
    """torch.lerp(a, b, w): a + w (b - a) for w < 0.5, else b - (b - a) (1 - w)."""
    if LERP:
        d = b - a
        return tl.where(w < 0.5, a + w * d, b - d * (1.0 - w))
    else:
        return a


@triton.jit
def _gather_frame(idx_ptr, M, w,
                  pa_ptr, pb_ptr, means_ptr,
                  ra_ptr, rb_ptr, quats_ptr,
                  sa_ptr, sb_ptr, log_scales_ptr,
                  oa_ptr, ob_ptr, logits_ptr,
                  ca_ptr, cb_ptr, sh_ptr, sh_row,
                  HAS_ROT: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_OPACITY: tl.constexpr,
                  HAS_COLOR: tl.constexpr, LERP: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = m < M
    row = tl.load(idx_ptr + m, mask=ok, other=0).to(tl.int64)
    for d in tl.static_range(3):
        a = tl.load(pa_ptr + m * 3 + d, mask=ok)
        b = tl.load(pb_ptr + m * 3 + d, mask=ok) if LERP else a
        tl.store(means_ptr + row * 3 + d, _lerp(a, b, w, LERP), mask=ok)
    if HAS_ROT:
        qa0 = tl.load(ra_ptr + m * 4 + 0, mask=ok)
        qa1 = tl.load(ra_ptr + m * 4 + 1, mask=ok)
        qa2 = tl.load(ra_ptr + m * 4 + 2, mask=ok)
        qa3 = tl.load(ra_ptr + m * 4 + 3, mask=ok)
        if LERP:
            qb0 = tl.load(rb_ptr + m * 4 + 0, mask=ok)
            qb1 = tl.load(rb_ptr + m * 4 + 1, mask=ok)
            qb2 = tl.load(rb_ptr + m * 4 + 2, mask=ok)
            qb3 = tl.load(rb_ptr + m * 4 + 3, mask=ok)
            sgn = tl.where(qa0 * qb0 + qa1 * qb1 + qa2 * qb2 + qa3 * qb3 < 0, -1.0, 1.0)
            q0 = (1.0 - w) * qa0 + w * (sgn * qb0)
            q1 = (1.0 - w) * qa1 + w * (sgn * qb1)
            q2 = (1.0 - w) * qa2 + w * (sgn * qb2)
            q3 = (1.0 - w) * qa3 + w * (sgn * qb3)
            inv = 1.0 / tl.maximum(tl.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3), 1e-12)
            qa0, qa1, qa2, qa3 = q0 * inv, q1 * inv, q2 * inv, q3 * inv
        tl.store(quats_ptr + row * 4 + 0, qa0, mask=ok)
        tl.store(quats_ptr + row * 4 + 1, qa1, mask=ok)
        tl.store(quats_ptr + row * 4 + 2, qa2, mask=ok)
        tl.store(quats_ptr + row * 4 + 3, qa3, mask=ok)
    if HAS_SCALE:
        for d in tl.static_range(3):
            a = tl.load(sa_ptr + m * 3 + d, mask=ok, other=1.0)
            b = tl.load(sb_ptr + m * 3 + d, mask=ok, other=1.0) if LERP else a
            s = tl.maximum(_lerp(a, b, w, LERP), 1.1754943508222875e-38)  # float32's smallest normal ("tiny")
            tl.store(log_scales_ptr + row * 3 + d, tl.log(s), mask=ok)
    if HAS_OPACITY:
        a = tl.load(oa_ptr + m, mask=ok, other=0.5)
        b = tl.load(ob_ptr + m, mask=ok, other=0.5) if LERP else a
        o = tl.minimum(tl.maximum(_lerp(a, b, w, LERP).to(tl.float64), OPACITY_EPS_C), 1.0 - OPACITY_EPS_C)
        tl.store(logits_ptr + row, tl.log(o / (1.0 - o)).to(tl.float32), mask=ok)
    if HAS_COLOR:
        for d in tl.static_range(3):
            a = tl.load(ca_ptr + m * 3 + d, mask=ok)
            b = tl.load(cb_ptr + m * 3 + d, mask=ok) if LERP else a
            tl.store(sh_ptr + row * sh_row + d, (_lerp(a, b, w, LERP) - 0.5) / SH_C0_C, mask=ok)


def supported(base, channels: dict[str, torch.Tensor]) -> bool:
    """Whether the kernel can write these channels into ``base``: float32, contiguous, known channel names."""
    tensors = [base.means, base.quats, base.log_scales, base.opacity_logits, base.sh, *channels.values()]
    return (set(channels) <= set(CHANNELS) and "position" in channels
            and all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors))


def gather_frame(base, index: torch.Tensor, channels: dict[str, torch.Tensor], a: int, b: int, w: float):
    """Write the channels (T, M, ...) at frame a, blended towards frame b by w, into ``base`` (one launch)."""
    m = int(index.shape[0])
    if m == 0:
        return base
    lerp = w != 0.0

    def pair(name):
        if name not in channels:
            return base.means, base.means  # unused pointers (the channel's flag is off)
        arr = channels[name]
        return arr[a], arr[b] if lerp else arr[a]

    pa, pb = pair("position")
    ra, rb = pair("rotation")
    sa, sb = pair("scale")
    oa, ob = pair("opacity")
    ca, cb = pair("color")
    _gather_frame[(triton.cdiv(m, BLOCK),)](
        index, m, float(w), pa, pb, base.means, ra, rb, base.quats, sa, sb, base.log_scales, oa, ob,
        base.opacity_logits, ca, cb, base.sh, base.sh.shape[1] * 3,
        HAS_ROT="rotation" in channels, HAS_SCALE="scale" in channels, HAS_OPACITY="opacity" in channels,
        HAS_COLOR="color" in channels, LERP=lerp, BLOCK=BLOCK)
    return base
