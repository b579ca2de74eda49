"""Geometry-aware alignment of a new view's scene flow to the flow the world already has (LIVINGWORLD.md
stage 4).

A motion cue is known only up to a rotation and scale of its vectors (a flow model may say "left" in one view and
"right, twice as fast" in the next), and each material's cue on its own (one preset or stroke set per region).
Per material, with the match set M (each new sample paired with its nearest previous sample of the same material
in 3D, within ``match_radius``) we solve

    min over R in SO(3), s > 0 of  sum_{k in M} w_k || b_k - s R a_k ||^2      (a = new vectors, b = previous)

Vectors carry no translation, so (unlike point-set Umeyama) nothing is centred:
    Sigma = sum_k w_k b_k a_k^T / sum_k w_k,  Sigma = U D V^T,  R = U diag(1, 1, det(U V^T)) V^T,
    s = sum_k w_k b_k . (R a_k) / sum_k w_k ||a_k||^2.
Robustness: RANSAC over minimal sets of 3 matches (score: matches with ||b - sRa|| < threshold * median ||b||),
then IRLS with Huber weights w_k = min(1, delta / r_k), delta = huber_k * 1.4826 * median(r) from the RANSAC
inliers. When the flows in the overlap are all parallel (uniform drift) the rotation about that direction is
free: a small prior ``lambda I`` added to Sigma picks the solution closest to the identity.

After s R is applied to the whole new view, motion is kept on the surfaces it lives on: water in the ground's
tangent plane (v <- v - (v . n) n, n the ground normal: a plane fitted to the water samples, or world up), and
clouds on the sky layer (the sky is a far shell around the camera: v <- v - (v . r) r, r the unit ray from the
camera centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from backend.errors import InvalidInput

from .cues import MATERIAL_CODE, MATERIALS
from .lift import SceneFlow

AlignStatus = Literal["first_view", "no_overlap", "aligned"]


@dataclass(frozen=True)
class AlignConfig:
    match_radius: float | None = None  # world units; None: 3 x the median spacing of the previous samples
    min_matches: int = 20  # fewer matches than this: no overlap, the view keeps its own scale
    ransac_iterations: int = 256
    ransac_score_samples: int = 1000  # matches each RANSAC hypothesis is scored on (ranks them to ~1.5 %)
    ransac_threshold: float = 0.3  # inlier if ||b - sRa|| < threshold * median ||b||
    fit_samples: int = 8192  # matches the RANSAC + IRLS fit runs on (a random subset); the outlier test sees all
    irls_iterations: int = 20
    huber_k: float = 1.345
    identity_prior: float = 1e-3  # lambda relative to the mean ||a|| ||b||
    ground_normal: tuple[float, float, float] = (0.0, 0.0, 1.0)  # world up (Blender Z-up), used without a fit
    seed: int = 0


@dataclass(frozen=True)
class AlignResult:
    """The aligned flow and what was solved.

    flow: the new view's samples with vectors s R a, constrained to their surfaces (rejected outliers left out).
    rotation (3, 3), scale: the solved transform (identity and 1 for the first view or without overlap).
    status: "first_view" (nothing to align to), "no_overlap" (too few matches: flag it in the UI), "aligned".
    matches: number of matched samples; inlier_fraction: share of them the robust fit kept (weight > 0.5);
    residual: median ||b - s R a|| / median ||b|| over the matches after the fit.
    """

    flow: SceneFlow
    rotation: np.ndarray
    scale: float
    status: AlignStatus
    matches: int = 0
    inlier_fraction: float = 0.0
    residual: float = 0.0
    dropped: int = 0  # matched samples rejected as outliers and left out of ``flow``
    materials: dict = field(default_factory=dict)  # material name -> {"rotation", "scale", "matches"} it was aligned with


def solve_rotation_scale(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None,
                         identity_prior: float = 0.0) -> tuple[np.ndarray, float]:
    """Weighted closed form for min sum w ||b - s R a||^2 over R in SO(3), s (see module docstring).

    a, b: (K, 3) vectors; weights (K,). Returns R (3, 3) and s.
    """
    w = np.ones(len(a)) if weights is None else np.asarray(weights, np.float64)
    wsum = max(float(w.sum()), 1e-30)
    sigma = (b * w[:, None]).T @ a / wsum
    if identity_prior > 0:
        mag = float(np.sum(w * np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))) / wsum
        sigma = sigma + identity_prior * mag * np.eye(3)
    u, _, vt = np.linalg.svd(sigma)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    den = float(np.sum(w * np.sum(a * a, axis=1)))
    s = float(np.sum(w * np.sum(b * (a @ r.T), axis=1))) / max(den, 1e-30)
    return r, s


def _batched_rotation_scale(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted closed form for a batch: a, b (H, m, 3) -> R (H, 3, 3), s (H,)."""
    sigma = np.einsum("hki,hkj->hij", b, a)
    u, _, vt = np.linalg.svd(sigma)
    d = np.sign(np.linalg.det(u @ vt))
    d[d == 0] = 1.0
    fix = np.ones((len(a), 3))
    fix[:, 2] = d
    r = u @ (fix[:, :, None] * vt)
    ra = np.einsum("hij,hkj->hki", r, a)
    s = np.sum(b * ra, axis=(1, 2)) / np.maximum(np.sum(a * a, axis=(1, 2)), 1e-30)
    return r, s


