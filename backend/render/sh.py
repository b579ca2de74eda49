"""Real spherical harmonics, degree 0..3, in the basis and sign convention of 3DGS / gsplat.

The view-dependent colour of a Gaussian seen along the unit direction d = (x, y, z) (from the camera centre
to the Gaussian mean, world frame) is

    colour = max(0, sum_k Y_k(d) * c_k + 0.5)

with c_k the (K, 3) coefficients (``sh[:, 0]`` the DC term) and Y_k the real SH basis below (constants of
Sloan, "Efficient Spherical Harmonic Evaluation", JCGT 2013, the ones INRIA's and gsplat's kernels use).
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Basis values Y_k(d) for unit directions ``dirs`` (..., 3) -> (..., (degree + 1) ** 2)."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2.0 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            C3[0] * y * (3.0 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4.0 * zz - xx - yy),
            C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            C3[4] * x * (4.0 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_color(degree: int, dirs: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """View-dependent colour max(0, sum_k Y_k(d/|d|) c_k + 0.5).

    dirs: (N, 3) directions camera -> Gaussian (need not be unit); coeffs: (N, K, 3) with K >= (degree+1)^2.
    Returns (N, 3).
    """
    k = (degree + 1) ** 2
    if coeffs.shape[-2] < k:
        raise ValueError(f"SH degree {degree} needs {k} coefficients per channel, got {coeffs.shape[-2]}")
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, unit)  # (N, k)
    return (torch.einsum("nk,nkc->nc", basis, coeffs[:, :k]) + 0.5).clamp_min(0.0)
