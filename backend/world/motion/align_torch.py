"""The alignment's two heavy parts on a torch device (CUDA): nearest previous sample within a radius, and the
RANSAC + IRLS rotation-scale fit. Same functions as ``align``'s k-d tree queries and ``robust_rotation_scale``
(that module's docstring has the maths); ``align_flow`` calls these when its device is CUDA.

Matching uses a uniform grid instead of a k-d tree: previous samples are sorted by the integer cell
floor(x / r) of side r (the match radius), so every sample within r of a query lies in one of the 27 cells
around the query's cell. The candidates of all queries are gathered at once, their squared distances computed
in float64, and each query keeps its nearest candidate closer than r (as ``cKDTree.query(k=1,
distance_upper_bound=r)``). The random draws (RANSAC triples, the scoring subset) come from the same numpy
generator as on the CPU, so both paths try the same hypotheses.
"""

from __future__ import annotations

import numpy as np
import torch

CELL_BITS = 20  # cell coordinates per axis are packed into 21 bits of one int64 key (|cell| < 2^20)
_OFFSETS = torch.tensor([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=torch.int64)


class GridIndex:
    """Previous samples (M, 3) bucketed by cells of side ``cell`` for radius queries on their device."""

    def __init__(self, points: torch.Tensor, cell: float):
        self.points = points
        self.cell = float(cell)
        keys, ok = self._keys(torch.floor(points / self.cell).to(torch.int64))
        if not bool(ok.all()):
            raise ValueError("points span more than 2^20 cells of the match radius per axis")
        self.keys, self.order = torch.sort(keys)
        self.unique, counts = torch.unique_consecutive(self.keys, return_counts=True)
        self.starts = torch.cumsum(counts, 0) - counts
        self.counts = counts

    @staticmethod
    def _keys(cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = 1 << CELL_BITS
        ok = (cells.abs() < half).all(dim=-1)
        c = cells + half
        return (c[..., 0] << (2 * CELL_BITS + 2)) | (c[..., 1] << (CELL_BITS + 1)) | c[..., 2], ok

    def nearest_within(self, queries: torch.Tensor, radius: float, chunk: int = 1 << 14, max_pairs: int = 1 << 25
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance (K,) float64, index (K,) int64) of each query's nearest point closer than ``radius``
        (<= the cell size); inf and M where there is none. Queries go in chunks whose candidate pairs stay
        under ``max_pairs``."""
        m = len(self.points)
        dist = torch.full((len(queries),), float("inf"), dtype=torch.float64, device=queries.device)
        index = torch.full((len(queries),), m, dtype=torch.int64, device=queries.device)
        if m == 0:
            return dist, index
        todo = [(lo, min(lo + chunk, len(queries))) for lo in range(0, len(queries), chunk)]
        while todo:
            lo, hi = todo.pop()
            got = self._nearest(queries[lo:hi], radius, max_pairs)
            if got is None:  # too many candidates at once: halve the chunk
                mid = (lo + hi) // 2
                todo += [(lo, mid), (mid, hi)]
                continue
            dist[lo:hi], index[lo:hi] = got
        return dist, index

    def _nearest(self, q: torch.Tensor, radius: float, max_pairs: int):
        m = len(self.points)
        offsets = _OFFSETS.to(q.device)
        keys, ok = self._keys(torch.floor(q / self.cell).to(torch.int64)[:, None, :] + offsets)  # (k, 27)
        pos = torch.searchsorted(self.unique, keys).clamp_max(len(self.unique) - 1)
        hit = ok & (self.unique[pos] == keys)
        count = torch.where(hit, self.counts[pos], 0).reshape(-1)
        start = self.starts[pos].reshape(-1)
        total = int(count.sum())
        if total > max_pairs and len(q) > 1:
            return None
        owner = torch.repeat_interleave(torch.arange(len(count), device=q.device), count)  # its (query, cell) pair
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        cand = self.order[start[owner] + torch.arange(total, device=q.device) - first]
        qi = owner // 27
        d2 = (self.points[cand] - q[qi]).square().sum(dim=1)
        inside = d2 < radius * radius
        qi, cand, d2 = qi[inside], cand[inside], d2[inside]
        best = torch.full((len(q),), float("inf"), dtype=torch.float64, device=q.device)
        best.scatter_reduce_(0, qi, d2, reduce="amin")
        win = d2 == best[qi]
        pick = torch.full((len(q),), m, dtype=torch.int64, device=q.device)
        pick.scatter_reduce_(0, qi[win], cand[win], reduce="amin")  # ties: the lowest index
        return best.sqrt(), pick


def _spacing(points: torch.Tensor, sample: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Per sampled row of ``points``: the distance to the nearest of its ``k`` nearest points (itself included)
    that is not at the same place; inf if all are (the CPU path's k-d tree query, by exact brute force)."""
    d = torch.cdist(points[sample], points, compute_mode="donot_use_mm_for_euclid_dist")
    near = torch.topk(d, min(k, len(points)), dim=1, largest=False).values
    return torch.where(near > 0, near, torch.full_like(near, float("inf"))).min(dim=1).values


def default_match_radius(points: torch.Tensor, sample: int = 2000, seed: int = 0) -> float:
    """``align.default_match_radius`` on a torch device: 3 x the median over a random sample of the distance
    to the nearest other sample (the same sample as the CPU path draws)."""
    if len(points) < 2:
        return float("inf")
    rng = np.random.default_rng(seed)
    pick = torch.as_tensor(rng.choice(len(points), min(sample, len(points)), replace=False), device=points.device)
    d = torch.cat([_spacing(points, pick[i:i + 256]) for i in range(0, len(pick), 256)])
    d = d[torch.isfinite(d)]
    return 3.0 * _median(d) if len(d) else float("inf")


def _solve(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, identity_prior: float) -> tuple[np.ndarray, float]:
    """``align.solve_rotation_scale`` with the sums on the device and the 3 x 3 SVD on the host."""
    wsum = max(float(w.sum()), 1e-30)
    sigma = ((b * w[:, None]).T @ a / wsum).cpu().numpy()
    if identity_prior > 0:
        mag = float((w * torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)).sum()) / wsum
        sigma = sigma + identity_prior * mag * np.eye(3)
    u, _, vt = np.linalg.svd(sigma)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    rt = torch.as_tensor(r, dtype=a.dtype, device=a.device)
    den = float((w * a.square().sum(dim=1)).sum())
    s = float((w * (b * (a @ rt.T)).sum(dim=1)).sum()) / max(den, 1e-30)
    return r, s


def _median(x: torch.Tensor) -> float:
    """numpy's median (the mean of the two middle values for an even count)."""
    return float(torch.quantile(x, 0.5)) if len(x) <= 16_000_000 else float(np.median(x.cpu().numpy()))


def robust_rotation_scale(a_np: np.ndarray, b_np: np.ndarray, config, device) -> tuple[np.ndarray, float, np.ndarray]:
    """``align.robust_rotation_scale`` with the K matches on ``device``. Returns R, s and the weights (K,)."""
    from .align import _minimal_sets

    k = len(a_np)
    rng = np.random.default_rng(config.seed)
    a = torch.as_tensor(a_np, dtype=torch.float64, device=device)
    b = torch.as_tensor(b_np, dtype=torch.float64, device=device)
    bnorm = torch.linalg.vector_norm(b, dim=1)
    med_b = _median(bnorm)
    thr = config.ransac_threshold * max(med_b, 1e-12)
    if k >= 3 and config.ransac_iterations > 0:
        idx = torch.as_tensor(_minimal_sets(rng, k, config.ransac_iterations), device=device)
        aa, bb = a[idx], b[idx]  # (H, 3, 3): three matches per hypothesis
        sigma = torch.einsum("hki,hkj->hij", bb, aa)
        u, _, vt = torch.linalg.svd(sigma)
        d = torch.sign(torch.linalg.det(u @ vt))
        d = torch.where(d == 0, torch.ones_like(d), d)
        fix = torch.ones((len(idx), 3), dtype=a.dtype, device=device)
        fix[:, 2] = d
        rs = u @ (fix[:, :, None] * vt)
        ra = torch.einsum("hij,hkj->hki", rs, aa)
        ss = (bb * ra).sum(dim=(1, 2)) / (aa * aa).sum(dim=(1, 2)).clamp_min(1e-30)
        sub = torch.as_tensor(rng.choice(k, min(k, config.ransac_score_samples), replace=False), device=device)
        a_s, b_s = a[sub], b[sub]  # ||b - s R a||^2 expanded as the host path does (align._hypothesis_residuals2)
        bra = rs.reshape(len(rs), 9) @ (b_s[:, :, None] * a_s[:, None, :]).reshape(len(sub), 9).T
        res2 = (b_s.square().sum(dim=1)[None] - 2.0 * ss[:, None] * bra
                + ss.square()[:, None] * a_s.square().sum(dim=1)[None]).clamp_min(0.0)
        mid = res2.shape[1] // 2
        upper_median = torch.kthvalue(res2, mid + 1, dim=1).values
        score = (res2 < thr * thr).sum(dim=1) - 1e-9 * upper_median.sqrt()
        best = int(torch.argmax(score))
        inliers = torch.linalg.vector_norm(b - ss[best] * a @ rs[best].T, dim=1) < thr
        if int(inliers.sum()) < 3:
            inliers = torch.ones(k, dtype=torch.bool, device=device)
    else:
        inliers = torch.ones(k, dtype=torch.bool, device=device)
    w = inliers.to(a.dtype)
    r, s = _solve(a, b, w, config.identity_prior)
    for _ in range(config.irls_iterations):
        rt = torch.as_tensor(r, dtype=a.dtype, device=device)
        res = torch.linalg.vector_norm(b - s * a @ rt.T, dim=1)
        good = res[w > 0.5]
        sigma = 1.4826 * _median(good) if len(good) else _median(res)
        delta = config.huber_k * max(sigma, 1e-12 * max(med_b, 1e-30))
        w = torch.minimum(torch.ones_like(res), delta / res.clamp_min(1e-30))
        w = torch.where(res > 3.0 * max(thr, delta), torch.zeros_like(w), w)
        r_new, s_new = _solve(a, b, w, config.identity_prior)
        converged = np.abs(r_new - r).max() < 1e-9 and abs(s_new - s) < 1e-9 * max(abs(s), 1.0)
        r, s = r_new, s_new
        if converged:
            break
    return r, s, w.cpu().numpy()
