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
from .hub import download_command, find_local
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
    outpaint_accel: str = "auto"  # "auto" (CUDA graphs on CUDA) | "off" | "graphs" | "inductor" (DiffusersInpaint)


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
                   lambda n: DiffusersInpaint(n, config.device, steps=config.outpaint_steps,
                                              accel=config.outpaint_accel), PyramidInpaint)


BUILTIN_NAMES = {"depth": LandscapeDepth.name, "segmentation": HeuristicSegmentation.name,
                 "outpaint": PyramidInpaint.name}
LIBRARIES = {"depth": "transformers", "segmentation": "transformers", "outpaint": "diffusers"}


def describe(config: ModelConfig) -> dict[str, tuple[str, str]]:
    """What ``make_*`` would build for each role, and why, without loading a model: {role: (provider, reason)}.

    Follows ``_choose``: "builtin" is the fallback; "auto" the default model when its weights (and its library)
    are on this machine, else the fallback; a named model is that model, or a ``ModelUnavailable`` at the first
    job when its weights are missing (said here).
    """
    import importlib.util

    out = {}
    for role in ("segmentation", "depth", "outpaint"):
        setting = getattr(config, role)
        library = LIBRARIES[role]
        if setting == "builtin":
            out[role] = (BUILTIN_NAMES[role], "the setting is 'builtin'")
            continue
        name = DEFAULTS[role] if setting == "auto" else setting
        folder = find_local(name)
        missing = (f"{library} is not installed" if importlib.util.find_spec(library) is None
                   else None if folder is not None else f"the weights of {name} are not on this machine "
                   f"(`{download_command(name)}` puts them in the Hugging Face cache)")
        if setting == "auto":
            out[role] = ((BUILTIN_NAMES[role], f"the default model is not usable: {missing}") if missing else
                         (f"{library}:{name}", f"the default model, weights at {folder}"))
        else:
            out[role] = (f"{library}:{name}", f"weights at {folder}" if not missing else
                         f"NOT USABLE: {missing}; jobs stop with that message until it is fixed or the setting "
                         "is 'auto' / 'builtin'")
    return out
