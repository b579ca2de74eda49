"""The global motion field F(x): R^3 -> R^3 (LIVINGWORLD.md stage 5): hash-grid encoding + small MLP.

Domain. World positions are taken relative to a centre c (the world's first camera) and a radius r (the scale of
the nearest content) and contracted into a ball of radius 2 (the scene contraction of mip-NeRF 360):

    u = (x - c) / r,    y = u  if |u| <= 1,  else  (2 - 1 / |u|) u / |u|

so the field is defined on all of R^3: whatever an expansion adds, however far, lies in its domain, and the sky
at any distance lands on the ball's rim. The encoding's box is [-2.2, 2.2]^3 (``CONTRACTED_BOX``; y never gets
near its faces). Content far away moves by about the same angle per frame whatever its distance, so the velocity
is a gain g = max(|u|, 1) times a field of angular size:

    F(x) = v_scale g(x) MLP(enc(y)),   MLP: Linear(L F, H) - ReLU - ... - Linear(H, 3)

(clouds 50 km away drifting 50 m per frame and water 3 m away flowing 3 cm per frame are both ~1 in MLP units).

Fitting. F(x_k) is regressed to the aligned scene-flow samples S_k: the Huber loss of (F(x_k) - S_k) /
(v_scale g(x_k)) with Adam; ``v_scale`` is the RMS of S_k / g(x_k) at the first fit. Every later fit (each
motion update, each expansion that carries motion) starts from the current parameters on all samples so far and
trains the encoding and the MLP. The paper re-fits with the MLP frozen (``freeze_decoder``); measured here, a
decoder frozen after a first view of uniform drift cannot follow the next view's samples (relative error 0.21
after 80 frozen steps against 0.025 after 40 joint ones, docs/bench/motion.md), so it is not the default. On
CUDA Adam is fused (the hash table's in one Triton kernel, ``TableAdam``) and each step is captured once as a
CUDA graph and replayed (the step is ~40 small kernels whose launches, not the GPU, set its time).
``progress(done, total)`` is called after every step, so a job's cancel is seen within one step.

Sizes by device (``field_config_for``): on CUDA Instant-NGP's 16 levels (hashed beyond 2^19 rows) and 400 / 40
steps; on a CPU 5 dense levels (16^3 .. 64^3 rows, each level one ``grid_sample``), one hidden layer of 32 and
the paper's 100 steps (the CUDA size took ~20 minutes per update on a 2-core CPU). ``lattice`` samples F once on a
grid of the contracted domain for the bake on a CPU (one trilinear lookup per step instead of the encoding and
the MLP).

Fields saved before the contracted domain (``centre`` None) keep their box: y = x (clamped to it), g = 1.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.errors import InvalidInput, NotFound
from backend.fields import HashGridConfig, make_encoding
from backend.io.atomic import atomic_file

from .bake import Flow
from .lift import SceneFlow

CONTRACTED_BOX = 2.2  # half-size of the encoding's box around the contracted ball of radius 2

# the CUDA stream every fit's warm-up, capture and replays run on, one per device for the whole process. The
# allocator keeps freed memory per stream, so a reloaded field's fit (every motion update loads its field from the
# step's file) reuses what earlier fits freed instead of allocating on a stream of its own (on the H100 that moved
# the update by a few ms at most, docs/bench/motion.md). Fits take turns on it (the lock): a capture must see no
# other thread's work on its stream.
_FIT_STREAMS: dict[torch.device, torch.cuda.Stream] = {}
_FIT_LOCK = threading.Lock()
# devices on which a fit has been captured and replayed in this process: a later fit's one eager step creates its
# optimisers' state before the capture, while the kernels (compiled, autotuned) and the stream's library handles
# and workspaces already exist. The process's first fit takes three eager steps (``_run_steps``).
_WARM_DEVICES: set[torch.device] = set()


def _fit_stream(dev: torch.device) -> torch.cuda.Stream:
    """The process's fit stream on CUDA device ``dev`` (call with ``_FIT_LOCK`` held)."""
    dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    if dev not in _FIT_STREAMS:
        _FIT_STREAMS[dev] = torch.cuda.Stream(dev)
    return _FIT_STREAMS[dev]


