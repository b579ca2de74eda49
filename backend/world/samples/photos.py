"""Procedural landscape photos with their true sky and water masks: the labelled set the built-in segmentation is
measured on (``bench/world_sky_iou.py``), and the held-out inputs of the CPU and seam benches.

Real photographs are not bundled, so each scene is painted from fractal noise, back to front, and every layer
records where it is visible: sky (a gradient of a kind, with or without clouds), far and near terrain whose
ridges may leave the frame at the top (mountain ranges, snow peaks, city blocks, a tree line), a lake, river or
sea mirroring the sky, and a foreground. Then what a camera adds: lens blur, vignetting, sensor noise and a JPEG
round trip. ``SCENES`` names the painters; ``labelled_set()`` paints each with a few seeds.

    python -m backend.world.samples.photos OUT_DIR [--size 512]     # writes <name>.png and <name>_sky.png
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .make_landscape import _fractal_noise, _ridge


@dataclass(frozen=True)
class Photo:
    """image (H, W, 3) float32 RGB in [0, 1]; sky, water (H, W) bool: where sky / water is visible."""

    name: str
    image: np.ndarray
    sky: np.ndarray
    water: np.ndarray


SKIES = {
    # zenith, horizon colours of the gradient; cloud colour; cloud cover (0: clear)
    "clear": ((0.20, 0.40, 0.78), (0.72, 0.82, 0.93), (0.97, 0.97, 0.98), 0.0),
    "cloudy": ((0.28, 0.48, 0.80), (0.80, 0.86, 0.93), (0.95, 0.95, 0.96), 0.55),
    "overcast": ((0.62, 0.64, 0.68), (0.80, 0.81, 0.83), (0.88, 0.88, 0.90), 0.35),
    "hazy": ((0.55, 0.65, 0.80), (0.86, 0.88, 0.90), (0.95, 0.95, 0.95), 0.2),
    "sunset": ((0.30, 0.32, 0.55), (0.98, 0.62, 0.32), (0.95, 0.55, 0.45), 0.3),
}


class _Canvas:
    """An image painted back to front with a label per pixel (0 ground, 1 sky, 2 water)."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        self.img = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), np.uint8)
        self.rows = np.arange(h, dtype=np.float32)[:, None]
        self.cols = np.arange(w, dtype=np.float32)[None, :]

    def noise(self, octaves: int, base: int) -> np.ndarray:
        return _fractal_noise(self.rng, self.h, self.w, octaves, base)

    def paint(self, mask: np.ndarray, colour: np.ndarray, label: int = 0) -> None:
        mask = np.broadcast_to(mask, (self.h, self.w))
        self.img[mask] = np.broadcast_to(colour, (self.h, self.w, 3))[mask]
        self.label[mask] = label

    def sky(self, kind: str, horizon: float) -> None:
        zenith, low, cloud_rgb, cover = (np.array(c, np.float32) if isinstance(c, tuple) else c for c in SKIES[kind])
        t = np.clip(self.rows / max(horizon * self.h, 1.0), 0, 1)[..., None] ** 0.8
        sky = (1 - t) * zenith + t * low
        if cover > 0:
            n = _fractal_noise(self.rng, self.h, 2 * self.w, 6, 3)[:, ::2]
            c = np.clip((n - (0.35 - 0.6 * cover)) * 2.5, 0, 1) * np.clip(1.3 - self.rows / (horizon * self.h), 0, 1)
            shade = 0.9 - 0.12 * np.clip(self.noise(4, 6), -1, 1)
            sky = sky * (1 - c[..., None]) + c[..., None] * shade[..., None] * cloud_rgb
        self.paint(np.ones((self.h, self.w), bool), sky, 1)

    def profile(self, base: float, height: float, roughness: int = 5, peak: tuple[float, float] | None = None
                ) -> np.ndarray:
        """Top row of a ridge per column: ``base`` (fraction of H) minus ``height`` x a fractal profile; ``peak``
        (x fraction, extra height) adds a summit, which may leave the frame at the top."""
        p = base * self.h - height * self.h * (0.55 + 0.45 * np.clip(_ridge(self.rng, self.w, roughness), -1, 1))
        if peak is not None:
            x0, extra = peak
            p -= extra * self.h * np.clip(1 - np.abs(self.cols[0] / self.w - x0) / 0.22, 0, 1) ** 1.3
        return p

    def terrain(self, top: np.ndarray, bottom: float, colour, texture: float, haze: float, snow: float = 0.0,
                light_from: float = 0.3) -> None:
        """A range from the ridge ``top`` (per column) down to row ``bottom * H``: textured, shaded by slope,
        faded towards the horizon colour by ``haze``, with snow above ``snow`` of its height."""
        mask = (self.rows >= top[None, :]) & (self.rows < bottom * self.h)
        tex = self.noise(6, 10)
        slope = np.gradient(cv2.GaussianBlur(self.noise(5, 4), (0, 0), 3), axis=1) * 40
        rgb = np.array(colour, np.float32) * (1 + texture * tex[..., None]) * (1 + light_from * slope[..., None])
        if snow > 0:
            depth = (self.rows - top[None, :]) / np.maximum(bottom * self.h - top[None, :], 1)
            white = (depth < snow * (0.7 + 0.6 * np.clip(self.noise(4, 8), -0.5, 0.5))) & (tex > -0.2)
            rgb = np.where(white[..., None], np.array([0.93, 0.94, 0.97]) * (0.85 + 0.15 * tex[..., None]), rgb)
        haze_rgb = self.img[np.clip(np.nanmin(top).astype(int) - 1, 0, self.h - 1)].mean(axis=0)
        self.paint(mask, (1 - haze) * rgb + haze * haze_rgb, 0)

    def buildings(self, ground: float, count: int, tallest: float) -> None:
        """Blocks standing on row ``ground * H``; the tallest leaves the frame when ``tallest`` > ``ground``."""
        xs = np.sort(self.rng.uniform(0, self.w, count))
        for i, x in enumerate(xs):
            width = self.rng.uniform(0.04, 0.11) * self.w
            height = (tallest if i == count // 2 else self.rng.uniform(0.12, 0.55) * tallest) * self.h
            top = ground * self.h - height
            glass = self.rng.random() < 0.4
            base = (np.array([0.42, 0.55, 0.68]) if glass else np.array([0.55, 0.52, 0.48]) * self.rng.uniform(0.6, 1.2))
            mask = (self.cols >= x - width / 2) & (self.cols < x + width / 2) & (self.rows >= top) & (
                self.rows < ground * self.h)
            win = ((self.cols.astype(int) // 5) % 2 == 0) & ((self.rows.astype(int) // 7) % 2 == 0)
            rgb = base * (1 - 0.25 * win[..., None]) * (0.9 + 0.1 * self.rng.random())
            self.paint(mask, np.broadcast_to(rgb, (self.h, self.w, 3)), 0)

    def trees(self, side: str, reach: float, ground: float) -> None:
        """A tree line on the ``side`` (left/right) whose crowns rise to row ``reach * H`` (< 0: out of frame)."""
        x = self.cols[0] / self.w
        edge = x if side == "left" else 1 - x  # 0 at the trees' side
        low = ground * self.h - 0.08 * self.h  # the line's height far from its side
        top = reach * self.h + (low - reach * self.h) * np.clip(edge / 0.6, 0, 1) ** 0.7
        top = top + 0.03 * self.h * _ridge(self.rng, self.w, 7)
        mask = (self.rows >= top[None, :]) & (self.rows < ground * self.h)
        tex = self.noise(6, 24)
        rgb = np.array([0.10, 0.22, 0.09]) * (1 + 0.6 * tex[..., None])
        self.paint(mask, rgb, 0)

    def water(self, top: float, bottom: float, tint, ripple: float) -> None:
        """A lake or sea from row ``top * H`` to ``bottom * H`` mirroring what is above it."""
        t, b = int(top * self.h), int(bottom * self.h)
        rows = np.arange(t, b)
        mirror = self.img[np.clip(2 * t - 1 - rows, 0, self.h - 1)] * 0.72 + np.array(tint, np.float32)
        rip = cv2.resize(self.noise(5, 16)[t:b], (self.w // 8, b - t))
        rip = cv2.resize(rip, (self.w, b - t), interpolation=cv2.INTER_CUBIC)
        mask = np.zeros((self.h, self.w), bool)
        mask[t:b] = True
        full = np.zeros_like(self.img)
        full[t:b] = mirror * (1 + ripple * rip[..., None])
        self.paint(mask, full, 2)

    def falls(self, x0: float, x1: float, top: float, bottom: float) -> None:
        """A white waterfall between columns x0..x1 (fractions) from row top to bottom (fractions)."""
        streak = cv2.resize(self.rng.random((8, self.w)).astype(np.float32), (self.w, self.h))
        mask = (self.cols >= x0 * self.w) & (self.cols < x1 * self.w) & (self.rows >= top * self.h) & (
            self.rows < bottom * self.h)
        self.paint(mask, (0.82 + 0.15 * streak[..., None]) * np.array([0.95, 0.97, 1.0], np.float32), 2)

    def foreground(self, top: float, colour) -> None:
        rows = self.rows >= int(top * self.h)
        fine, coarse = self.noise(6, 24), self.noise(4, 4)
        self.paint(rows, np.array(colour, np.float32) * (1 + 0.35 * fine[..., None] + 0.25 * coarse[..., None]), 0)

    def photo(self, name: str, quality: int = 88) -> Photo:
        """Lens blur, vignetting, sensor noise and a JPEG round trip of the painting."""
        img = cv2.GaussianBlur(np.clip(self.img, 0, 1), (0, 0), 0.6)
        r2 = ((self.rows / self.h - 0.5) ** 2 + (self.cols / self.w - 0.5) ** 2)[..., None]
        img = img * (1 - 0.25 * r2) + self.rng.normal(0, 0.012, img.shape).astype(np.float32)
        u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        _, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        u8 = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return Photo(name, u8.astype(np.float32) / 255, self.label == 1, self.label == 2)


def mountain_lake(seed: int, size: int = 512) -> Photo:
    """Blue-grey mountains, one summit out of the top of the frame, over a lake (the issue's failing photo)."""
    c = _Canvas(np.random.default_rng(seed), size, size)
    c.sky("cloudy" if seed % 2 else "clear", 0.5)
    c.terrain(c.profile(0.5, 0.28, peak=(0.25 + 0.5 * (seed % 3) / 2, 0.45)), 0.5, (0.40, 0.47, 0.58), 0.25, 0.25)
    c.terrain(c.profile(0.5, 0.08), 0.5, (0.18, 0.30, 0.20), 0.3, 0.1)
    c.water(0.5, 0.72, (0.02, 0.05, 0.09), 0.12)
    c.foreground(0.72, (0.33, 0.40, 0.18))
    return c.photo(f"mountain_lake_{seed}")


def snow_peaks(seed: int, size: int = 512) -> Photo:
    """Snow-capped peaks in a deep-blue sky, one leaving the frame; bright snow against the sky."""
    c = _Canvas(np.random.default_rng(seed), size, size)
    c.sky("clear" if seed % 2 else "hazy", 0.55)
    c.terrain(c.profile(0.58, 0.35, peak=(0.7 - 0.3 * (seed % 2), 0.5)), 0.62, (0.38, 0.36, 0.38), 0.4, 0.05,
              snow=0.45)
    c.terrain(c.profile(0.62, 0.1), 0.66, (0.25, 0.30, 0.18), 0.3, 0.05)
    c.foreground(0.66, (0.38, 0.42, 0.22))
    return c.photo(f"snow_peaks_{seed}")


def city_skyline(seed: int, size: int = 512) -> Photo:
    """Grey and glass-blue blocks on a river bank, the tallest tower out of the frame."""
    c = _Canvas(np.random.default_rng(seed), size, size)
    c.sky(("hazy", "overcast", "clear")[seed % 3], 0.6)
    c.buildings(0.62, 12, 0.7)
    c.water(0.62, 0.8, (0.03, 0.04, 0.06), 0.15)
    c.foreground(0.8, (0.42, 0.40, 0.38))
    return c.photo(f"city_skyline_{seed}")


def forest_edge(seed: int, size: int = 512) -> Photo:
    """A tree line rising out of the frame on one side of a meadow with a pond."""
    c = _Canvas(np.random.default_rng(seed), size, size)
    c.sky("cloudy" if seed % 2 else "overcast", 0.55)
    c.terrain(c.profile(0.55, 0.12), 0.55, (0.36, 0.48, 0.52), 0.2, 0.45)
    c.trees("left" if seed % 2 else "right", -0.15, 0.7)
    c.water(0.55, 0.62, (0.02, 0.05, 0.05), 0.08)
    c.foreground(0.62, (0.30, 0.45, 0.16))
    return c.photo(f"forest_edge_{seed}")


def sunset_coast(seed: int, size: int = 512) -> Photo:
    """An orange-pink sky over dark headlands and the sea."""
    c = _Canvas(np.random.default_rng(seed), size, size)
    c.sky("sunset", 0.5)
    c.terrain(c.profile(0.5, 0.15, peak=(0.15 if seed % 2 else 0.85, 0.25)), 0.5, (0.16, 0.13, 0.16), 0.25, 0.1)
    c.water(0.5, 0.85, (0.02, 0.02, 0.05), 0.2)
    c.foreground(0.85, (0.35, 0.30, 0.24))
    return c.photo(f"sunset_coast_{seed}")


def waterfall(seed: int, size: int = 512) -> Photo:
    """Cliffs out of the frame on both sides, a strip of sky between them, a white waterfall into a pool."""
    c = _Canvas(np.random.default_rng(seed), size, size)
    c.sky("cloudy", 0.4)
    w = c.w
    x = np.arange(w) / w
    cliff_top = np.where(np.abs(x - 0.5) > 0.18, -0.2 * c.h, 0.3 * c.h) + 10 * _ridge(c.rng, w, 6)
    c.terrain(cliff_top, 0.75, (0.32, 0.30, 0.26), 0.45, 0.0)
    c.falls(0.44, 0.56, 0.3, 0.75)
    c.water(0.75, 0.9, (0.03, 0.06, 0.06), 0.25)
    c.foreground(0.9, (0.30, 0.38, 0.20))
    return c.photo(f"waterfall_{seed}")


SCENES: dict[str, Callable[[int, int], Photo]] = {
    "mountain_lake": mountain_lake, "snow_peaks": snow_peaks, "city_skyline": city_skyline,
    "forest_edge": forest_edge, "sunset_coast": sunset_coast, "waterfall": waterfall,
}


def labelled_set(seeds: tuple[int, ...] = (1, 2), size: int = 512) -> list[Photo]:
    """Every scene of ``SCENES`` painted with each seed."""
    return [paint(seed, size) for paint in SCENES.values() for seed in seeds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for p in labelled_set(size=args.size):
        cv2.imwrite(str(args.out / f"{p.name}.png"), cv2.cvtColor((p.image * 255 + 0.5).astype(np.uint8),
                                                                  cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(args.out / f"{p.name}_sky.png"), p.sky.astype(np.uint8) * 255)
        print(args.out / f"{p.name}.png")


if __name__ == "__main__":
    main()