def _hypothesis_residuals2(a: np.ndarray, b: np.ndarray, rs: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """||b_k - s_h R_h a_k||^2 for every hypothesis h and match k: (H, K), from a (K, 3), b (K, 3), rs (H, 3, 3),
    ss (H,). Expanded as ||b||^2 - 2 s (b a^T) : R + s^2 ||a||^2 (R keeps lengths), so the (H, K, 3) differences
    are never formed: one (H, 9) x (9, K) product (a batch of 3 x 3 products took 10 ms of the 25k-match alignment
    on the CPU box). Rounding can leave a residual of ~1e-16 ||b||^2 below zero: clipped."""
    outer = (b[:, :, None] * a[:, None, :]).reshape(len(a), 9)  # b_i a_j per match
    bra = rs.reshape(len(rs), 9) @ outer.T  # b . R a, (H, K)
    res2 = np.sum(b * b, axis=1)[None] - 2.0 * ss[:, None] * bra + (ss * ss)[:, None] * np.sum(a * a, axis=1)[None]
    return np.maximum(res2, 0.0, out=res2)


def _minimal_sets(rng: np.random.Generator, k: int, count: int) -> np.ndarray:
    """``count`` random triples of distinct indices below ``k`` (k >= 3): drawn at once, triples with a repeat
    drawn again (rare for large k)."""
    idx = rng.integers(0, k, (count, 3))
    while True:
        bad = (idx[:, 0] == idx[:, 1]) | (idx[:, 0] == idx[:, 2]) | (idx[:, 1] == idx[:, 2])
        if not bad.any():
            return idx
        idx[bad] = rng.integers(0, k, (int(bad.sum()), 3))


def robust_rotation_scale(a: np.ndarray, b: np.ndarray, config: AlignConfig = AlignConfig()
                          ) -> tuple[np.ndarray, float, np.ndarray]:
    """RANSAC start + Huber IRLS (see module docstring). Returns R, s and the final weights (K,).

    With more than ``config.fit_samples`` matches the fit runs on a random subset of that many (a 4-parameter
    transform is fixed long before: the estimate's spread shrinks as 1 / sqrt(K)); the final Huber weights, and
    so the outliers, are then computed for every match from that fit.
    """
    k = len(a)
    rng = np.random.default_rng(config.seed)
    a_all, b_all = a, b
    if 0 < config.fit_samples < k:
        sub = rng.choice(k, config.fit_samples, replace=False)
        a, b = a[sub], b[sub]
    n = len(a)
    bnorm = np.linalg.norm(b, axis=1)
    thr = config.ransac_threshold * max(float(np.median(bnorm)), 1e-12)
    if n >= 3 and config.ransac_iterations > 0:
        idx = _minimal_sets(rng, n, config.ransac_iterations)
        rs, ss = _batched_rotation_scale(a[idx], b[idx])
        # hypotheses are scored on a random subset (enough to rank them), the winner on every match
        sub = rng.choice(n, min(n, config.ransac_score_samples), replace=False)
        res2 = _hypothesis_residuals2(a[sub], b[sub], rs, ss)  # squared residuals (H, S)
        mid = res2.shape[1] // 2  # ties broken by the (upper) median residual: squares rank like residuals
        score = (res2 < thr * thr).sum(axis=1) - 1e-9 * np.sqrt(np.partition(res2, mid, axis=1)[:, mid])
        best = int(np.argmax(score))
        inliers = np.linalg.norm(b - ss[best] * a @ rs[best].T, axis=1) < thr
        if inliers.sum() < 3:
            inliers = np.ones(n, bool)
    else:
        inliers = np.ones(n, bool)
    w = inliers.astype(np.float64)
    r, s = solve_rotation_scale(a, b, w, config.identity_prior)

    def huber(res, w):  # Huber weights of residuals ``res`` at the scale of the current inliers ``w``
        sigma = 1.4826 * float(np.median(res[w > 0.5])) if (w > 0.5).any() else float(np.median(res))
        delta = config.huber_k * max(sigma, 1e-12 * max(float(np.median(bnorm)), 1e-30))
        return delta, weights(res, delta)

    def weights(res, delta):
        w = np.minimum(1.0, delta / np.maximum(res, 1e-30))
        w[res > 3.0 * max(thr, delta)] = 0.0  # far outliers get no vote at all (redescending tail)
        return w

    delta = None
    for _ in range(config.irls_iterations):
        delta, w = huber(np.linalg.norm(b - s * a @ r.T, axis=1), w)
        r_new, s_new = solve_rotation_scale(a, b, w, config.identity_prior)
        converged = np.abs(r_new - r).max() < 1e-9 and abs(s_new - s) < 1e-9 * max(abs(s), 1.0)
        r, s = r_new, s_new
        if converged:
            break
    if n < k:  # every match's weight from the subset's fit and scale
        if delta is None:
            delta, _ = huber(np.linalg.norm(b - s * a @ r.T, axis=1), w)
        w = weights(np.linalg.norm(b_all - s * a_all @ r.T, axis=1), delta)
    return r, s, w


def default_match_radius(points: np.ndarray, sample: int = 2000, seed: int = 0, tree: cKDTree | None = None) -> float:
    """3 x the median distance from a previous sample to its nearest other sample (duplicates ignored).
    ``tree``: a ``cKDTree`` of ``points`` already built (one build serves this and the matching)."""
    if len(points) < 2:
        return float("inf")
    rng = np.random.default_rng(seed)
    q = points[rng.choice(len(points), min(sample, len(points)), replace=False)]
    d, _ = (tree if tree is not None else cKDTree(points)).query(q, k=8, workers=-1)
    d = np.where(d > 0, d, np.inf).min(axis=1)  # the nearest sample at another place (repeats of a view coincide)
    d = d[np.isfinite(d)]
    return 3.0 * float(np.median(d)) if len(d) else float("inf")


def fit_plane_normal(points: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Unit normal of the least-squares plane through points (K, 3) (smallest principal axis), oriented like
    ``fallback``; ``fallback`` itself when there are too few points or they are not planar."""
    fallback = np.asarray(fallback, np.float64) / np.linalg.norm(fallback)
    if len(points) < 50:
        return fallback
    c = points - points.mean(axis=0)
    evals, evecs = np.linalg.eigh(c.T @ c / len(points))
    if evals[0] > 0.05 * evals[1]:  # a bowl or a blob, not a surface
        return fallback
    n = evecs[:, 0]
    return n if n @ fallback >= 0 else -n


def constrain_to_surfaces(flow: SceneFlow, camera_center: np.ndarray | None,
                          ground_normal=(0.0, 0.0, 1.0)) -> SceneFlow:
    """Water vectors into the ground's tangent plane, cloud vectors tangent to the sky shell around the camera."""
    v = flow.vectors.copy()
    water = flow.material == MATERIAL_CODE["water"]
    if water.all():  # one material (the common view): no masked copies
        n = fit_plane_normal(flow.points, np.asarray(ground_normal, np.float64))
        v -= (v @ n)[:, None] * n
    elif water.any():
        n = fit_plane_normal(flow.points[water], np.asarray(ground_normal, np.float64))
        v[water] -= (v[water] @ n)[:, None] * n
    clouds = flow.material == MATERIAL_CODE["clouds"]
    if clouds.any() and camera_center is not None:
        ray = flow.points[clouds] - np.asarray(camera_center, np.float64)
        ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-12)
        v[clouds] -= np.sum(v[clouds] * ray, axis=1, keepdims=True) * ray
    return flow.with_vectors(v)


@dataclass(frozen=True)
class MatchIndex:
    """What ``align_flow`` builds over the previous samples before it can match on the host: per material code,
    (the previous rows of that material, a k-d tree over their points, the match radius). ``match_index`` builds it
    ahead, e.g. while an expansion outpaints, so that the alignment itself only queries and fits."""

    previous: SceneFlow
    config: AlignConfig
    materials: dict[int, tuple[np.ndarray, cKDTree, float]]


def _tree(points: np.ndarray) -> cKDTree:
    return cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=False)  # quick to build