@dataclass(frozen=True)
class MotionFieldConfig:
    encoding: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64
    hidden_layers: int = 2
    lr: float = 1e-2
    steps: int = 400  # first fit
    # each later (warm-started) fit: on the H100 bench 30-50 steps are nearest the truth where only the new view was
    # (held-out 1.38 deg at 40, 6.07 at 150: longer updates fit the outliers the alignment keeps), docs/bench/motion.md
    update_steps: int = 40
    freeze_decoder: bool = False  # later fits train the encoding only (the paper's re-fit; module docstring)
    batch_size: int = 1 << 16
    huber_delta: float = 0.1  # in units of v_scale
    seed: int = 0
    cuda_graph: bool = True  # on CUDA, replay each training step as one captured CUDA graph (fused Adam)
    graph_warmup: int | None = None  # eager steps before the capture; None: 3 on a device's first fit, then 1
    centre: tuple[float, float, float] | None = None  # c of the contraction (world); None: a saved box field
    radius: float = 1.0  # r of the contraction (world units)


@dataclass(frozen=True)
class FieldSize:
    """What a user sets of a field (the sidebar's and the job's options); None keeps the device's default."""

    levels: int | None = None  # hash-grid levels
    table_log2: int | None = None  # log2 rows per level
    steps: int | None = None  # Adam steps of the first fit
    update_steps: int | None = None  # Adam steps of each later fit


def field_config_for(device: str | torch.device, size: FieldSize = FieldSize()) -> MotionFieldConfig:
    """The default field of a device (module docstring): Instant-NGP's size on CUDA, a dense 5-level grid on a
    CPU; then whatever ``size`` sets."""
    if torch.device(device).type == "cuda":
        cfg = MotionFieldConfig()
    else:
        cfg = MotionFieldConfig(encoding=HashGridConfig(n_levels=5, log2_table_size=18, base_resolution=16,
                                                        per_level_scale=1.41, backend="torch"),
                                hidden=32, hidden_layers=1, steps=100, update_steps=100, batch_size=1 << 13)
    enc = replace(cfg.encoding, n_levels=size.levels or cfg.encoding.n_levels,
                  log2_table_size=size.table_log2 or cfg.encoding.log2_table_size)
    return replace(cfg, encoding=enc, steps=size.steps or cfg.steps, update_steps=size.update_steps or cfg.update_steps)


