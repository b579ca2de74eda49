"""Image losses and metrics: L1, SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5, as 3DGS), PSNR."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device="cpu") -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, size: int = 11) -> torch.Tensor:
    """Mean SSIM of two (H, W, 3) images in [0, 1]:
    SSIM = ((2 mu_a mu_b + C1)(2 sigma_ab + C2)) / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2)),
    C1 = 0.01^2, C2 = 0.03^2, local statistics under a Gaussian window (zero padding, as 3DGS)."""
    x = a.permute(2, 0, 1)[:, None]
    y = b.permute(2, 0, 1)[:, None]
    w = _window(size, dtype=a.dtype, device=a.device)
    pad = size // 2
    mu_x, mu_y = F.conv2d(x, w, padding=pad), F.conv2d(y, w, padding=pad)
    sxx = F.conv2d(x * x, w, padding=pad) - mu_x**2
    syy = F.conv2d(y * y, w, padding=pad) - mu_y**2
    sxy = F.conv2d(x * y, w, padding=pad) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return m.mean()


def photometric_loss(pred: torch.Tensor, gt: torch.Tensor, ssim_weight: float = 0.2) -> torch.Tensor:
    """3DGS loss: (1 - lambda) L1 + lambda (1 - SSIM), lambda = 0.2."""
    return (1 - ssim_weight) * (pred - gt).abs().mean() + ssim_weight * (1 - ssim(pred, gt))


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]: -10 log10 MSE."""
    mse = ((pred.clamp(0, 1) - gt) ** 2).mean()
    return float(-10 * torch.log10(mse.clamp_min(1e-12)))
