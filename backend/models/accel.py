"""Running a model's forward pass without Python launch overhead on CUDA: one CUDA graph per input shape, or
``torch.compile`` (inductor kernels replayed as CUDA graphs).

A diffusion UNet launches ~1,500 small kernels per call; eager PyTorch spends more time queueing them than the
GPU spends running them at 512 px. ``GraphedForward`` captures the unchanged module once per input shape and
replays the graph: the same kernels, so the same numbers as eager, at the GPU's own speed. ``compiled`` wraps
``torch.compile(mode="reduce-overhead")`` (fused kernels, CUDA-graph replay) behind the same call, at the price of
a compile on the first call of each shape (reported by the bench as the first-call cost).

Both keep the module's signature: they replace ``module.forward`` on the instance, so ``module.config``,
``module.dtype`` and hooks-free callers (a diffusers pipeline) see the same object. Calls with shapes or
arguments they were not built for run eagerly.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch

Mode = Literal["off", "graphs", "inductor"]
MODES = ("off", "graphs", "inductor")


def _timestep_on(device: torch.device, timestep, dtype: torch.dtype) -> torch.Tensor:
    """A 0-d ``dtype`` tensor on ``device`` holding ``timestep`` (a number, or a 0-d/1-element tensor); a host
    value is written by a fill kernel (no host wait), a device value is copied on the device."""
    if isinstance(timestep, torch.Tensor) and timestep.device.type == device.type:
        return timestep.reshape(()).to(dtype)
    return torch.full((), float(timestep) if dtype.is_floating_point else int(timestep), dtype=dtype, device=device)


class GraphedForward:
    """``module.forward`` replayed from CUDA graphs, one per (sample shape, dtype, conditioning shape).

    Built for diffusers' ``UNet2DConditionModel.forward(sample, timestep, encoder_hidden_states, ...,
    return_dict)``: the sample, the timestep (as a 0-d tensor of the first call's type) and the conditioning are
    copied into the graph's input buffers, the graph is replayed and a copy of its output returned. Any other
    keyword argument that is not None runs the eager forward. ``capture_s`` accumulates the warm-up + capture time.
    """

    def __init__(self, module: torch.nn.Module, warmup: int = 2):
        self.module = module
        self.eager = module.forward
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor, Any]] = {}
        self.capture_s = 0.0
        self.replays = 0
        self.failed: str | None = None  # why capturing failed (the forward then stays eager)

    def _capture(self, sample: torch.Tensor, t: torch.Tensor, cond: torch.Tensor):
        start = time.perf_counter()
        device = sample.device
        s_sample, s_t, s_cond = sample.clone(), t.clone(), cond.clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(self.warmup):  # lazy initialisation (cuDNN plans, workspaces) stays out of the graph
                self.eager(s_sample, s_t, encoder_hidden_states=s_cond, return_dict=False)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            out = self.eager(s_sample, s_t, encoder_hidden_states=s_cond, return_dict=False)[0]
        torch.cuda.synchronize(device)
        self.capture_s += time.perf_counter() - start
        return graph, s_sample, s_t, s_cond, out

    def __call__(self, sample, timestep, encoder_hidden_states=None, *args, return_dict: bool = True, **kwargs):
        extra = [v for v in kwargs.values() if v is not None]
        if (args or extra or encoder_hidden_states is None or not sample.is_cuda or torch.is_grad_enabled()
                or self.failed):
            return self.eager(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        t_dtype = timestep.dtype if isinstance(timestep, torch.Tensor) else torch.int64
        key = (tuple(sample.shape), sample.dtype, tuple(encoder_hidden_states.shape), encoder_hidden_states.dtype,
               t_dtype)
        t = _timestep_on(sample.device, timestep, t_dtype)
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(sample, t, encoder_hidden_states)
            except RuntimeError as exc:  # something in the forward cannot be captured: stay correct, eagerly
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                warnings.warn(f"CUDA graph capture of {type(self.module).__name__} failed, running it eagerly: "
                              f"{self.failed}", RuntimeWarning, stacklevel=2)
                torch.cuda.synchronize(sample.device)
                return self.eager(sample, timestep, encoder_hidden_states, return_dict=return_dict, **kwargs)
        graph, s_sample, s_t, s_cond, out = self.graphs[key]
        s_sample.copy_(sample)
        s_t.copy_(t)
        s_cond.copy_(encoder_hidden_states)
        graph.replay()
        self.replays += 1
        result = out.clone()  # the next replay overwrites ``out``
        if return_dict:
            return _output_like(self.module, result)
        return (result,)


def _output_like(module: torch.nn.Module, sample: torch.Tensor):
    """The ``return_dict=True`` form of a diffusers UNet's output."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    return UNet2DConditionOutput(sample=sample)


class CompiledForward:
    """``torch.compile(module.forward, mode="reduce-overhead")`` behind the eager signature: timesteps go to the
    device as a 0-d tensor (no host input, which would stop the CUDA graphs), outputs are copied before the next
    replay can overwrite them, and ``compile_s`` holds the time of the first call of each shape."""

    def __init__(self, module: torch.nn.Module, timestep_arg: bool = True):
        self.module = module
        self.eager = module.forward
        self.fn = torch.compile(self.eager, mode="reduce-overhead", dynamic=False)
        self.timestep_arg = timestep_arg
        self.shapes: set[tuple] = set()
        self.compile_s = 0.0
        self.failed: str | None = None

    def __call__(self, sample, *args, **kwargs):
        if not sample.is_cuda or torch.is_grad_enabled():
            return self.eager(sample, *args, **kwargs)
        if self.timestep_arg:
            args = list(args)
            if args:
                t = args[0]
                args[0] = _timestep_on(sample.device, t, t.dtype if isinstance(t, torch.Tensor) else torch.int64)
            elif "timestep" in kwargs:
                t = kwargs["timestep"]
                kwargs["timestep"] = _timestep_on(sample.device, t,
                                                  t.dtype if isinstance(t, torch.Tensor) else torch.int64)
        key = (tuple(sample.shape), sample.dtype)
        first = key not in self.shapes
        start = time.perf_counter()
        if self.failed:
            return self.eager(sample, *args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        try:
            out = _clone_tensors(self.fn(sample, *args, **kwargs))
        except Exception as exc:  # any compiler failure on the first call: warn once, then run eagerly
            if not first:
                raise
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"torch.compile of {type(self.module).__name__} failed, running it eagerly: {self.failed}",
                          RuntimeWarning, stacklevel=2)
            return self.eager(sample, *args, **kwargs)
        if first:
            torch.cuda.synchronize(sample.device)
            self.compile_s += time.perf_counter() - start
            self.shapes.add(key)
        return out


def _clone_tensors(value):
    """``value`` with every tensor in it (tuples, lists, dataclass-like diffusers outputs) cloned."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_clone_tensors(v) for v in value)
    if isinstance(value, list):
        return [_clone_tensors(v) for v in value]
    if hasattr(value, "keys") and hasattr(value, "__setitem__"):  # diffusers BaseOutput (an OrderedDict)
        for k in list(value.keys()):
            value[k] = _clone_tensors(value[k])
        return value
    return value


def install(module: torch.nn.Module, mode: Mode, *, timestep_arg: bool = True) -> Callable | None:
    """Replace ``module.forward`` on the instance per ``mode`` ("off": nothing). Returns the wrapper (its
    ``capture_s`` / ``compile_s`` say what the set-up cost) or None. ``timestep_arg``: the second positional
    argument is a diffusion timestep (the UNet); False for modules that take one tensor (VAE parts)."""
    if mode == "off":
        return None
    if mode == "graphs":
        if not timestep_arg:
            raise ValueError("GraphedForward is built for the UNet's (sample, timestep, conditioning) call")
        wrapper: Any = GraphedForward(module)
    elif mode == "inductor":
        wrapper = CompiledForward(module, timestep_arg=timestep_arg)
    else:
        raise ValueError(f"unknown acceleration mode {mode!r}; choose one of {', '.join(MODES)}")
    module.forward = wrapper
    return wrapper
