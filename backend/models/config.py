"""Choosing providers: ``ModelConfig`` names one per role, ``make_*`` builds it.

Each setting is
- ``"auto"``: the default real model (``DEFAULTS``) if its weights are on this machine, else the built-in fallback;
- ``"builtin"``: the built-in fallback;
- a Hugging Face repo id or a local folder (``save_pretrained`` layout): that model, and ``ModelUnavailable``
  (with where to put the weights) if it is not on this machine — no silent fallback when a model was named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import ModelUnavailable
from .depth import DepthProvider, LandscapeDepth, LandscapeGeometry, TransformersDepth
from .outpaint import DiffusersInpaint, OutpaintProvider, PyramidInpaint
from .segmentation import HeuristicSegmentation, SegmentationProvider, TransformersSegmentation

DEFAULTS = {
    "depth": "depth-anything/Depth-Anything-V2-Small-hf",
    "segmentation": "nvidia/segformer-b0-finetuned-ade-512-512",
    "outpaint": "stabilityai/stable-diffusion-2-inpainting",
}


@dataclass(frozen=True)
class ModelConfig:
    depth: str = "auto"
    segmentation: str = "auto"
    outpaint: str = "auto"
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    outpaint_steps: int = 30


T = TypeVar("T")


def _choose(setting: str, role: str, real: Callable[[str], T], builtin: Callable[[], T]) -> T:
    if setting == "builtin":
        return builtin()
    if setting == "auto":
        try:
            return real(DEFAULTS[role])
        except ModelUnavailable:
            return builtin()
    return real(setting)


def make_segmentation(config: ModelConfig) -> SegmentationProvider:
    return _choose(config.segmentation, "segmentation", lambda n: TransformersSegmentation(n, config.device),
                   HeuristicSegmentation)


def make_depth(config: ModelConfig, segmentation: SegmentationProvider | None = None,
               geometry: LandscapeGeometry | None = None) -> DepthProvider:
    return _choose(config.depth, "depth", lambda n: TransformersDepth(n, config.device),
                   lambda: LandscapeDepth(segmentation or make_segmentation(config), geometry or LandscapeGeometry()))


def make_outpaint(config: ModelConfig) -> OutpaintProvider:
    return _choose(config.outpaint, "outpaint",
                   lambda n: DiffusersInpaint(n, config.device, steps=config.outpaint_steps), PyramidInpaint)
