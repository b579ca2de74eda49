"""The global motion field F(x): R^3 -> R^3 (LIVINGWORLD.md stage 5): hash-grid encoding + small MLP.

    F(x) = v_scale * MLP(enc(x)),  MLP: Linear(L F, 64) - ReLU - Linear(64, 64) - ReLU - Linear(64, 3)

fitted to the aligned scene-flow samples (x_k, S_k) by minimising the Huber loss of (F(x_k) - S_k) / v_scale
with Adam (on CUDA fused, and each step captured once as a CUDA graph and replayed: the step is ~40 small
kernels whose launches, not the GPU, set its time). ``v_scale`` (the RMS sample speed of the first fit) keeps the
MLP's outputs near unit size. Each expansion calls ``fit`` again on the samples so far: parameters are kept
(warm start), so an update takes a fraction of the first fit's steps. Positions outside the field's box are
clamped to it (the encoding clamps).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.errors import InvalidInput, NotFound
from backend.fields import HashGridConfig, make_encoding
from backend.io.atomic import atomic_file

from .lift import SceneFlow


@dataclass(frozen=True)
class MotionFieldConfig:
    encoding: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64
    hidden_layers: int = 2
    lr: float = 1e-2
    steps: int = 400  # first fit
    update_steps: int = 150  # each later (warm-started) fit
    batch_size: int = 1 << 16
    huber_delta: float = 0.1  # in units of v_scale
    seed: int = 0
    cuda_graph: bool = True  # on CUDA, replay each training step as one captured CUDA graph (fused Adam)


@dataclass(frozen=True)
class FitReport:
    """loss: final mean Huber loss; rms_error: sqrt(mean ||F(x_k) - S_k||^2) over all samples (world units / frame);
    relative_error: rms_error / sqrt(mean ||S_k||^2); steps, samples: what was done."""

    loss: float
    rms_error: float
    relative_error: float
    steps: int
    samples: int


def bbox_for(points: np.ndarray, margin: float = 0.2) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Axis-aligned box around points (K, 3), grown by ``margin`` of its extent on each side (at least 1e-3)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = np.maximum(margin * (hi - lo), 1e-3)
    return tuple(float(v) for v in lo - pad), tuple(float(v) for v in hi + pad)


class MotionField(nn.Module):
    """Velocity (world units per frame) at world positions: ``field(x (N, 3)) -> (N, 3)``."""

    def __init__(self, config: MotionFieldConfig = MotionFieldConfig()):
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
            torch.manual_seed(config.seed)
            self.encoding = make_encoding(config.encoding)
            layers: list[nn.Module] = []
            width = self.encoding.output_dim
            for _ in range(config.hidden_layers):
                layers += [nn.Linear(width, config.hidden), nn.ReLU()]
                width = config.hidden
            layers.append(nn.Linear(width, 3))
            self.mlp = nn.Sequential(*layers)
        self.register_buffer("velocity_scale", torch.tensor(0.0))

    @property
    def fitted(self) -> bool:
        return float(self.velocity_scale) > 0

    @property
    def device(self) -> torch.device:
        return self.encoding.table.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoding(x)) * self.velocity_scale

    def velocity(self, points: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
        """F at numpy points (K, 3) -> (K, 3) float64, evaluated in chunks without gradients."""
        out = []
        with torch.no_grad():
            for i in range(0, len(points), chunk):
                x = torch.as_tensor(np.asarray(points[i:i + chunk], np.float32), device=self.device)
                out.append(self(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 3))

    def fit(self, samples: SceneFlow, steps: int | None = None) -> FitReport:
        """Regress F(x_k) to S_k (module docstring); warm-starts from the current parameters."""
        if len(samples) == 0:
            raise InvalidInput("no motion samples to fit the motion field to")
        cfg = self.config
        steps = steps if steps is not None else (cfg.update_steps if self.fitted else cfg.steps)
        dev = self.device
        x = torch.as_tensor(samples.points, dtype=torch.float32, device=dev)
        s = torch.as_tensor(samples.vectors, dtype=torch.float32, device=dev)
        if not self.fitted:
            rms = float(s.square().sum(dim=1).mean().sqrt())
            self.velocity_scale.fill_(rms if rms > 0 else 1.0)
        scale = self.velocity_scale
        target = s / scale
        graphed = dev.type == "cuda" and self.config.cuda_graph
        opt = torch.optim.Adam([{"params": self.encoding.parameters(), "eps": 1e-15},
                                {"params": self.mlp.parameters(), "weight_decay": 1e-6}], lr=cfg.lr,
                               betas=(0.9, 0.99), **({"fused": True, "capturable": True} if graphed else {}))
        gen = torch.Generator(device=dev).manual_seed(cfg.seed + int(steps))
        n = len(samples)
        bs = min(cfg.batch_size, n)
        loss_fn = nn.HuberLoss(delta=cfg.huber_delta)
        # the batch's sample indices (a static buffer for the graph); every sample each step when the batch holds all
        idx = torch.arange(bs, device=dev)

        def step() -> torch.Tensor:
            pred = self.mlp(self.encoding(x[idx]))
            loss = loss_fn(pred, target[idx])
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
            return loss

        def draw() -> None:
            if bs < n:
                idx.copy_(torch.randint(0, n, (bs,), device=dev, generator=gen))

        loss = torch.zeros((), device=dev)
        eager = min(steps, 3) if graphed else steps  # a graph is captured after a few eager steps (warm-up)
        side = self._side_stream() if graphed else None
        if graphed:
            side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side) if graphed else contextlib.nullcontext():
            for _ in range(eager):
                draw()
                loss = step()
        if graphed and steps > eager:
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):  # the stream the warm-up ran on (autograd's streams match)
                loss = step()
            for _ in range(steps - eager):
                draw()
                graph.replay()
        with torch.no_grad():
            err = torch.cat([(self(x[i:i + (1 << 20)]) - s[i:i + (1 << 20)]) for i in range(0, n, 1 << 20)])
            rms_err = float(err.square().sum(dim=1).mean().sqrt())
            rms_s = float(s.square().sum(dim=1).mean().sqrt())
        return FitReport(loss=float(loss.detach()), rms_error=rms_err, relative_error=rms_err / max(rms_s, 1e-30),
                         steps=int(steps), samples=n)

    def _side_stream(self) -> torch.cuda.Stream:
        """One CUDA stream per field for the warm-up and capture of every fit (see ``fit``)."""
        if getattr(self, "_stream", None) is None or self._stream.device != self.device:
            self._stream = torch.cuda.Stream(self.device)
        return self._stream

    # ---------------------------------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``{"config", "state_dict"}`` with ``torch.save``, atomically."""
        buf = io.BytesIO()
        torch.save({"config": asdict(self.config), "state_dict": {k: v.detach().cpu() for k, v in
                                                                   self.state_dict().items()}}, buf)
        with atomic_file(path) as f:
            f.write(buf.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", backend: str = "auto") -> MotionField:
        """Read a field written by ``save``; ``backend`` picks the encoding implementation on this machine."""
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"no motion field at {path}; run a motion update first")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cfg = dict(blob["config"])
        enc = dict(cfg.pop("encoding"))
        enc["bbox_min"], enc["bbox_max"] = tuple(enc["bbox_min"]), tuple(enc["bbox_max"])
        dev = torch.device(device)
        enc["backend"] = backend if backend != "auto" or dev.type == "cuda" else "torch"
        config = MotionFieldConfig(encoding=HashGridConfig(**enc), **cfg)
        model = cls(config)
        model.load_state_dict(blob["state_dict"])
        return model.to(dev)


def new_motion_field(points: np.ndarray, config: MotionFieldConfig = MotionFieldConfig(),
                     device: str | torch.device = "cpu") -> MotionField:
    """A field whose box covers ``points`` (K, 3) (e.g. all Gaussians of the world) with a 20% margin."""
    if len(points) == 0 or not np.all(np.isfinite(points)):
        raise InvalidInput("the motion field's box needs finite world points")
    lo, hi = bbox_for(np.asarray(points, np.float64))
    dev = torch.device(device)
    enc = config.encoding
    if enc.backend == "auto" and dev.type != "cuda":
        enc = replace(enc, backend="torch")
    enc = replace(enc, bbox_min=lo, bbox_max=hi)
    return MotionField(replace(config, encoding=enc)).to(dev)


def field_fit_error(field: MotionField, points: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(mean angular error in degrees, relative RMS error) of F against known velocities ``truth`` (K, 3)."""
    v = field.velocity(points)
    cos = np.sum(v * truth, 1) / np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(truth, axis=1), 1e-30)
    ang = float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
    rel = math.sqrt(float(np.mean(np.sum((v - truth) ** 2, 1))) / max(float(np.mean(np.sum(truth**2, 1))), 1e-30))
    return ang, rel
