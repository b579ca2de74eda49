"""Evaluate trained experts on the held-out camera(s), the way the field reports dynamic novel-view synthesis.

Per expert, over every frame of every test camera: PSNR (dB, -10 log10 MSE on [0, 1] images, averaged over
images), SSIM (3DGS's definition: Gaussian window 11, sigma 1.5; ``losses.ssim``), LPIPS (AlexNet, the
``lpips`` package) only when that package and its weights load locally, else reported as not available;
render FPS (``gaussians_at(t)`` + rasterization of all test images after one warm-up render, on the device
used), model size (bytes of parameters and buffers), Gaussian count and training time (from ``log.json``).

Writes ``<run>/report.json`` and ``<run>/grid.png``: the held-out view at the first, middle and last frame,
ground truth in the first column and one column per expert.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInput
from ..render.rasterize import RasterConfig, rasterize
from .data import MultiViewVideo
from .losses import psnr, ssim
from .train import TrainConfig, load_checkpoint, load_run_video, read_run, resolve_device


def _lpips_model(device):
    """(model, None) when LPIPS can run offline, else (None, reason)."""
    try:
        import lpips
    except ImportError:
        return None, "not available: the lpips package is not installed"
    try:
        return lpips.LPIPS(net="alex", verbose=False).to(device), None
    except Exception as exc:  # noqa: BLE001 -- weights missing offline: reported, evaluation goes on
        return None, f"not available: LPIPS weights could not be loaded ({exc.__class__.__name__})"


@torch.no_grad()
def render_expert(expert, video: MultiViewVideo, cam: int, frame: int, raster: RasterConfig) -> torch.Tensor:
    """(H, W, 3) render of ``expert`` from camera ``cam`` at frame ``frame``."""
    out = rasterize(expert.gaussians_at(float(video.times[frame])), video.cameras[cam], raster)
    return out.color.clamp(0, 1)


def checkpointed_experts(run: Path) -> list[str]:
    """Every expert folder of ``run`` with a checkpoint, sorted; not only run.json's list: bench/moe_device_runs.sh
    trains each expert of a run in its own process, and each rewrites run.json with its one expert."""
    return sorted(d.name for d in Path(run).iterdir() if (d / "checkpoint.pt").is_file())


def evaluate_run(run: str | Path, experts: list[str] | None = None, device: str = "auto") -> dict:
    """Evaluate the experts of ``run`` (default: all trained) and write report.json + grid.png."""
    run = Path(run)
    meta = read_run(run)
    names = experts or [n for n in meta["experts"] if (run / n / "checkpoint.pt").is_file()]
    if not names:
        raise InvalidInput(f"{run} has no trained expert (no <expert>/checkpoint.pt)")
    video = load_run_video(run)
    cfg = TrainConfig.from_dict(meta["train_config"])
    dev = resolve_device(device)
    raster = RasterConfig(background=cfg.background)
    lp, lp_reason = _lpips_model(dev)
    pairs = [(c, f) for c in video.test for f in range(video.num_frames)]
    grid_frames = sorted({0, video.num_frames // 2, video.num_frames - 1})
    grid_cols = [[video.images[video.test[0], f] for f in grid_frames]]
    report = {"dataset": meta["dataset"], "test_cameras": [video.names[c] for c in video.test],
              "frames": video.num_frames, "size": list(video.size), "device": str(dev),
              "lpips": "AlexNet (lpips package)" if lp is not None else lp_reason, "experts": {}}
    for name in names:
        expert, ckpt = load_checkpoint(run / name / "checkpoint.pt", dev)
        expert.eval()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        render_expert(expert, video, *pairs[0], raster)  # warm-up
        scores = {"psnr": [], "ssim": [], "lpips": []}
        renders = {}
        t0 = time.perf_counter()
        for c, f in pairs:
            renders[(c, f)] = render_expert(expert, video, c, f, raster)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        fps = len(pairs) / (time.perf_counter() - t0)
        for (c, f), img in renders.items():
            gt = torch.from_numpy(video.frame(c, f)).to(dev)
            scores["psnr"].append(psnr(img, gt))
            scores["ssim"].append(float(ssim(img, gt)))
            if lp is not None:
                scores["lpips"].append(float(lp(img.permute(2, 0, 1)[None] * 2 - 1, gt.permute(2, 0, 1)[None] * 2 - 1)))
        log_path = run / name / "log.json"
        log = json.loads(log_path.read_text()) if log_path.is_file() else {}
        report["experts"][name] = {
            "psnr": float(np.mean(scores["psnr"])), "ssim": float(np.mean(scores["ssim"])),
            "lpips": float(np.mean(scores["lpips"])) if scores["lpips"] else None,
            "psnr_per_frame": [round(v, 3) for v in scores["psnr"]],
            "fps": fps, "num_gaussians": expert.num_gaussians, "size_bytes": expert.num_bytes(),
            "iterations": ckpt["step"], "train_time_s": log.get("train_time_s", ckpt["elapsed_s"]),
        }
        grid_cols.append([(renders[(video.test[0], f)].cpu().numpy() * 255).round().astype(np.uint8)
                          for f in grid_frames])
    (run / "report.json").write_text(json.dumps(report, indent=1))
    write_grid(run / "grid.png", grid_cols, ["ground truth"] + names, [f"t={video.times[f]:.2f}" for f in grid_frames])
    return report


def write_grid(path: Path, columns: list[list[np.ndarray]], titles: list[str], row_titles: list[str]) -> None:
    """Picture grid: columns of equally sized uint8 images with a title above each column."""
    import cv2

    w = columns[0][0].shape[1]
    scale = max(1, int(np.ceil(256 / w)))  # small test renders are enlarged (nearest) to stay readable
    band = 22
    rows = []
    header = np.full((band, w * scale * len(columns), 3), 255, np.uint8)
    for i, t in enumerate(titles):
        cv2.putText(header, t, (i * w * scale + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    rows.append(header)
    for r, label in enumerate(row_titles):
        row = np.concatenate([np.kron(col[r], np.ones((scale, scale, 1), np.uint8)) for col in columns], 1)
        row = np.ascontiguousarray(row)
        cv2.putText(row, label, (4, row.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    cv2.imwrite(str(path), np.concatenate(rows, 0)[..., ::-1])


def region_oracle(renders: torch.Tensor, truth: torch.Tensor, block: int) -> dict:
    """What a router that picks one expert per ``block`` x ``block`` pixel tile could reach at best: for every image
    and tile the expert with the lowest squared error there, chosen with the ground truth (an upper bound for
    one-expert-per-region routing; a soft blend can do a little better where errors cancel).

    ``renders`` (K, N, H, W, 3) in [0, 1]: K experts' renders of N held-out images; ``truth`` (N, H, W, 3).
    Returns {"psnr": mean over images of the oracle composite's PSNR (dB, as ``evaluate_run``), "wins": (K,) share
    of the pixels each expert was picked for, "choice": (N, H, W) int64 expert index per pixel}.
    """
    if renders.ndim != 5 or renders.shape[1:] != truth.shape or block < 1:
        raise InvalidInput(f"renders (K, N, H, W, 3) and truth (N, H, W, 3) of the same images and a block >= 1 "
                           f"expected, got {tuple(renders.shape)}, {tuple(truth.shape)}, block {block}")
    k, n, h, w, _ = renders.shape
    err = ((renders.clamp(0, 1) - truth[None]) ** 2).sum(-1)  # (K, N, H, W)
    tile = torch.nn.functional.avg_pool2d(err.reshape(k * n, 1, h, w), block, ceil_mode=True).reshape(k, n, -1)
    pick = tile.argmin(0).reshape(n, 1, (h + block - 1) // block, (w + block - 1) // block)
    choice = pick.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, 0, :h, :w]  # (N, H, W)
    chosen = torch.gather(err, 0, choice[None]).squeeze(0)  # (N, H, W) squared error summed over RGB
    mse = chosen.reshape(n, -1).mean(1) / 3
    psnrs = -10 * torch.log10(mse.clamp_min(1e-12))
    wins = torch.bincount(choice.reshape(-1), minlength=k).double() / choice.numel()
    return {"psnr": float(psnrs.mean()), "wins": wins.tolist(), "choice": choice}


def blend_oracle(renders: torch.Tensor, truth: torch.Tensor, block: int) -> dict:
    """What a router with one set of blend weights per ``block`` x ``block`` pixel tile could reach at best: for every
    image and tile the convex combination of the experts (weights >= 0, summing to 1, as the router's normalised
    pixel weights) with the lowest squared error there, chosen with the ground truth. Bounds a soft router the way
    ``region_oracle`` bounds a hard one; a block as large as the image gives the best constant blend.

    Exact: with residuals a_k = r_k - truth over the tile, the error of weights w is w^T G w (G_kl = <a_k, a_l>);
    the minimum over the simplex is, on its support S, the affine minimum w_S = G_S^-1 1 / (1^T G_S^-1 1). Every
    support (2^K - 1 of them, K <= 6) is solved at once for every tile, and the best one with w >= 0 kept.

    Shapes as ``region_oracle``. Returns {"psnr": mean over images of the blend's PSNR (dB), "weights": (K,) mean
    weight of each expert over the pixels, "weight_maps": (K, N, H, W)}.
    """
    if renders.ndim != 5 or renders.shape[1:] != truth.shape or block < 1:
        raise InvalidInput(f"renders (K, N, H, W, 3) and truth (N, H, W, 3) of the same images and a block >= 1 "
                           f"expected, got {tuple(renders.shape)}, {tuple(truth.shape)}, block {block}")
    k, n, h, w, _ = renders.shape
    if not 1 <= k <= 6:
        raise InvalidInput(f"the blend oracle solves every subset of the experts: 1 to 6 experts, got {k}")
    r = renders.clamp(0, 1).double()
    res = r - truth[None].double()  # (K, N, H, W, 3)
    prod = (res[:, None] * res[None]).sum(-1)  # (K, K, N, H, W): per-pixel <a_k, a_l>
    gram = torch.nn.functional.avg_pool2d(prod.reshape(k * k * n, 1, h, w), block, ceil_mode=True)
    th, tw = gram.shape[-2:]
    gram = gram.reshape(k, k, n, th, tw).permute(2, 3, 4, 0, 1)  # (N, th, tw, K, K)
    like = {"dtype": gram.dtype, "device": gram.device}  # the renders' device (the oracle runs on the GPU too)
    eye = torch.eye(k, **like)
    ridge = 1e-12 * eye + 1e-9 * gram.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None] * eye
    best_err = torch.full(gram.shape[:3], float("inf"), **like)
    best_w = torch.zeros(*gram.shape[:3], k, **like)
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            idx = list(subset)
            g = (gram + ridge)[..., idx, :][..., :, idx]
            x = torch.linalg.solve(g, torch.ones(*g.shape[:-1], 1, **like))[..., 0]  # G_S^-1 1
            ws = x / x.sum(-1, keepdim=True)
            full = torch.zeros_like(best_w)
            full[..., idx] = ws
            err = (full[..., None, :] @ gram @ full[..., :, None])[..., 0, 0]
            ok = (ws >= -1e-9).all(-1) & (err < best_err)
            best_err = torch.where(ok, err, best_err)
            best_w = torch.where(ok[..., None], full.clamp_min(0), best_w)
    best_w = best_w / best_w.sum(-1, keepdim=True)
    maps = best_w.permute(3, 0, 1, 2).repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :h, :w]
    blend = (maps[..., None] * r).sum(0).to(truth.dtype)  # (N, H, W, 3)
    psnrs = [psnr(b, t) for b, t in zip(blend, truth)]
    return {"psnr": float(np.mean(psnrs)), "weights": maps.reshape(k, -1).mean(1).tolist(), "weight_maps": maps}
