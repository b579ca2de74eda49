"""Sky / water / ground masks of an image (used by lifting, depth and later by motion).

Providers:
- ``TransformersSegmentation``: any ``AutoModelForSemanticSegmentation`` (e.g. SegFormer fine-tuned on ADE20k);
  classes are mapped to regions by their label names (``config.id2label``).
- ``HeuristicSegmentation``: colour, texture, edge and position cues with an OpenCV GrabCut, no weights.
"""

from __future__ import annotations

import hashlib
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


@dataclass(frozen=True)
class SkyCues:
    """Thresholds of ``HeuristicSegmentation`` (images in [0, 1], cues measured at ``work_size``)."""

    work_size: int = 256  # long side the cues are measured at (px); the boundary is refined at full size
    texture: float = 0.018  # local std of L / 100 (sigma 1.5 px) below which a pixel is smooth enough for sky
    edge: float = 0.05  # |grad L| / 100 per px at or above which a pixel separates regions (a ridge line)
    min_l: float = 0.25  # darker pixels are never sky (L / 100)
    green: float = -7.0  # Lab a below this (with b above -5) is foliage, never sky
    top_band: float = 0.1  # a large region reaching this fraction of the height from the top edge touches it
    #                         (noisy top rows, an outpainted sky's speckle, must not cut the sky off)
    darker: float = 0.12  # a top region whose mean L is this much below the largest one's is terrain
    rough: float = 0.08  # local std of L / 100 above which a pixel is surely not sky (for GrabCut)
    mirror_rows: int = 12  # rows compared on each side of a candidate shore line
    mirror: float = 0.45  # mirror score (``_water_line``) above which the rows below are a reflection
    band: int = 2  # full-size pixels either side of the upsampled boundary that are re-decided by colour


def _fill_holes(sky: np.ndarray) -> np.ndarray:
    """``sky`` plus the non-sky regions that touch no image edge but the top (birds, cloud gaps, a cloud on the
    top row that was left out)."""
    _, rest = cv2.connectedComponents((~sky).astype(np.uint8), connectivity=4)
    open_ids = np.unique(np.concatenate([rest[-1], rest[:, 0], rest[:, -1]]))
    return sky | ~np.isin(rest, open_ids)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two arrays of one shape (0 when either is flat)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b) / max(float(np.sqrt((a @ a) * (b @ b))), 1e-12)


