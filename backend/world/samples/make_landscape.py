"""Procedural landscape picture used as the bundled demo input (``landscape.png``).

A real photograph is not bundled, so the sample is painted from fractal noise: a sky gradient with soft
clouds, two ranges of distant hills fading into haze, a lake that mirrors the sky, and a grassy foreground
whose texture gets finer towards the horizon. Run ``python -m backend.world.samples.make_landscape`` to
rewrite the PNG (deterministic: fixed seed).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SAMPLE_PATH = Path(__file__).with_name("landscape.png")


def _fractal_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 6, base: int = 4) -> np.ndarray:
    """Sum of bicubically upsampled random grids with halving amplitude; (h, w) float32 in about [-1, 1]."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = base * 2**o
        grid = rng.standard_normal((n, n)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.55
    return out / total


def _ridge(rng: np.random.Generator, w: int, octaves: int = 5) -> np.ndarray:
    """1-D fractal profile (w,) in about [-1, 1]."""
    out = np.zeros(w, np.float32)
    amp = 1.0
    for o in range(octaves):
        n = 3 * 2**o
        pts = rng.standard_normal(n + 1).astype(np.float32)
        out += amp * np.interp(np.linspace(0, n, w), np.arange(n + 1), pts).astype(np.float32)
        amp *= 0.5
    return out / 1.9


def make_landscape(size: int = 512, seed: int = 7) -> np.ndarray:
    """Paint the sample landscape: (size, size, 3) uint8 RGB."""
    rng = np.random.default_rng(seed)
    h = w = size
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    horizon = 0.53  # lake's far shore, as a fraction of the height
    # Sky: deep blue at the zenith to pale blue-white at the horizon.
    zenith, pale = np.array([0.22, 0.42, 0.78]), np.array([0.78, 0.86, 0.94])
    t = np.clip(rows / horizon, 0, 1) ** 0.8
    img = (1 - t) * zenith + t * pale
    img = np.broadcast_to(img, (h, w, 3)).copy()
    # Clouds: thresholded fractal noise, stretched horizontally, thinning towards the horizon.
    cloud = _fractal_noise(rng, h, 2 * w, octaves=6, base=3)[:, ::2]
    cover = np.clip((cloud - 0.05) * 3.0, 0, 1) * np.clip(1.2 - rows[..., 0] / horizon, 0, 1)
    shade = 0.92 - 0.15 * np.clip(_fractal_noise(rng, h, w, 4, 6), -1, 1)
    img = img * (1 - cover[..., None]) + cover[..., None] * shade[..., None] * np.array([1.0, 1.0, 1.0])
    shore = int(horizon * h)
    x = np.arange(w)
    # Two hill ranges: far (hazy blue-green) and near (darker green); each painted above its base line.
    for base_frac, height, colour, haze in ((0.0, 0.16, (0.42, 0.55, 0.60), 0.45), (0.0, 0.09, (0.20, 0.38, 0.22), 0.15)):
        profile = shore - (height * h * (0.55 + 0.45 * _ridge(rng, w))).astype(int)
        tex = _fractal_noise(rng, h, w, 5, 8)
        for xi in x:
            top = max(profile[xi], 0)
            seg = slice(top, shore)
            c = np.array(colour) * (1 + 0.25 * tex[seg, xi][:, None])
            c = (1 - haze) * c + haze * pale
            img[seg, xi] = c
    # Lake: mirrored sky, darkened, with horizontal ripples.
    lake_end = int(0.68 * h)
    lake_rows = np.arange(shore, lake_end)
    mirror = img[np.clip(2 * shore - 1 - lake_rows, 0, h - 1)] * 0.75 + np.array([0.02, 0.06, 0.10])
    ripple = _fractal_noise(rng, h, w, 5, 16)[shore:lake_end]
    ripple = cv2.resize(ripple, (w // 8, lake_end - shore))
    ripple = cv2.resize(ripple, (w, lake_end - shore), interpolation=cv2.INTER_CUBIC)
    img[shore:lake_end] = mirror * (1 + 0.12 * ripple[..., None])
    # Foreground grass: green-brown, texture frequency rising towards the horizon (perspective).
    g_rows = np.arange(lake_end, h)
    fine = _fractal_noise(rng, h, w, 6, 24)[lake_end:]
    coarse = _fractal_noise(rng, h, w, 4, 4)[lake_end:]
    depth_t = ((g_rows - lake_end) / (h - lake_end))[:, None, None]
    grass = np.array([0.30, 0.45, 0.16]) * (1 - 0.3 * depth_t) + np.array([0.42, 0.36, 0.20]) * 0.3 * depth_t
    img[lake_end:] = grass * (1 + 0.35 * fine[..., None] + 0.25 * coarse[..., None]) * (0.8 + 0.3 * depth_t)
    # A muddy shoreline strip between lake and grass.
    img[lake_end - 3:lake_end + 2] = img[lake_end - 3:lake_end + 2] * 0.6 + np.array([0.35, 0.30, 0.22]) * 0.4
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def main() -> None:
    rgb = make_landscape()
    cv2.imwrite(str(SAMPLE_PATH), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    print(SAMPLE_PATH)


if __name__ == "__main__":
    main()
