"""Real spherical harmonics of the 3DGS reference, in numpy (bpy-free): view-dependent colour and DC <-> RGB.

Coefficients c_k (k = 0 .. (d+1)^2 - 1, degree d <= 3, c_0 the DC term) and view direction d = normalize(mu - eye):

    rgb = clamp(sum_k c_k Y_k(d) + 0.5, 0, 1)        (Y_0 = SH_C0: the DC colour is C0 c_0 + 0.5)
"""

import numpy as np

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(dirs: np.ndarray, degree: int) -> np.ndarray:
    """Real SH basis Y_k(d) of the 3DGS reference, dirs (N, 3) unit -> (N, (degree+1)^2) float32."""
    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    cols = [np.full_like(x, SH_C0)]
    if degree >= 1:
        cols += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        cols += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        cols += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return np.stack(cols, axis=1).astype(np.float32, copy=False)


def sh_to_rgb(sh: np.ndarray, positions: np.ndarray, camera_location: np.ndarray) -> np.ndarray:
    """View-dependent colour: sh (N, K, 3), positions (N, 3), camera_location (3,) -> rgb (N, 3) float32 0..1."""
    degree = round(float(np.sqrt(sh.shape[1]))) - 1
    dirs = positions - np.asarray(camera_location, dtype=np.float32)
    dirs /= np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    basis = sh_basis(dirs, degree)
    rgb = np.einsum("nk,nkc->nc", basis, sh) + 0.5
    return np.clip(rgb, 0.0, 1.0, out=rgb).astype(np.float32, copy=False)


def rgb_to_dc(rgb: np.ndarray) -> np.ndarray:
    """Inverse of the degree-0 colour: c_0 = (rgb - 0.5) / C0."""
    return ((rgb - 0.5) / SH_C0).astype(np.float32)


def dc_to_rgb(dc: np.ndarray) -> np.ndarray:
    """Degree-0 colour clamp(C0 c_0 + 0.5, 0, 1) as float32."""
    return np.clip(dc * SH_C0 + 0.5, 0.0, 1.0).astype(np.float32)
