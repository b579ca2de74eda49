"""Single-pass vs multi-pass multi-expert rendering: agreement and speed (and why a shared transmittance fails).

K experts that reconstruct the same scene are imitated by K jittered copies of one random cloud (positions
moved by 20 % of the Gaussians' size, colours by 0.05), so their surfaces interleave in depth as trained
experts' do. For each size it renders the K expert images (colour, alpha, one gate channel) three ways:

- multipass: one ``rasterize`` per expert (the reference result),
- single:    ``mixture.splat_experts(mode="single")``: one projection, one sort, one compositing pass with one
             transmittance per expert,
- shared:    ONE plain ``rasterize`` of the union with colours masked per expert (transmittance shared by all
             experts), expert k's image estimated as (C_k / A_k) A + (1 - A) background.

and prints the max |difference| to multipass and the shared variant's PSNR against it, plus median times.

    .venv/bin/python bench/moe_mixture_single_pass.py [--device cpu|cuda] [--sizes 2000,8000] [--res 160x120]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from backend.gaussians import Gaussians, rgb_to_sh_dc
from backend.moe.mixture import splat_experts
from backend.render.cameras import camera_from_fov
from backend.render.rasterize import RasterConfig, rasterize
from backend.render.sh import sh_to_color


def experts_like(n: int, k: int, device) -> list[Gaussians]:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.8, 0.3, 0.5])
    log_scales = torch.full((n, 3), -3.0) + 0.3 * torch.randn(n, 3, generator=g)
    rgb = torch.rand(n, 3, generator=g)
    out = []
    for _ in range(k):
        sh = torch.zeros(n, 4, 3)
        sh[:, 0] = rgb_to_sh_dc((rgb + 0.05 * torch.randn(n, 3, generator=g)).clamp(0, 1))
        out.append(Gaussians(means=means + 0.2 * log_scales.exp() * torch.randn(n, 3, generator=g),
                             quats=torch.randn(n, 4, generator=g), log_scales=log_scales,
                             opacity_logits=torch.randn(n, generator=g) + 2.0, sh=sh).to_torch(device))
    return out


def shared_transmittance(gs, gates, cam, raster):
    """The naive one-pass variant (module docstring): (colors (K, H, W, 3), gate splats (K, H, W))."""
    union = Gaussians.concatenate(gs)
    k, dev = len(gs), union.means.device
    onehot = torch.cat([torch.nn.functional.one_hot(torch.full((len(g),), i, device=dev), k) for i, g in
                        enumerate(gs)]).float()
    rgb = sh_to_color(union.sh_degree, union.means - torch.as_tensor(cam.center, dtype=torch.float32, device=dev),
                      union.sh)
    extra = torch.cat([(onehot[:, :, None] * rgb[:, None, :]).reshape(len(union), -1), onehot,
                       onehot * torch.cat(gates)[:, None]], 1)
    out = rasterize(union, cam, raster, extra)
    c = out.extra[..., :3 * k].reshape(out.extra.shape[0], out.extra.shape[1], k, 3).permute(2, 0, 1, 3)
    a_k = out.extra[..., 3 * k:4 * k].permute(2, 0, 1).clamp_min(1e-8)
    a = out.alpha[None]
    bg = torch.as_tensor(raster.background, device=dev)
    colors = c / a_k[..., None] * a[..., None] + (1 - a)[..., None] * bg
    return colors, out.extra[..., 4 * k:].permute(2, 0, 1) / a_k * a


def timed(fn, device, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="2000,8000")
    ap.add_argument("--experts", type=int, default=3)
    ap.add_argument("--res", default="160x120")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    w, h = (int(v) for v in args.res.split("x"))
    cam = camera_from_fov((0.3, -3.0, 0.4), (0.0, 0.0, 0.0), w, h, 50.0)
    raster = RasterConfig(background=(0.2, 0.3, 0.4))
    print(f"device {device}, {args.experts} experts, {w}x{h}, median of {args.reps}")
    print("| Gaussians per expert | multipass ms | single ms | speed-up | single max abs diff | "
          "shared-T max abs diff | shared-T PSNR vs multipass (dB) |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        gs = experts_like(n, args.experts, device)
        gates = [torch.randn(n, generator=torch.Generator().manual_seed(i)).to(device) for i in range(len(gs))]
        extras = [g[:, None] for g in gates]
        with torch.no_grad():
            multi = splat_experts(gs, cam, raster, extras, "multipass")
            single = splat_experts(gs, cam, raster, extras, "single")
            shared_c, _ = shared_transmittance(gs, gates, cam, raster)
            t_multi = timed(lambda gs=gs, extras=extras: splat_experts(gs, cam, raster, extras, "multipass"), device, args.reps)
            t_single = timed(lambda gs=gs, extras=extras: splat_experts(gs, cam, raster, extras, "single"), device, args.reps)
        diff = max(float((single.colors - multi.colors).abs().max()), float((single.extras - multi.extras).abs().max()))
        sdiff = float((shared_c - multi.colors).abs().max())
        mse = float(((shared_c.clamp(0, 1) - multi.colors.clamp(0, 1)) ** 2).mean())
        print(f"| {n} | {1e3 * t_multi:.1f} | {1e3 * t_single:.1f} | {t_multi / t_single:.2f}x | {diff:.1e} | "
              f"{sdiff:.3f} | {-10 * torch.log10(torch.tensor(mse)).item():.1f} |")


if __name__ == "__main__":
    main()
