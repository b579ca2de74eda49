"""Running a model's forward pass without Python launch overhead on CUDA: one CUDA graph per input shape, or
``torch.compile`` (inductor kernels replayed as CUDA graphs), or both: the graphs at once and the compiled kernels
once a background thread has compiled them ("auto").

A diffusion UNet launches ~1,500 small kernels per call; eager PyTorch spends more time queueing them than the
GPU spends running them at 512 px. ``GraphedForward`` captures the unchanged module once per input shape and
replays the graph: the same kernels, so the same numbers as eager, at the GPU's own speed. ``compiled`` wraps
``torch.compile(mode="reduce-overhead")`` (fused kernels, CUDA-graph replay) behind the same call, at the price of
a compile on the first call of each shape (reported by the bench as the first-call cost).

``BackgroundCompile`` is the "auto" mode: a compile takes a minute or two, longer than a user waits for an
expansion, so the first calls run the eager kernels from CUDA graphs while a daemon thread compiles each wrapped
forward (``torch.compile``, inductor's default mode: no CUDA graphs of its own) on example inputs of the shapes
the first call used, checks the compiled output against the eager one on them, and hands it over. The calling
thread adopts it at its next call (``poll``): the UNet's graphs are captured again around the compiled forward,
under ``fail_on_recompile`` (a shape the compile did not see never compiles inside a job: it stays eager, with a
warning). Nothing of the compile runs in the calling thread.

All keep the module's signature: they replace ``module.forward`` on the instance, so ``module.config``,
``module.dtype`` and hooks-free callers (a diffusers pipeline) see the same object. Calls with shapes or
arguments they were not built for run eagerly.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch

Mode = Literal["auto", "off", "graphs", "inductor"]
MODES = ("auto", "off", "graphs", "inductor")


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
        self.fn = self.eager  # what the graphs capture: the eager forward, or a compiled one (``adopt``)
        self.example: tuple | None = None  # the first captured call's inputs, as ``spec``s
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
                self.fn(s_sample, s_t, encoder_hidden_states=s_cond, return_dict=False)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the background compile's thread may use CUDA while this thread captures
        with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self.fn(s_sample, s_t, encoder_hidden_states=s_cond, return_dict=False)[0]
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
        if self.example is None:
            self.example = (spec(sample), spec(t), spec(encoder_hidden_states))
        if key not in self.graphs and self.fn is not self.eager:
            try:  # the compiled forward, captured: its kernels are built (``BackgroundCompile``), never here
                with torch.compiler.set_stance("fail_on_recompile"):
                    self.graphs[key] = self._capture(sample, t, encoder_hidden_states)
            except Exception as exc:  # noqa: BLE001 - a shape the compile did not see: the eager kernels
                warnings.warn(f"the compiled {type(self.module).__name__} cannot run this call "
                              f"({type(exc).__name__}); replaying the eager kernels", RuntimeWarning, stacklevel=2)
                torch.cuda.synchronize(sample.device)
                self.fn = self.eager
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


    def adopt(self, fn: Callable) -> None:
        """Capture ``fn`` (a compiled forward, same signature) from the next call on instead of the eager one."""
        self.fn = fn
        self.graphs.clear()

    def example_call(self) -> tuple[tuple, dict]:
        """(args, kwargs) like the first captured call, with fresh values (``BackgroundCompile``)."""
        sample, t, cond = (make(s) for s in self.example)
        return (sample, t), {"encoder_hidden_states": cond, "return_dict": False}


class GraphedFunction:
    """``fn(x)`` (one CUDA tensor in, one tensor out, no gradient) replayed from a CUDA graph per input shape and
    dtype: the same kernels as calling it, without launching them one by one from Python (a ViT-L depth model
    is ~600 small launches). The output is a copy (the next replay overwrites the graph's). ``clear()`` drops
    the graphs (after the function's weights change, e.g. a dtype switch). If capturing fails it stays eager."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], warmup: int = 2):
        self.fn = fn
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.failed: str | None = None

    def clear(self) -> None:
        self.graphs.clear()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda or torch.is_grad_enabled() or self.failed:
            return self.fn(x)
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            try:
                static = x.clone()
                side = torch.cuda.Stream(x.device)
                side.wait_stream(torch.cuda.current_stream(x.device))
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        self.fn(static)
                    graph = torch.cuda.CUDAGraph()
                    graph.capture_begin(capture_error_mode="thread_local")
                    try:
                        out = self.fn(static)
                    finally:
                        graph.capture_end()
                torch.cuda.current_stream(x.device).wait_stream(side)
                self.graphs[key] = (graph, static, out)
            except RuntimeError as exc:
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                warnings.warn(f"CUDA graph capture failed, running eagerly: {self.failed}", RuntimeWarning,
                              stacklevel=2)
                torch.cuda.synchronize(x.device)
                return self.fn(x)
        graph, static, out = self.graphs[key]
        static.copy_(x)
        graph.replay()
        return out.clone()


def spec(x: torch.Tensor) -> tuple:
    """What ``make`` needs to build a tensor like ``x``: shape, strides, dtype, device."""
    return tuple(x.shape), tuple(x.stride()), x.dtype, x.device


def make(s: tuple) -> torch.Tensor:
    """A tensor of ``spec`` ``s`` holding standard-normal values (integers: 500, a mid-schedule timestep)."""
    shape, stride, dtype, device = s
    x = torch.empty_strided(shape, stride, dtype=dtype, device=device)
    return x.normal_() if dtype.is_floating_point else x.fill_(500)


class SwappingForward:
    """``module.forward`` that runs eagerly until ``adopt`` gives it a compiled forward (the VAE's encoder and
    decoder: one tensor in, one out, big kernels: no graphs needed). Records its first call's input (``example``)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.eager = module.forward
        self.fn = self.eager
        self.example: tuple | None = None
        self.failed: str | None = None

    def __call__(self, sample, *args, **kwargs):
        if torch.is_grad_enabled() or args or any(v is not None for v in kwargs.values()):
            return self.eager(sample, *args, **kwargs)
        if self.example is None:
            self.example = (spec(sample),)
        if self.fn is self.eager:
            return self.eager(sample)
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                return self.fn(sample)
        except Exception as exc:  # noqa: BLE001 - an input the compile did not see: eager from now on
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"the compiled {type(self.module).__name__} cannot run this call ({self.failed}); "
                          "running it eagerly", RuntimeWarning, stacklevel=2)
            self.fn = self.eager
            return self.eager(sample)

    def adopt(self, fn: Callable) -> None:
        self.fn = fn

    def example_call(self) -> tuple[tuple, dict]:
        return (make(self.example[0]),), {}


class BackgroundCompile:
    """Compiles the wrappers' eager forwards (``GraphedForward`` / ``SwappingForward``, each once called, so its
    ``example`` is known) with ``torch.compile`` in one daemon thread, one after the other; each compiled forward
    is run twice on a fresh example and compared with the eager forward on it (mean |difference| under 1 % of
    the mean |output|, all finite) before ``poll`` may hand it over. ``state``: "compiling", "ready" (done,
    not yet adopted), "adopted" or "failed: why"; ``compile_s`` the compile's wall time."""

    TOLERANCE = 0.01

    def __init__(self, wrappers: list, backend: str = "inductor"):
        self.wrappers = list(wrappers)
        self.backend = backend  # torch.compile's backend ("eager" traces only: the tests' quick compile)
        self.compiled: list[Callable | None] = [None] * len(self.wrappers)
        self.state = "compiling"
        self.compile_s = 0.0
        self.errors: list[str] = []
        self._adopted = False
        self.thread = threading.Thread(target=self._run, name="lw-compile", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        for i, w in enumerate(self.wrappers):
            try:
                fn = torch.compile(w.eager, backend=self.backend, dynamic=False)
                with torch.no_grad():
                    args, kwargs = w.example_call()
                    fn(*args, **kwargs)  # compiles
                    got = _first_tensor(fn(*args, **kwargs))
                    want = _first_tensor(w.eager(*args, **kwargs))
                    if got.is_cuda:
                        torch.cuda.synchronize(got.device)
                diff = float((got.float() - want.float()).abs().mean())
                scale = float(want.float().abs().mean())
                if not bool(torch.isfinite(got).all()) or diff > self.TOLERANCE * max(scale, 1e-6):
                    raise RuntimeError(f"compiled output differs from eager: mean |diff| {diff:.3g} against mean "
                                       f"|output| {scale:.3g}")
                self.compiled[i] = fn
            except Exception as exc:  # noqa: BLE001 - reported; that module stays eager
                self.errors.append(f"{type(w.module).__name__}: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}")
        self.compile_s = time.perf_counter() - start
        self.state = "ready" if not self.errors else f"failed: {'; '.join(self.errors)}"

    def poll(self) -> str:
        """In the calling thread, between calls: once the compile has ended, hand each compiled forward that
        passed its check to its wrapper (those that failed stay as they were; ``state`` says why)."""
        if self.thread.is_alive() or self._adopted:
            return self.state
        for w, fn in zip(self.wrappers, self.compiled):
            if fn is not None:
                w.adopt(fn)
        self._adopted = True
        if self.state == "ready":
            self.state = "adopted"
        return self.state

    def wait(self, timeout: float | None = None) -> str:
        """Block until the compile ends (benchmarks; a job never waits for it)."""
        self.thread.join(timeout)
        return self.state


def _first_tensor(value) -> torch.Tensor:
    """The first tensor of a forward's output (a tensor, a tuple or a diffusers output)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return _first_tensor(value[0])
    return _first_tensor(next(iter(value.values())))


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
    """Replace ``module.forward`` on the instance per ``mode`` ("off": nothing; "auto": the wrapper that a
    ``BackgroundCompile`` can hand a compiled forward to). Returns the wrapper (its ``capture_s`` / ``compile_s``
    say what the set-up cost) or None. ``timestep_arg``: the second positional
    argument is a diffusion timestep (the UNet); False for modules that take one tensor (VAE parts)."""
    if mode == "off":
        return None
    if mode == "auto":  # graphs for the UNet, eager VAE parts; both take compiled forwards later
        wrapper = GraphedForward(module) if timestep_arg else SwappingForward(module)
    elif mode == "graphs":
        if not timestep_arg:
            raise ValueError("GraphedForward is built for the UNet's (sample, timestep, conditioning) call")
        wrapper: Any = GraphedForward(module)
    elif mode == "inductor":
        wrapper = CompiledForward(module, timestep_arg=timestep_arg)
    else:
        raise ValueError(f"unknown acceleration mode {mode!r}; choose one of {', '.join(MODES)}")
    module.forward = wrapper
    return wrapper
