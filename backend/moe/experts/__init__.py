"""Dynamic Gaussian experts behind one interface (``Expert``), chosen by name.

- ``deformation``: canonical Gaussians + HexPlane field + MLP heads (4DGaussians).
- ``trajectory``:  per-Gaussian cubic trajectories, linear rotation, temporal opacity (Spacetime Gaussians).
- ``keyframe``:    static/dynamic split, explicit keyframes with cubic Hermite interpolation (Ex4DGS).
- ``embedding``:   per-Gaussian codes + coarse/fine temporal codes decoded into the deformation (E-D3DGS; the
  fourth expert of MoE-GS(n=4)).
"""

from __future__ import annotations

from dataclasses import asdict, fields

from ...errors import InvalidInput
from .base import Expert, ExpertConfig
from .deformation import DeformationConfig, DeformationExpert
from .embedding import EmbeddingConfig, EmbeddingExpert
from .keyframe import KeyframeConfig, KeyframeExpert
from .trajectory import TrajectoryConfig, TrajectoryExpert

EXPERTS: dict[str, tuple[type[Expert], type[ExpertConfig]]] = {
    "deformation": (DeformationExpert, DeformationConfig),
    "trajectory": (TrajectoryExpert, TrajectoryConfig),
    "keyframe": (KeyframeExpert, KeyframeConfig),
    "embedding": (EmbeddingExpert, EmbeddingConfig),
}


def make_expert(name: str, num_frames: int, extent: float = 1.0, options: dict | None = None) -> Expert:
    """Build the expert ``name`` with its config's defaults overridden by ``options`` (unknown keys fail)."""
    if name not in EXPERTS:
        raise InvalidInput(f"unknown expert {name!r}; known: {sorted(EXPERTS)}")
    cls, cfg_cls = EXPERTS[name]
    options = dict(options or {})
    known = {f.name for f in fields(cfg_cls)}
    bad = sorted(set(options) - known)
    if bad:
        raise InvalidInput(f"expert {name!r} has no option(s) {bad}; options: {sorted(known)}")
    for f in fields(cfg_cls):  # JSON turns tuples into lists
        if isinstance(f.default, tuple) and f.name in options:
            options[f.name] = tuple(options[f.name])
    return cls(num_frames, cfg_cls(**options), extent)


def expert_options(expert: Expert) -> dict:
    """The config of ``expert`` as a JSON-able dict (``make_expert(..., options=...)`` rebuilds it)."""
    return asdict(expert.config)


__all__ = ["EXPERTS", "Expert", "ExpertConfig", "expert_options", "make_expert"]
