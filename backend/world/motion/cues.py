"""Per-view motion cues: a dense 2D Eulerian flow and the mask of the moving material.

Every source ends in the same ``MotionCue``:

- a motion-estimation model (``MotionProvider``; the U-Net image -> flow predictor in ``eulerian.py``),
- artist region presets (``preset_cue``: clouds, water, smoke, fog, fire on a mask with a direction and speed),
- artist strokes (``hint_cue``: polylines in pixel coordinates, densified over their region),
- the built-in fallback (``fallback_cue``: presets on the sky and water masks of a segmentation provider).

Conventions, stated once: flow is in pixels per frame in image coordinates (x to the right, y DOWN, i.e. column
and row directions); the pixel (row i, column j) has its centre at (j + 0.5, i + 0.5). Directions given by an
artist (``direction=(dx, dy)``) are on screen as the artist sees it: x to the right, y UP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage

from backend.errors import InvalidInput

# Material codes of ``MotionCue.material``; 0 = not moving.
MATERIALS = ("none", "clouds", "water", "smoke", "fog", "fire", "hint", "model")
MATERIAL_CODE = {name: i for i, name in enumerate(MATERIALS)}
PRESETS = ("clouds", "water", "smoke", "fog", "fire")


@dataclass(frozen=True)
class MotionCue:
    """Dense 2D motion of one view.

    flow:     (H, W, 2) float32, pixels per frame (x right, y down); zero outside ``mask``.
    mask:     (H, W) bool, pixels of moving material.
    material: (H, W) uint8 codes into ``MATERIALS`` (what moves there; decides the surface constraint in 3D).
    """

    flow: np.ndarray
    mask: np.ndarray
    material: np.ndarray

    def __post_init__(self):
        h, w = self.mask.shape
        if self.flow.shape != (h, w, 2) or self.material.shape != (h, w):
            raise InvalidInput(f"motion cue shapes disagree: flow {self.flow.shape}, mask {self.mask.shape}, "
                               f"material {self.material.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @staticmethod
    def empty(height: int, width: int) -> MotionCue:
        return MotionCue(np.zeros((height, width, 2), np.float32), np.zeros((height, width), bool),
                         np.zeros((height, width), np.uint8))


def combine_cues(cues: list[MotionCue]) -> MotionCue:
    """Overlay cues in order: a later cue replaces earlier ones where its mask is set."""
    if not cues:
        raise InvalidInput("no motion cues to combine")
    h, w = cues[0].shape
    flow, mask, material = np.zeros((h, w, 2), np.float32), np.zeros((h, w), bool), np.zeros((h, w), np.uint8)
    for c in cues:
        if c.shape != (h, w):
            raise InvalidInput(f"motion cues of different sizes: {c.shape} vs {(h, w)}")
        flow[c.mask] = c.flow[c.mask]
        material[c.mask] = c.material[c.mask]
        mask |= c.mask
    return MotionCue(flow, mask, material)


class MotionProvider(Protocol):
    """A model that predicts the Eulerian motion of an image's fluid regions."""

    name: str

    def predict(self, image: np.ndarray, mask: np.ndarray | None = None) -> MotionCue:
        """image (H, W, 3) float32 RGB in [0, 1], optional mask (H, W) of the material to animate -> MotionCue."""
        ...


# ------------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class PresetCharacter:
    """How a material moves: flow = speed * (drift * d + rise * up + turbulence * curl_noise(scale)), then
    multiplied per pixel by (1 + flicker * n(x)) with n smooth noise in [-1, 1] of the same scale."""

    drift: float  # weight of the artist's direction d
    rise: float  # weight of screen-up (smoke and fire rise whatever the direction)
    turbulence: float  # RMS of a divergence-free curl-noise field relative to speed
    noise_scale: float  # noise feature size as a fraction of the image's smaller side
    flicker: float  # spatial modulation of the speed


CHARACTERS: dict[str, PresetCharacter] = {
    "clouds": PresetCharacter(drift=1.0, rise=0.0, turbulence=0.0, noise_scale=0.25, flicker=0.0),
    "water": PresetCharacter(drift=1.0, rise=0.0, turbulence=0.15, noise_scale=0.08, flicker=0.0),
    "smoke": PresetCharacter(drift=0.4, rise=1.0, turbulence=0.5, noise_scale=0.12, flicker=0.0),
    "fog": PresetCharacter(drift=0.3, rise=0.0, turbulence=0.08, noise_scale=0.3, flicker=0.0),
    "fire": PresetCharacter(drift=0.2, rise=1.0, turbulence=0.3, noise_scale=0.05, flicker=0.5),
}


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise normalised to unit RMS, (H, W) float64."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(sigma, 0.5), mode="wrap")
    return n / max(float(np.sqrt(np.mean(n**2))), 1e-12)