@dataclass(frozen=True)
class FitReport:
    """loss: final mean Huber loss; rms_error: sqrt(mean ||F(x_k) - S_k||^2) over all samples (world units / frame);
    relative_error: rms_error / sqrt(mean ||S_k||^2); steps, samples: what was done; decoder: what the MLP did."""

    loss: float
    rms_error: float
    relative_error: float
    steps: int
    samples: int
    decoder: str = "trained"  # "trained" or "frozen" (a later fit with ``freeze_decoder``)


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

    def inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoding coordinates y (N, 3) and velocity gain g (N, 1) of world positions x (N, 3) (module docstring)."""
        c = self.config
        if c.centre is None:
            return x, torch.ones_like(x[:, :1])
        u = (x - torch.as_tensor(c.centre, dtype=x.dtype, device=x.device)) * (1.0 / c.radius)
        n = torch.linalg.vector_norm(u, dim=1, keepdim=True)
        far = n > 1.0
        n = torch.where(far, n, torch.ones_like(n))
        return torch.where(far, (2.0 - 1.0 / n) * u / n, u), n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gain = self.inputs(x)
        return self.mlp(self.encoding(y)) * (self.velocity_scale * gain)

    def velocity(self, points: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
        """F at numpy points (K, 3) -> (K, 3) float64, evaluated in chunks without gradients."""
        out = []
        with torch.no_grad():
            for i in range(0, len(points), chunk):
                x = torch.as_tensor(np.asarray(points[i:i + chunk], np.float32), device=self.device)
                out.append(self(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 3))

    def fit(self, samples: SceneFlow, steps: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> FitReport:
        """Regress F(x_k) to S_k (module docstring), warm-started from the current parameters; with
        ``freeze_decoder`` a later fit trains the encoding only. ``progress(done, total)`` after every step."""
        if len(samples) == 0:
            raise InvalidInput("no motion samples to fit the motion field to")
        cfg = self.config
        first = not self.fitted
        steps = int(steps if steps is not None else (cfg.steps if first else cfg.update_steps))
        x = torch.as_tensor(samples.points, dtype=torch.float32, device=self.device)
        s = torch.as_tensor(samples.vectors, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            y, gain = self.inputs(x)
            target = s / gain
            if first:
                rms = float(target.square().sum(dim=1).mean().sqrt())
                self.velocity_scale.fill_(rms if rms > 0 else 1.0)
            target = target / self.velocity_scale
        decoder = first or not cfg.freeze_decoder
        loss = self._train(y, target, steps, decoder, lambda i: (progress or (lambda d, t: None))(i, steps))
        rel = self._relative_error(x, s)
        rms_s = float(s.square().sum(dim=1).mean().sqrt())
        return FitReport(loss=float(loss.detach()), rms_error=rel * rms_s, relative_error=rel, steps=steps,
                         samples=len(samples), decoder="trained" if decoder else "frozen")

    @torch.no_grad()
    def _relative_error(self, x: torch.Tensor, s: torch.Tensor, chunk: int = 1 << 20) -> float:
        """sqrt(mean ||F(x_k) - S_k||^2) / sqrt(mean ||S_k||^2)."""
        err = sum(float((self(x[i:i + chunk]) - s[i:i + chunk]).square().sum()) for i in range(0, len(x), chunk))
        return math.sqrt(err / max(float(s.square().sum()), 1e-30))

    def _train(self, y: torch.Tensor, target: torch.Tensor, steps: int, decoder: bool,
               report: Callable[[int], None]) -> torch.Tensor:
        """``steps`` Adam steps on the Huber loss of MLP(enc(y_k)) - target_k (the encoding, and the MLP when
        ``decoder``); ``report(done)`` after each. Returns the last loss."""
        cfg = self.config
        dev = self.device
        loss = torch.zeros((), device=dev)
        if steps <= 0:
            return loss
        graphed = dev.type == "cuda" and cfg.cuda_graph
        table = self.encoding.table
        table_opt = None
        if graphed and self.encoding.name == "triton":  # the table's Adam in one kernel (same update)
            from backend.fields.hashgrid_triton import TableAdam

            table_opt = TableAdam(table, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)
        groups = [] if table_opt is not None else [{"params": self.encoding.parameters(), "eps": 1e-15}]
        if decoder:
            groups.append({"params": self.mlp.parameters(), "weight_decay": 1e-6})
        opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.99),
                               **({"fused": True, "capturable": True} if graphed else {})) if groups else None
        gen = torch.Generator(device=dev).manual_seed(cfg.seed + steps)
        n = len(y)
        bs = min(cfg.batch_size, n)
        loss_fn = nn.HuberLoss(delta=cfg.huber_delta)
        # the batch's sample indices (a static buffer for the graph); every sample each step when the batch holds all
        idx = torch.arange(bs, device=dev)

        def step() -> torch.Tensor:
            pred = self.mlp(self.encoding(y[idx]))
            loss = loss_fn(pred, target[idx])
            # gradients set to None: backward's fresh tensors become .grad (no zeroing, no add into old ones);
            # in a captured graph they are the graph's own buffers, rewritten by every replay
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            table.grad = None
            loss.backward()
            if opt is not None:
                opt.step()
            if table_opt is not None:
                table_opt.step()
            return loss.detach()  # no autograd graph outlives its step (its nodes would pin the warm-up's stream)

        def draw() -> None:
            if bs < n:
                idx.copy_(torch.randint(0, n, (bs,), device=dev, generator=gen))

        if not graphed:
            return self._run_steps(step, draw, steps, steps, decoder, report, None, loss)
        with _FIT_LOCK:
            side = _fit_stream(dev)
            # a graph is captured after eager steps (warm-up): three on the device's first fit, then one (the
            # optimisers' state); ``graph_warmup`` sets it
            warm = cfg.graph_warmup if cfg.graph_warmup is not None else 1 if side.device in _WARM_DEVICES else 3
            warm = min(steps, max(1, warm))
            loss = self._run_steps(step, draw, steps, warm, decoder, report, side, loss)
            if steps > warm:  # captured and replayed
                _WARM_DEVICES.add(side.device)
            return loss

    def _run_steps(self, step, draw, steps: int, eager: int, decoder: bool, report: Callable[[int], None],
                   side: torch.cuda.Stream | None, loss: torch.Tensor) -> torch.Tensor:
        """``eager`` steps, then (``side`` given: CUDA) one captured and replayed for the rest, on ``side``."""
        graphed = side is not None
        dev = self.device
        if graphed:
            side.wait_stream(torch.cuda.current_stream(dev))
        self.mlp.requires_grad_(decoder)
        try:
            with torch.cuda.stream(side) if graphed else contextlib.nullcontext():
                for i in range(eager):
                    draw()
                    loss = step()
                    report(i + 1)
            if graphed and steps > eager:
                graph = torch.cuda.CUDAGraph()
                # captured on the stream the warm-up ran on (autograd's streams match), with capture_begin / end:
                # ``torch.cuda.graph`` would empty the allocator's cache first (later allocations cudaMalloc again)
                with torch.cuda.stream(side):
                    graph.capture_begin(capture_error_mode="thread_local")
                    try:
                        loss = step()
                    finally:
                        graph.capture_end()
                    for i in range(eager, steps):
                        draw()
                        graph.replay()
                        report(i + 1)
        finally:
            if graphed:  # the caller's stream sees every step
                torch.cuda.current_stream(dev).wait_stream(side)
            self.mlp.requires_grad_(True)
        return loss

    def uncontract(self, y: torch.Tensor) -> torch.Tensor:
        """World positions (N, 3) of encoding coordinates y (the inverse of ``inputs``' contraction)."""
        c = self.config
        if c.centre is None:
            return y
        n = torch.linalg.vector_norm(y, dim=1, keepdim=True)
        factor = torch.where(n > 1.0, 1.0 / (n * torch.clamp(2.0 - n, min=1e-12)), torch.ones_like(n)) * c.radius
        return y * factor + torch.as_tensor(c.centre, dtype=y.dtype, device=y.device)

    @torch.no_grad()
    def lattice(self, resolution: int, chunk: int = 1 << 18) -> Flow:
        """The field as a ``Flow`` in its own coordinates y, for the bake on a CPU: dy/dt = J(y) F(x(y)) sampled
        once at the R^3 vertices of [-2, 2]^3 (the contracted ball's box) and read back by trilinear
        interpolation (one ``grid_sample`` per step instead of the contraction, the encoding and the MLP at every
        position).

        With G = MLP(enc(y)), rho = |y|, y^ = y / rho and G_r = (y^ . G) y^, G_t = G - G_r, the contraction's
        Jacobian turns F into
            dy/dt = (v_scale / r) G                                  (rho <= 1)
            dy/dt = (v_scale / r) (rho G_t + (2 - rho) G_r)         (rho > 1)
        (the gain cancels: content at any distance moves a bounded amount in y). The lattice holds
        A = (v_scale / r)(rho G_t + G_r), smooth in y, and the radial factor 2 - rho is applied at each query,
        dy/dt = A - max(rho - 1, 0) (A . y) y / rho^2, so the flow differs from F only by A's curvature inside
        one cell (``test_motion_field``: a few per cent of the travel). Content beyond rho = 1.99 (more than 100
        radii away: the sky, far hills) keeps its distance from the centre (``Flow.keep_radius``): float32 y
        resolves 0.25 % of the distance of a 50 km sky, and its radial motion is below that. Fields saved with a
        box (``centre`` None) give dy/dt = F on their box."""
        r = int(resolution)
        if r < 2:
            raise InvalidInput(f"a velocity lattice needs at least 2 vertices per axis, got {r}")
        contracted = self.config.centre is not None
        lo = torch.full((3,), -2.0, device=self.device) if contracted else self.encoding.bbox_lo
        hi = torch.full((3,), 2.0, device=self.device) if contracted else self.encoding.bbox_hi
        axes = [torch.linspace(float(lo[d]), float(hi[d]), r, device=self.device) for d in range(3)]
        zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        y = torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)
        g = torch.cat([self.mlp(self.encoding(y[i:i + chunk])) for i in range(0, len(y), chunk)]) * self.velocity_scale
        if contracted:  # A = (v_scale / r)(rho G_t + G_r) beyond the ball, (v_scale / r) G inside
            rho = torch.linalg.vector_norm(y, dim=1, keepdim=True)
            unit = y / torch.clamp(rho, min=1e-12)
            radial = (g * unit).sum(dim=1, keepdim=True) * unit
            g = torch.where(rho > 1.0, rho * (g - radial) + radial, g) / self.config.radius
        volume = g.view(r, r, r, 3).permute(3, 0, 1, 2)[None].contiguous()  # (1, 3, z, y, x)
        scale, shift = 2.0 / (hi - lo), (hi + lo) / (hi - lo)  # grid = q scale - shift in [-1, 1]

        def velocity(q: torch.Tensor) -> torch.Tensor:
            grid = (q * scale - shift).view(1, 1, 1, -1, 3)
            a = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", padding_mode="border",
                                                align_corners=True).view(3, -1).t()
            if not contracted:
                return a
            rho2 = torch.einsum("ki,ki->k", q, q)[:, None]  # (einsum: a third of .sum(dim=1)'s time on a CPU)
            k = torch.einsum("ki,ki->k", a, q)[:, None] * (torch.clamp(rho2.sqrt() - 1.0, min=0.0) /
                                                            rho2.clamp(min=1e-24))
            return a - k * q

        def to_q(x: torch.Tensor) -> torch.Tensor:
            return self.inputs(x.double())[0].float()

        return Flow(velocity, to_q=to_q, to_x=self.uncontract, keep_radius=1.99 if contracted else None,
                    centre=self.config.centre or (0.0, 0.0, 0.0))

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
        if cfg.get("centre") is not None:
            cfg["centre"] = tuple(cfg["centre"])
        enc = dict(cfg.pop("encoding"))
        enc["bbox_min"], enc["bbox_max"] = tuple(enc["bbox_min"]), tuple(enc["bbox_max"])
        dev = torch.device(device)
        enc["backend"] = backend if backend != "auto" or dev.type == "cuda" else "torch"
        config = MotionFieldConfig(encoding=HashGridConfig(**enc), **cfg)
        model = cls(config)
        model.load_state_dict(blob["state_dict"])
        return model.to(dev)


