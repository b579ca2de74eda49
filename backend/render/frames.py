"""4D frames on the render device: a ``.lw4d`` sequence's dynamic channels written into base Gaussians.

``.lw4d`` stores DECODED values of the M dynamic Gaussians (docs/ARCHITECTURE.md); the rasterizer takes raw
ones. Writing a frame converts on the device: log_scale = log(max(s, tiny)), opacity_logit = log(a / (1 - a))
with a clipped to [eps, 1 - eps], sh[:, 0] = (rgb - 0.5) / SH_C0, quaternions as they are (unit wxyz).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..gaussians import SH_C0, Gaussians
from ..io.decoded import OPACITY_EPS
from ..io.lw4d import Sequence, frame_weights
from ..triton_env import interpreting


@dataclass
class DeviceSequence:
    """A sequence whose channels live on one device, plus the frame buffers ``gather_frame`` overwrites.

    base: all N Gaussians (torch, raw parameters) — the buffers; dynamic_index (M,) int64; channels[name]
    (T, M, ...) decoded float values; frame_count T; loop as in the manifest (``frame_weights`` reads both).
    """

    base: Gaussians
    dynamic_index: torch.Tensor
    channels: dict[str, torch.Tensor]
    frame_count: int
    loop: bool


def sequence_to_device(seq: Sequence, device, dtype=torch.float32) -> DeviceSequence:
    """Upload a sequence (all T frames of every channel: T x M x 14 floats at most) to ``device``."""
    return DeviceSequence(
        base=seq.base.to_torch(device, dtype),
        dynamic_index=torch.as_tensor(np.asarray(seq.dynamic_index), device=device),
        channels={k: torch.from_numpy(np.array(v, dtype=np.float32)).to(device=device, dtype=dtype)
                  for k, v in seq.channels.items()},
        frame_count=seq.frame_count, loop=seq.loop)


def write_dynamic(base: Gaussians, index: torch.Tensor, position: torch.Tensor, opacity: torch.Tensor | None = None,
                  rotation: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                  color: torch.Tensor | None = None) -> Gaussians:
    """Write decoded values of the Gaussians ``index`` (M,) into ``base``'s tensors in place (encoding them, see
    the module docstring) and return ``base``. position (M, 3), opacity (M,), rotation (M, 4), scale (M, 3),
    color (M, 3); a channel given as None keeps the base values."""
    base.means.index_copy_(0, index, position.to(base.means.dtype))
    if rotation is not None:
        base.quats.index_copy_(0, index, rotation.to(base.quats.dtype))
    if scale is not None:
        tiny = torch.finfo(torch.float32).tiny
        base.log_scales.index_copy_(0, index, scale.to(base.log_scales.dtype).clamp_min(tiny).log())
    if opacity is not None:
        a = opacity.to(torch.float64).clamp(OPACITY_EPS, 1.0 - OPACITY_EPS)
        base.opacity_logits.index_copy_(0, index, torch.log(a / (1.0 - a)).to(base.opacity_logits.dtype))
    if color is not None:
        base.sh[:, 0].index_copy_(0, index, ((color - 0.5) / SH_C0).to(base.sh.dtype))
    return base


# The fused Triton gather (``frames_triton``) is off by default: on an H100 (bench/render_gpu.py in
# bench/gpu_session.sh, 2026-12-07, 1M Gaussians all dynamic) it took 0.39 ms against 0.24 ms for the torch code,
# and the whole 4D frame moved by -0.21 .. +0.22 ms (no consistent gain). It stays, tested, for a later tuning.
FUSED_GATHER = False


def gather_frame(dseq: DeviceSequence, t: float) -> Gaussians:
    """The sequence at time ``t`` (in frames; fractional times interpolate like ``backend.io.lw4d.frame_gaussians``:
    linear, rotations by shortest-arc nlerp) written into ``dseq.base``, which is returned.

    The returned tensors are the sequence's buffers: the next call overwrites them. On CUDA (float32, contiguous
    tensors) with ``FUSED_GATHER`` on, or under Triton's CPU interpreter (tests), one fused Triton kernel does it
    all (``frames_triton``); otherwise the torch code below.
    """
    a, b, w = frame_weights(dseq, t)
    if (FUSED_GATHER and dseq.base.means.is_cuda) or interpreting():
        try:
            from . import frames_triton
        except ImportError:  # a CUDA torch without triton: the torch code
            frames_triton = None
        if frames_triton is not None and frames_triton.supported(dseq.base, dseq.channels):
            return frames_triton.gather_frame(dseq.base, dseq.dynamic_index, dseq.channels, a, b, w)
    return gather_frame_torch(dseq, a, b, w)


def gather_frame_torch(dseq: DeviceSequence, a: int, b: int, w: float) -> Gaussians:
    """``gather_frame`` between frames a and b (weight w) in torch operations, on any device."""
    values = {}
    for name, arr in dseq.channels.items():
        xa = arr[a]
        if w == 0.0:
            values[name] = xa
        elif name == "rotation":
            xb = arr[b]
            xb = torch.where((xa * xb).sum(-1, keepdim=True) < 0, -xb, xb)
            q = (1.0 - w) * xa + w * xb
            values[name] = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        else:
            values[name] = torch.lerp(xa, arr[b], w)
    return write_dynamic(dseq.base, dseq.dynamic_index, **values)