def curl_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Divergence-free 2D noise (H, W, 2): the curl of a smooth scalar potential psi,
    u = (d psi / dy, -d psi / dx), normalised to unit RMS magnitude."""
    psi = _smooth_noise(shape, sigma, rng)
    dpsi_dy, dpsi_dx = np.gradient(psi)
    u = np.stack([dpsi_dy, -dpsi_dx], axis=-1)
    return u / max(float(np.sqrt(np.mean(np.sum(u**2, axis=-1)))), 1e-12)


def _screen_direction(direction: tuple[float, float]) -> np.ndarray:
    """Artist direction (dx right, dy up) -> unit image-space vector (x right, y down)."""
    d = np.array([direction[0], -direction[1]], dtype=np.float64)
    n = float(np.linalg.norm(d))
    if not np.isfinite(n) or n == 0:
        raise InvalidInput(f"motion direction {direction} has no length; give e.g. (1, 0) for 'to the right'")
    return d / n


def preset_cue(preset: str, mask: np.ndarray, direction: tuple[float, float] = (1.0, 0.0), speed: float = 1.0,
               seed: int = 0) -> MotionCue:
    """Flow of a material preset over ``mask`` (H, W) bool.

    ``direction`` is on screen (x right, y up), ``speed`` in pixels per frame. The characters (``CHARACTERS``):
    clouds drift uniformly; water flows along the direction with small turbulence; smoke rises with curl
    noise; fog drifts slowly; fire rises with strong small-scale speed variation (flicker).
    """
    if preset not in CHARACTERS:
        raise InvalidInput(f"unknown motion preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not np.isfinite(speed) or speed < 0:
        raise InvalidInput(f"motion speed must be a non-negative number of pixels per frame, got {speed}")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise InvalidInput(f"motion region mask must be (H, W), got {mask.shape}")
    ch = CHARACTERS[preset]
    h, w = mask.shape
    rng = np.random.default_rng(seed)
    sigma = ch.noise_scale * min(h, w)
    d = _screen_direction(direction)
    flow = np.empty((h, w, 2), np.float64)
    flow[...] = ch.drift * d + ch.rise * np.array([0.0, -1.0])
    if ch.turbulence > 0:
        flow += ch.turbulence * curl_noise((h, w), sigma, rng)
    if ch.flicker > 0:
        flow *= np.clip(1.0 + ch.flicker * np.tanh(_smooth_noise((h, w), sigma, rng)), 0.0, None)[..., None]
    flow *= speed
    flow[~mask] = 0.0
    material = np.where(mask, MATERIAL_CODE[preset], 0).astype(np.uint8)
    return MotionCue(flow.astype(np.float32), mask.copy(), material)


# ------------------------------------------------------------------------------------------------- hints
def _stroke_samples(strokes: list, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample polylines every ``spacing`` pixels -> positions (K, 2) and unit tangents (K, 2)."""
    pos, tan = [], []
    for k, s in enumerate(strokes):
        p = np.asarray(s, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 2:
            raise InvalidInput(f"motion hint stroke {k} must be a list of at least two (x, y) pixel points")
        seg = np.diff(p, axis=0)
        length = np.linalg.norm(seg, axis=1)
        keep = length > 1e-9
        if not keep.any():
            raise InvalidInput(f"motion hint stroke {k} has no length (all its points coincide)")
        seg, length, start = seg[keep], length[keep], p[:-1][keep]
        for a, v, n in zip(start, seg, length):
            m = max(int(np.ceil(n / spacing)), 1)
            t = (np.arange(m) + 0.5) / m
            pos.append(a + t[:, None] * v)
            tan.append(np.repeat((v / n)[None], m, axis=0))
    return np.concatenate(pos), np.concatenate(tan)


def densify_hints(positions: np.ndarray, vectors: np.ndarray, shape: tuple[int, int],
                  sigma: float, levels: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Multi-scale normalised convolution of sparse 2D vectors into a dense field.

    With samples splatted into images V(x) = sum_k v_k [x = p_k] and W(x) = sum_k [x = p_k], the dense field is
    u(x) = sum_s (G_s * V)(x) / sum_s (G_s * W)(x) over Gaussians of std sigma * 2^s, s = 0..levels-1: near
    the samples the fine scales dominate (their normalised kernels peak higher), far away the coarse ones fill in.
    Returns the field (H, W, 2) and the confidence sum_s (G_s * W) (H, W).
    """
    h, w = shape
    cols = np.clip(np.floor(positions[:, 0]).astype(int), 0, w - 1)
    rows = np.clip(np.floor(positions[:, 1]).astype(int), 0, h - 1)
    V = np.zeros((h, w, 2))
    W = np.zeros((h, w))
    np.add.at(V, (rows, cols), vectors)
    np.add.at(W, (rows, cols), 1.0)
    num = np.zeros((h, w, 2))
    den = np.zeros((h, w))
    for s in range(levels):
        sg = sigma * 2.0**s
        den += ndimage.gaussian_filter(W, sg, mode="constant")
        for c in range(2):
            num[..., c] += ndimage.gaussian_filter(V[..., c], sg, mode="constant")
    return num / np.maximum(den, 1e-30)[..., None], den


def hint_cue(strokes: list, shape: tuple[int, int], speed: float = 1.0, mask: np.ndarray | None = None,
             radius: float | None = None, material: str = "hint") -> MotionCue:
    """Dense cue from artist strokes.

    strokes: list of polylines, each a list of (x, y) pixel points in the drawing order (image coordinates,
    y down); the motion follows each stroke's tangent at ``speed`` pixels per frame. The region is ``mask``
    when given, else the pixels within ``radius`` (default 15% of the image diagonal) of a stroke.
    """
    h, w = shape
    if not strokes:
        raise InvalidInput("no motion hint strokes given")
    pos, tan = _stroke_samples(strokes, spacing=2.0)
    field, _ = densify_hints(pos, tan, (h, w), sigma=max(2.0, 0.01 * np.hypot(h, w)))
    norm = np.linalg.norm(field, axis=-1, keepdims=True)
    field = speed * field / np.maximum(norm, 1e-9)
    if mask is None:
        radius = 0.15 * np.hypot(h, w) if radius is None else radius
        seeds = np.ones((h, w), bool)
        seeds[np.clip(pos[:, 1].astype(int), 0, h - 1), np.clip(pos[:, 0].astype(int), 0, w - 1)] = False
        region = ndimage.distance_transform_edt(seeds) <= radius
    else:
        region = np.asarray(mask, dtype=bool)
        if region.shape != (h, w):
            raise InvalidInput(f"hint region mask has shape {region.shape}, the view is {(h, w)}")
    field[~region] = 0.0
    code = MATERIAL_CODE.get(material)
    if code is None:
        raise InvalidInput(f"unknown material {material!r}; choose one of {', '.join(MATERIALS[1:])}")
    return MotionCue(field.astype(np.float32), region, np.where(region, code, 0).astype(np.uint8))


# ------------------------------------------------------------------------------------------------- fallback
def fallback_cue(sky: np.ndarray, water: np.ndarray, cloud_direction: tuple[float, float] = (1.0, 0.0),
                 water_direction: tuple[float, float] = (0.0, -1.0), speed: float = 1.0, seed: int = 0) -> MotionCue:
    """No model, no artist input: clouds drift over ``sky``, water flows over ``water`` (both (H, W) bool).

    Defaults: clouds drift to the right; water flows towards the viewer (down the screen) at ``speed`` px/frame,
    clouds at half of it (they are far, their apparent motion is slow).
    """
    sky = np.asarray(sky, bool)
    water = np.asarray(water, bool) & ~sky
    cues = []
    if sky.any():
        cues.append(preset_cue("clouds", sky, cloud_direction, 0.5 * speed, seed))
    if water.any():
        cues.append(preset_cue("water", water, water_direction, speed, seed + 1))
    if not cues:
        return MotionCue.empty(*sky.shape)
    return combine_cues(cues)


def fallback_cue_from_image(image: np.ndarray, speed: float = 1.0, seed: int = 0) -> MotionCue:
    """``fallback_cue`` on the sky and water of the built-in heuristic segmentation of ``image`` (H, W, 3)."""
    from backend.models.segmentation import HeuristicSegmentation

    regions = HeuristicSegmentation().segment(image)
    return fallback_cue(regions.sky, regions.water, speed=speed, seed=seed)