def _material_entry(previous: SceneFlow, code: int, config: AlignConfig) -> tuple[np.ndarray, cKDTree, float] | None:
    """(rows, tree, radius) of the previous samples of material ``code``, or None when there are none."""
    if bool(np.all(previous.material == code)):  # every previous sample (no copy of their points)
        rows, pts = np.arange(len(previous)), previous.points
    else:
        rows = np.flatnonzero(previous.material == code)
        if len(rows) == 0:
            return None
        pts = previous.points[rows]
    tree = _tree(pts)
    radius = config.match_radius if config.match_radius is not None else default_match_radius(pts, tree=tree)
    return rows, tree, radius


def match_index(previous: SceneFlow, config: AlignConfig = AlignConfig()) -> MatchIndex:
    """The ``MatchIndex`` of ``previous`` for ``align_flow(..., index=)`` (the same alignment as without it)."""
    materials = {}
    for code in np.unique(previous.material):
        entry = _material_entry(previous, int(code), config)
        if entry is not None:
            materials[int(code)] = entry
    return MatchIndex(previous, config, materials)


def _query(tree: cKDTree, radius: float, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest point of ``tree`` within ``radius``: (distance, index), inf and n where none."""
    if not math.isfinite(radius):
        return tree.query(queries, k=1, distance_upper_bound=radius, workers=-1)
    dist = np.full(len(queries), np.inf)
    index = np.full(len(queries), tree.n, dtype=np.int64)
    # only queries inside the points' box (grown by the radius) can have a match: the rest of an expansion's new
    # view is not searched (the same answer, in about half the time)
    lo, hi = tree.mins - radius, tree.maxes + radius  # the tree's bounds are the points' (no second pass)
    near = np.flatnonzero(np.all((queries >= lo) & (queries <= hi), axis=1))
    if len(near):
        dist[near], index[near] = tree.query(queries[near], k=1, distance_upper_bound=radius, workers=-1)
    return dist, index


def _match(prev_pts: np.ndarray, queries: np.ndarray, config: AlignConfig, device) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest previous point within the match radius: (distance, index), inf and len(prev_pts)
    where none. ``device`` None: a k-d tree on the host; a torch device: ``align_torch.GridIndex`` there (the
    same answer; a tree again if the points span too many cells of the radius)."""
    if device is not None:
        import torch

        from . import align_torch

        pts = torch.as_tensor(prev_pts, dtype=torch.float64, device=device)
        radius = (config.match_radius if config.match_radius is not None
                  else align_torch.default_match_radius(pts))
        if math.isfinite(radius) and radius > 0:
            try:
                grid = align_torch.GridIndex(pts, radius)
            except ValueError:
                grid = None
            if grid is not None:
                q = torch.as_tensor(queries, dtype=torch.float64, device=device)
                dist, j = grid.nearest_within(q, radius)
                return dist.cpu().numpy(), j.cpu().numpy()
        config = replace(config, match_radius=radius)
    tree = _tree(prev_pts)
    radius = config.match_radius if config.match_radius is not None else default_match_radius(prev_pts, tree=tree)
    return _query(tree, radius, queries)


def _device(device):
    """None (numpy / scipy on the host) or the torch device the heavy parts run on. "auto" is the host: measured on
    an H100 (bench/motion_update_gpu.py, 2026-12-07) the host path aligns in 0.115 s and the CUDA path in 0.584 s
    (the RANSAC and IRLS are many small launches); a torch device name still selects ``align_torch``."""
    if device is None or device == "auto":
        return None
    import torch

    return torch.device(device)


def align_flow(new: SceneFlow, previous: SceneFlow | None, camera_center: np.ndarray | None = None,
               config: AlignConfig = AlignConfig(), device: str | None = "auto",
               index: MatchIndex | None = None) -> AlignResult:
    """Align ``new`` (one view's lifted flow) to ``previous`` (the world's aligned samples so far).

    Each material is aligned on its own matches (new samples paired with previous samples of the same material):
    cues of different materials are independent (a preset per region, strokes per region), and a dense sky
    overlap must not decide the water's transform. A material with too few matches of its own takes the
    transform of the material with the most matches (the view-level guess). ``rotation``/``scale`` report that
    best-matched material's transform; ``materials`` each aligned material's. ``device``: where the matching
    and the robust fit run ("auto" and None: numpy / scipy on the host, the faster on an H100 too; a torch device
    name: ``align_torch`` on that device); every path computes the same alignment. ``index``: ``match_index`` of
    ``previous`` with the same ``config``, built ahead (host matching only).
    """
    dev = _device(device)
    if index is not None and (index.previous is not previous or index.config != config):
        raise ValueError("the match index was built for other previous samples or another alignment config")
    if len(new) == 0:
        raise InvalidInput("the view has no motion samples to align (empty mask, or no depth under it)")
    eye = np.eye(3)
    if previous is None or len(previous) == 0:
        return AlignResult(constrain_to_surfaces(new, camera_center, config.ground_normal), eye, 1.0, "first_view")
    moving_new = np.any(new.vectors != 0, axis=1)
    solved: dict[int, tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]] = {}
    total = 0
    for code in np.unique(new.material):
        sel = np.flatnonzero(new.material == code)
        if dev is None:  # host: a k-d tree per material, built here or ahead (``index``)
            entry = (index.materials.get(int(code)) if index is not None else
                     _material_entry(previous, int(code), config))
            if entry is None:
                continue
            prev_sel, tree, radius = entry
            dist, j = _query(tree, radius, new.points[sel])
        else:
            prev_sel = np.flatnonzero(previous.material == code)
            if len(prev_sel) == 0:
                continue
            dist, j = _match(previous.points[prev_sel], new.points[sel], config, dev)
        matched = np.isfinite(dist)
        matched &= moving_new[sel]
        b = previous.vectors[prev_sel[j[matched]]]
        moving = np.any(b != 0, axis=1)  # only the matched previous samples need to be moving
        matched[matched] = moving
        a, b = new.vectors[sel[matched]], b[moving]
        total += len(a)
        if len(a) < config.min_matches:
            continue
        if dev is None:
            r, s, w = robust_rotation_scale(a, b, config)
        else:
            from .align_torch import robust_rotation_scale as robust_on_device

            r, s, w = robust_on_device(a, b, config, dev)
        if s <= 0:
            raise InvalidInput("motion alignment found no rotation that maps the new view's flow onto the existing "
                               f"one for {MATERIALS[int(code)]} (the overlap's motion is inconsistent); check the "
                               "motion hints of this view")
        solved[int(code)] = (r, s, w, sel[matched], np.linalg.norm(b - s * a @ r.T, axis=1) /
                             max(float(np.median(np.linalg.norm(b, axis=1))), 1e-30))
    if not solved:
        return AlignResult(constrain_to_surfaces(new, camera_center, config.ground_normal), eye, 1.0, "no_overlap",
                           matches=total)
    best = max(solved, key=lambda c: len(solved[c][3]))
    vectors = new.vectors.copy()
    keep = np.ones(len(new), bool)
    for code in np.unique(new.material):
        r, s = solved[int(code)][:2] if int(code) in solved else solved[best][:2]
        sel = new.material == code
        vectors[sel] = s * vectors[sel] @ r.T
    for r, s, w, rows, _ in solved.values():
        keep[rows[w == 0]] = False  # matched samples the robust fit rejected contradict the world's motion
    aligned = constrain_to_surfaces(new.with_vectors(vectors).subset(keep), camera_center, config.ground_normal)
    weights = np.concatenate([v[2] for v in solved.values()])
    r, s, _, _, rel = solved[best]
    return AlignResult(aligned, r, s, "aligned", matches=total, inlier_fraction=float(np.mean(weights > 0.5)),
                       residual=float(np.median(rel)), dropped=int((~keep).sum()),
                       materials={MATERIALS[c]: {"rotation": v[0].tolist(), "scale": v[1], "matches": len(v[3])}
                                  for c, v in solved.items()})