def new_motion_field(points: np.ndarray, config: MotionFieldConfig = MotionFieldConfig(),
                     device: str | torch.device = "cpu", centre: np.ndarray | None = None) -> MotionField:
    """A field on the contracted domain (module docstring) around ``centre`` (default: the median of ``points``)
    whose radius r is the 10th percentile of the distances of ``points`` (K, 3) from it (the world's content
    without the sky: the nearest content keeps the finest resolution)."""
    points = np.asarray(points, np.float64)
    if len(points) == 0 or not np.all(np.isfinite(points)):
        raise InvalidInput("the motion field's domain needs finite world points")
    c = np.median(points, axis=0) if centre is None else np.asarray(centre, np.float64)
    radius = max(float(np.percentile(np.linalg.norm(points - c, axis=1), 10)), 1e-3)
    dev = torch.device(device)
    enc = config.encoding
    if enc.backend == "auto" and dev.type != "cuda":
        enc = replace(enc, backend="torch")
    enc = replace(enc, bbox_min=(-CONTRACTED_BOX,) * 3, bbox_max=(CONTRACTED_BOX,) * 3)
    return MotionField(replace(config, encoding=enc, centre=tuple(float(v) for v in c), radius=radius)).to(dev)


def field_fit_error(field: MotionField, points: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(mean angular error in degrees, relative RMS error) of F against known velocities ``truth`` (K, 3)."""
    v = field.velocity(points)
    cos = np.sum(v * truth, 1) / np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(truth, axis=1), 1e-30)
    ang = float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
    rel = math.sqrt(float(np.mean(np.sum((v - truth) ** 2, 1))) / max(float(np.mean(np.sum(truth**2, 1))), 1e-30))
    return ang, rel
