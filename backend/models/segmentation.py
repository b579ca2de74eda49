"""Sky / water / ground masks of an image (used by lifting, depth and later by motion).

Providers:
- ``TransformersSegmentation``: any ``AutoModelForSemanticSegmentation`` (e.g. SegFormer fine-tuned on ADE20k);
  classes are mapped to regions by their label names (``config.id2label``).
- ``HeuristicSegmentation``: colour, brightness and position cues, no weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .hub import load_local, torch_device

SKY_LABELS = frozenset({"sky"})
WATER_LABELS = frozenset({"water", "sea", "river", "lake", "pool", "swimming pool", "waterfall", "falls"})


@dataclass(frozen=True)
class RegionMasks:
    """Boolean (H, W) masks; every pixel is in exactly one of sky, water, ground."""

    sky: np.ndarray
    water: np.ndarray
    ground: np.ndarray

    @staticmethod
    def from_sky_water(sky: np.ndarray, water: np.ndarray) -> RegionMasks:
        sky = sky.astype(bool)
        water = water.astype(bool) & ~sky
        return RegionMasks(sky=sky, water=water, ground=~(sky | water))


class SegmentationProvider(Protocol):
    name: str

    def segment(self, image: np.ndarray) -> RegionMasks:
        """image (H, W, 3) float32 RGB in [0, 1] -> RegionMasks of the same size."""
        ...


def estimate_horizon(sky: np.ndarray, default_fraction: float = 0.4) -> float:
    """Horizon row (pixels, may lie outside the image) from the sky mask's lower boundary.

    Hills and trees only ever rise above the horizon, so the sky reaches down to it only in their gaps: the
    horizon is taken at the 90th percentile of the per-column depth of the sky run from the top edge. Without
    sky, ``default_fraction * H`` (a camera looking slightly down).
    """
    h = sky.shape[0]
    run = np.cumprod(sky, axis=0).sum(axis=0)  # rows of sky from the top, per column
    cols = run[run > 0]
    if cols.size < 0.05 * sky.shape[1]:
        return default_fraction * h
    return float(np.percentile(cols, 90))


class HeuristicSegmentation:
    """Sky = the connected regions of bright blue-ish or bright grey-white (cloud) pixels that touch the top edge,
    cut at strong horizontal edges (cues measured on a slightly blurred image); water = blue-ish, smooth pixels below the horizon; ground = rest."""

    name = "heuristic"

    def segment(self, image: np.ndarray) -> RegionMasks:
        h, w = image.shape[:2]
        px = max(h, w) / 512.0  # cue scales are stated for a 512 px image
        img = cv2.GaussianBlur(np.clip(image, 0, 1).astype(np.float32), (0, 0), 1.5 * px)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in 0..1
        hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        blue = (b > r + 0.04) & (b >= g - 0.02) & (val > 0.45)
        cloud = (val > 0.7) & (sat < 0.2)
        luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        gy = np.abs(cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3))
        cand = ((blue | cloud) & (gy < 0.5)).astype(np.uint8)  # a strong horizontal edge (a sea horizon) stops the sky
        k = max(round(5 * px) | 1, 3)
        cand = cv2.morphologyEx(cand, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
        _, labels = cv2.connectedComponents(cand, connectivity=4)
        top = np.unique(labels[0][cand[0] > 0])
        sky = np.isin(labels, top[top > 0])
        # Holes (cloud edges, birds): non-sky parts that touch no image edge but the top are enclosed by sky.
        _, rest = cv2.connectedComponents((~sky).astype(np.uint8), connectivity=4)
        open_ids = np.unique(np.concatenate([rest[-1], rest[:, 0], rest[:, -1]]))
        sky |= ~np.isin(rest, open_ids)
        horizon = estimate_horizon(sky)
        rows = np.arange(h)[:, None]
        local_std = np.sqrt(np.maximum(cv2.GaussianBlur(luma**2, (0, 0), 3 * px) - cv2.GaussianBlur(luma, (0, 0), 3 * px) ** 2, 0))
        bluish = (b > r) & (hue > 150) & (hue < 260) & (val > 0.2)
        water = bluish & (local_std < 0.06) & (rows > horizon) & ~sky
        water = cv2.morphologyEx(water.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
        return RegionMasks.from_sky_water(sky, water)


class TransformersSegmentation:
    """A semantic-segmentation model loaded with ``AutoModelForSemanticSegmentation`` from local weights.

    logits (1, C, h, w) are upsampled bilinearly to (H, W); the arg-max class goes to sky when its label is in
    ``SKY_LABELS``, to water when in ``WATER_LABELS``, else to ground.
    """

    def __init__(self, name_or_path: str, device: str = "auto"):
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        self.name = f"transformers:{name_or_path}"
        self.device = torch_device(device)
        self.processor = load_local(AutoImageProcessor.from_pretrained, name_or_path, "segmentation model")
        self.model = load_local(AutoModelForSemanticSegmentation.from_pretrained, name_or_path,
                                "segmentation model").to(self.device).eval()
        labels = {int(k): str(v).lower() for k, v in self.model.config.id2label.items()}
        n = int(self.model.config.num_labels)
        self.sky_ids = np.array([labels.get(i, "") in SKY_LABELS for i in range(n)])
        self.water_ids = np.array([labels.get(i, "") in WATER_LABELS for i in range(n)])

    def segment(self, image: np.ndarray) -> RegionMasks:
        import torch

        h, w = image.shape[:2]
        rgb8 = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        inputs = self.processor(images=rgb8, return_tensors="pt").to(self.device)
        with torch.no_grad():
            logits = self.model(**inputs).logits
            logits = torch.nn.functional.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
        cls = logits.argmax(1)[0].cpu().numpy()
        return RegionMasks.from_sky_water(self.sky_ids[cls], self.water_ids[cls])
