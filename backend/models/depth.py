"""Monocular depth of an image.

Providers return a ``DepthPrediction`` saying what the numbers are:
- ``metric``: depth along the camera axis in metres (z, not ray length);
- ``inverse_relative``: affine-invariant inverse depth (disparity up to scale and shift), what relative Depth
  Anything V2 / MiDaS-style models output. ``backend.world.depth_align`` turns it into metric-ish depth with a
  robust scale+shift fit in inverse depth against a reference (the landscape prior or rendered depth).

Providers:
- ``TransformersDepth``: ``AutoModelForDepthEstimation`` (Depth Anything V2 architecture) from local weights;
  ``config.depth_estimation_type`` says relative or metric.
- ``DepthMapFile``: a user-supplied map, ``.npy`` (metres) or 16-bit ``.png`` (millimetres); 0 = unknown/sky.
- ``LandscapeDepth``: the built-in fallback, a ground plane receding to a horizon estimated from the sky mask,
  far sky, distant terrain rising above the horizon as a far backdrop, and a little relief from image detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from ..errors import InvalidInput, NotFound
from ..io.arrays import load_array
from ..io.images import check_image_header
from .hub import load_local, torch_device
from .segmentation import HeuristicSegmentation, SegmentationProvider, estimate_horizon

DepthKind = Literal["metric", "inverse_relative"]


@dataclass(frozen=True)
class DepthPrediction:
    """values (H, W) float32: metres (``metric``) or affine-invariant inverse depth (``inverse_relative``);
    ``valid`` (H, W) bool marks pixels with a usable value (False where a depth map had no data)."""

    values: np.ndarray
    kind: DepthKind
    valid: np.ndarray


class DepthProvider(Protocol):
    name: str

    def predict(self, image: np.ndarray, focal_px: float) -> DepthPrediction:
        """image (H, W, 3) float32 RGB in [0, 1]; focal_px the pinhole focal length in pixels at this size."""
        ...


@dataclass(frozen=True)
class LandscapeGeometry:
    """Parameters of the fallback geometry (metres)."""

    camera_height: float = 1.6
    max_ground_depth: float = 200.0
    sky_depth: float = 1000.0
    relief: float = 0.08  # log-depth change per unit of normalised local brightness detail


class LandscapeDepth:
    """Fallback: plausible landscape geometry without weights.

    With the horizon row v_h (``estimate_horizon`` on the sky mask) and a camera at height h looking at it, a
    ground pixel in row v > v_h lies at depth z = f h / (v - v_h) (pinhole, flat ground), clipped to
    ``max_ground_depth``. Non-sky pixels above the horizon (hills, trees on the skyline) stand as a backdrop at
    the farthest ground depth. Ground (not water, which stays flat) gets relief
    z <- z exp(-relief * d), d = (L - blur(L)) / std, with L the luminance (lit bumps come forward). Sky is at
    ``sky_depth``.
    """

    name = "builtin:landscape"

    def __init__(self, segmentation: SegmentationProvider | None = None, geometry: LandscapeGeometry = LandscapeGeometry()):
        self.segmentation = segmentation or HeuristicSegmentation()
        self.geometry = geometry

    def predict(self, image: np.ndarray, focal_px: float) -> DepthPrediction:
        g = self.geometry
        h, w = image.shape[:2]
        regions = self.segmentation.segment(image)
        v_h = estimate_horizon(regions.sky)
        rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
        min_gap = focal_px * g.camera_height / g.max_ground_depth  # rows below the horizon where depth hits the cap
        gap = np.maximum(rows - v_h, min_gap)
        depth = np.broadcast_to(focal_px * g.camera_height / gap, (h, w)).astype(np.float32).copy()
        luma = cv2.cvtColor(np.clip(image, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY)
        detail = luma - cv2.GaussianBlur(luma, (0, 0), 6.0)
        detail /= max(float(detail[regions.ground].std()) if regions.ground.any() else 0.0, 1e-3)
        depth = np.where(regions.ground, depth * np.exp(-g.relief * np.clip(detail, -3, 3)), depth)
        depth[regions.sky] = g.sky_depth
        return DepthPrediction(depth.astype(np.float32), "metric", np.ones((h, w), bool))


class DepthMapFile:
    """A depth map the user supplies: ``.npy`` float (metres) or 16-bit ``.png`` (millimetres). Zero or non-finite
    values mean "no data" (``valid`` False). Resized to the image with nearest-neighbour sampling."""

    def __init__(self, path: str | Path, png_scale: float = 1e-3):
        self.path = Path(path)
        self.png_scale = png_scale
        self.name = f"file:{self.path.name}"
        if not self.path.is_file():
            raise NotFound(f"depth map {str(self.path)!r} does not exist")

    def predict(self, image: np.ndarray, focal_px: float) -> DepthPrediction:
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            d = load_array(self.path, what="depth map (.npy, metres)")
            if d.dtype.kind not in "fiu":
                raise InvalidInput(f"depth map {self.path.name}: dtype {d.dtype}, expected float metres")
            d = d.astype(np.float32)
        elif suffix == ".png":
            check_image_header(self.path)  # a header claiming a huge image is refused before OpenCV allocates it
            raw = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
            if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
                raise InvalidInput(f"depth map {self.path.name}: expected a single-channel 16-bit PNG (millimetres)")
            d = raw.astype(np.float32) * self.png_scale
        else:
            raise InvalidInput(f"depth map {self.path.name}: use a .npy (metres) or a 16-bit .png (millimetres)")
        if d.ndim != 2 or min(d.shape) < 1:
            raise InvalidInput(f"depth map {self.path.name} has shape {d.shape}; expected (H, W)")
        h, w = image.shape[:2]
        if abs(d.shape[1] / d.shape[0] - w / h) > 0.02:
            raise InvalidInput(f"depth map {self.path.name} is {d.shape[1]}x{d.shape[0]}, the image {w}x{h}: "
                               "the aspect ratios differ")
        d = cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST)
        valid = np.isfinite(d) & (d > 0)
        return DepthPrediction(np.where(valid, d, 0).astype(np.float32), "metric", valid)


class TransformersDepth:
    """``AutoModelForDepthEstimation`` + ``AutoImageProcessor`` from local weights (Depth Anything V2 class).

    predicted_depth (1, h, w) at the processor's size is resized bicubically to (H, W). Relative models
    (``depth_estimation_type == "relative"``) give inverse depth up to scale and shift; metric ones metres.
    On CUDA the model runs in float16 (``half``, 4x fewer bytes and tensor-core matrix products; the ViT-L
    backbone's attention through SDPA), replayed from a CUDA graph per input shape (``accel.GraphedFunction``);
    a prediction with a non-finite value is recomputed in float32 and the model stays in float32 from then on.
    ``dtype`` says which runs.
    """

    def __init__(self, name_or_path: str, device: str = "auto", half: bool | None = None):
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.name = f"transformers:{name_or_path}"
        self.device = torch_device(device)
        self.processor = load_local(AutoImageProcessor.from_pretrained, name_or_path, "depth model")
        self.model = load_local(AutoModelForDepthEstimation.from_pretrained, name_or_path,
                                "depth model").to(self.device).eval()
        half = self.device.startswith("cuda") if half is None else half
        self.dtype = torch.float16 if half else torch.float32
        self.model.to(self.dtype)
        kind = getattr(self.model.config, "depth_estimation_type", "relative")
        self.kind: DepthKind = "metric" if kind == "metric" else "inverse_relative"
        from .accel import GraphedFunction

        # on CUDA one graph per input shape replays the forward's ~600 kernel launches (the same kernels)
        self._forward = GraphedFunction(lambda x: self.model(pixel_values=x).predicted_depth)

    def _predict(self, pixel_values, h: int, w: int):
        import torch

        with torch.no_grad():
            pred = self._forward(pixel_values.to(self.device, self.dtype))
            return torch.nn.functional.interpolate(pred[:, None].float(), size=(h, w), mode="bicubic",
                                                   align_corners=False)[0, 0]

    def predict(self, image: np.ndarray, focal_px: float) -> DepthPrediction:
        import torch

        h, w = image.shape[:2]
        rgb8 = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        pixels = self.processor(images=rgb8, return_tensors="pt")["pixel_values"]
        pred = self._predict(pixels, h, w)
        if self.dtype != torch.float32 and not bool(torch.isfinite(pred).all()):
            import warnings

            warnings.warn(f"{self.name}: float16 depth overflowed; running it in float32 from now on", RuntimeWarning,
                          stacklevel=2)
            self.dtype = torch.float32
            self.model.to(torch.float32)
            self._forward.clear()  # the graphs read the float16 weights
            pred = self._predict(pixels, h, w)
        values = pred.cpu().numpy().astype(np.float32)
        if self.kind == "metric":
            values = np.maximum(values, 1e-3)
        return DepthPrediction(values, self.kind, np.isfinite(values))