class HeuristicSegmentation:
    """Sky, water and ground without weights (thresholds: ``SkyCues``).

    Sky, at ``work_size`` in CIE Lab:
    1. candidates: smooth pixels (local std of L), not too dark, not foliage-green; regions are their 4-connected
       components once edge pixels (|grad L| >= ``edge``: ridge lines, roof lines) are taken out, so a range whose
       summit leaves the frame stays apart from the sky beside it;
    2. seeds: regions reaching the top edge (``top_band``), except those clearly darker than the largest one (a hazy mountain,
       a glass tower; clouds are brighter and stay, and so does bright snow where it touches the top edge);
    3. OpenCV's GrabCut (colour models and an edge-aware cut) settles the boundary from the seeds (sure sky: their
       inside; sure ground: foliage, dark or rough pixels);
    4. still water mirrors the sky: below the row where the image mirrors itself (``_water_line``) nothing is sky;
       what stays is what connects to the seeds across no edge, and in each column its first run from the top
       (sky seen under a bridge or through a mirror beside the shore is dropped), plus a thin band above it on
       the top edge that is as bright (clouds; an outpainted sky's smeared top rows) and holes enclosed by it
       (birds, cloud gaps).
    At full size the pixels within ``band`` of the upsampled boundary take the side whose local mean colour is
    nearer. Water: blue-ish, smooth pixels below the horizon, not sky. Ground: the rest. Measured on a labelled
    set (``bench/world_sky_iou.py``, docs/bench/world.md).
    """

    name = "heuristic"

    def __init__(self, cues: SkyCues = SkyCues()):
        self.cues = cues
        self._last: tuple[bytes, RegionMasks] | None = None

    def segment(self, image: np.ndarray) -> RegionMasks:
        image = np.clip(np.asarray(image, np.float32), 0, 1)
        key = hashlib.blake2b(image.tobytes(), digest_size=16).digest() + bytes(str(image.shape), "ascii")
        if self._last is not None and self._last[0] == key:  # the depth fallback asks again for the same image
            return self._last[1]
        h, w = image.shape[:2]
        scale = self.cues.work_size / max(h, w)  # smaller images are enlarged: the cues' scales are in work pixels
        work = (max(round(w * scale), 8), max(round(h * scale), 8))
        sky = self._sky(cv2.resize(image, work, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR))
        if scale < 1.0:
            sky = self._refine(image, cv2.resize(sky.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0)
        elif scale > 1.0:
            sky = cv2.resize(sky.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5
        masks = RegionMasks.from_sky_water(sky, self._water(image, sky))
        self._last = (key, masks)
        return masks

    def _sky(self, img: np.ndarray) -> np.ndarray:
        """(h, w) bool sky of a small image (class docstring)."""
        c = self.cues
        h, w = img.shape[:2]
        lab = cv2.cvtColor(cv2.GaussianBlur(img, (0, 0), 0.7), cv2.COLOR_RGB2Lab)
        L, a, b = lab[..., 0] / 100.0, lab[..., 1], lab[..., 2]
        mean = cv2.GaussianBlur(L, (0, 0), 1.5)
        texture = np.sqrt(np.maximum(cv2.GaussianBlur(L * L, (0, 0), 1.5) - mean * mean, 0))
        grad = np.hypot(cv2.Sobel(L, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(L, cv2.CV_32F, 0, 1, ksize=3)) / 8
        foliage = (a < c.green) & (b > -5)
        cand = (texture < c.texture) & (grad < c.edge) & ~foliage & (L > c.min_l)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=4)
        area = stats[:, cv2.CC_STAT_AREA]
        top = [i for i in range(1, len(stats)) if (stats[i, cv2.CC_STAT_TOP] == 0 and area[i] >= 0.002 * h * w)
               or (stats[i, cv2.CC_STAT_TOP] <= c.top_band * h and area[i] >= 0.02 * h * w)]
        if not top:
            return np.zeros((h, w), bool)
        fine = cv2.GaussianBlur(L, (0, 0), 0.8)
        fine = np.sqrt(np.maximum(cv2.GaussianBlur(L * L, (0, 0), 0.8) - fine * fine, 0))
        never = foliage | (L < c.min_l) | (fine > c.rough)
        largest = max(top, key=lambda i: stats[i, cv2.CC_STAT_AREA])
        ref = float(L[labels == largest].mean())

        chosen = [i for i in top if float(L[labels == i].mean()) >= ref - c.darker]
        seed = np.isin(labels, chosen)
        # GrabCut from the seeds: sure sky inside them, sure ground where sky cannot be (and the top regions judged
        # terrain above), the rest probable
        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        mask[seed] = cv2.GC_PR_FGD
        mask[cv2.erode(seed.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0] = cv2.GC_FGD
        mask[(never & ~seed) | np.isin(labels, [i for i in top if i not in chosen])] = cv2.GC_BGD
        if (mask == cv2.GC_BGD).any() or (mask == cv2.GC_PR_BGD).any():
            u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
            cv2.setRNGSeed(0)  # GrabCut seeds its colour models by k-means on OpenCV's global RNG: the same image
            cv2.grabCut(u8, mask, None, np.zeros((1, 65)), np.zeros((1, 65)), 3, cv2.GC_INIT_WITH_MASK)  # same sky
        sky = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        line = self._water_line(L)
        if line is not None:  # below a lake's or the sea's shore line the sky is a reflection
            sky[line:] = False
        # keep what is connected to the seeds across no edge (GrabCut's smooth cut may step over a thin shore line
        # into the lake that mirrors the sky), with the edge pixels next to it; then fill holes that touch no
        # image edge but the top
        inside = sky & (grad < c.edge)
        _, lab2 = cv2.connectedComponents(inside.astype(np.uint8), connectivity=4)
        kept = np.isin(lab2, np.unique(lab2[seed & inside])) & inside
        sky &= cv2.dilate(kept.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        sky = _fill_holes(sky)
        runs = cv2.morphologyEx(sky.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((9, 1), np.uint8)) > 0
        starts = runs & ~np.vstack([np.zeros((1, w), bool), runs[:-1]])
        sky &= np.cumsum(starts, axis=0) == 1  # each column's sky: its first run from the top (gaps < 9 px closed)
        if sky.any():  # a band above it on the top edge, as bright and not foliage, is cloud (or smeared sky)
            first = np.where(sky.any(axis=0), np.argmax(sky, axis=0), 0)
            rows = np.arange(h)[:, None]
            _, above = cv2.connectedComponents(((rows < first[None, :]) & (rows < c.top_band * h)).astype(np.uint8),
                                               connectivity=4)
            ref = float(L[sky].mean())
            for i in range(1, int(above.max()) + 1):
                region = above == i
                if float(L[region].mean()) >= ref - 0.02 and float(foliage[region].mean()) < 0.1:
                    sky |= region
            # slits of one or two columns left in the sky (a smeared cloud's edge) are sky
            sky |= cv2.morphologyEx(sky.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, 3), np.uint8)) > 0
        return _fill_holes(sky)

    def _water_line(self, L: np.ndarray) -> int | None:
        """The row below which the image mirrors what is above it (still water reflecting the shore and the sky),
        or None. With D = L - blur(L) (detail) and K = ``mirror_rows``, a row r scores
            ncc(flip(D[r-K:r]), D[r:r+K]) - max(ncc(D[r-K:r], D[r:r+K]), 0):
        a reflection matches its mirror image, while vertical structure (towers, trunks, window grids) matches
        itself unflipped as well and scores near zero; the two rows next to r are left out, as a thin line along
        r is symmetric by itself. The best row in the lower 80 % counts when it scores above
        ``mirror``."""
        h = L.shape[0]
        k = self.cues.mirror_rows
        if h < 4 * k:
            return None
        d = L - cv2.GaussianBlur(L, (0, 0), 4.0)
        best, row = -1.0, None
        for r in range(max(k, int(0.2 * h)), h - k):
            up, down = d[r - k:r - 2], d[r + 2:r + k]  # a thin line along r (a roof, a cloud band) is left out
            score = _ncc(up[::-1], down) - max(_ncc(up, down), 0.0)
            if score > best:
                best, row = score, r
        return row if best > self.cues.mirror else None

    def _refine(self, image: np.ndarray, sky: np.ndarray) -> np.ndarray:
        """Pixels within ``band`` of the upsampled boundary take the side whose local mean colour (9x9 px, the
        other band pixels left out) is nearer."""
        r = self.cues.band
        k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
        band = (cv2.dilate(sky.astype(np.uint8), k) > 0) & ~(cv2.erode(sky.astype(np.uint8), k) > 0)
        if not band.any():
            return sky
        means = []
        for side in (sky & ~band, ~sky & ~band):
            wgt = cv2.blur(side.astype(np.float32), (9, 9))
            col = cv2.blur(image * side[..., None], (9, 9)) / np.maximum(wgt, 1e-6)[..., None]
            means.append(np.where((wgt > 0)[..., None], col, np.inf))
        d_sky, d_ground = (np.sum((image - m) ** 2, axis=-1) for m in means)
        return np.where(band, d_sky < d_ground, sky)

    @staticmethod
    def _water(image: np.ndarray, sky: np.ndarray) -> np.ndarray:
        """Blue-ish, smooth pixels below the horizon (``estimate_horizon``) that are not sky."""
        h, w = image.shape[:2]
        px = max(h, w) / 512.0
        img = cv2.GaussianBlur(image, (0, 0), 1.5 * px)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hue, val = hsv[..., 0], hsv[..., 2]
        luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        local_std = np.sqrt(np.maximum(cv2.GaussianBlur(luma**2, (0, 0), 3 * px) - cv2.GaussianBlur(luma, (0, 0), 3 * px) ** 2, 0))
        rows = np.arange(h)[:, None]
        bluish = (img[..., 2] > img[..., 0]) & (hue > 150) & (hue < 260) & (val > 0.2)
        water = bluish & (local_std < 0.06) & (rows > estimate_horizon(sky)) & ~sky
        return cv2.morphologyEx(water.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)


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
