"""GPU figures of the rendering core (run on the device machine, see docs/bench/render.md for the command).

(a) Parity: gsplat (CUDA) vs our torch reference on random scenes — several sizes, SH degrees 0-3, antialiased
    on/off. Images: max abs error and relative L2 error ||a - b|| / ||b|| per output (colour, alpha, depth, extra);
    gradients of a random linear loss: relative L2 error per parameter. The float64 reference is the ground truth
    for both float32 renderers.
(b) Speed, 1920x1080: one 4D frame = ``gather_frame`` (a 1M-Gaussian sequence's dynamic channels, resident on the
    GPU, written into the base tensors) + ``rasterize``; also each part alone and forward+backward. CUDA events,
    median of many runs after warm-up. Where the code has ``RasterConfig(depth=...)``: the frame as the sequence
    render job makes it (RGB + alpha, no depth channel), also with 32-pixel tiles.

Prints tables; ``--out DIR`` (or ``--json FILE``) also writes them as JSON. ``--dry``: the CPU reference at a tiny
size (checks the script). ``LW_CODE`` picks the code tree measured (``bench/gpu_common.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import median_ms, use_code_tree

use_code_tree()
from backend.gaussians import Gaussians
from backend.render import rasterize as rasterize_mod
from backend.render.cameras import camera_from_fov
from backend.render.frames import DeviceSequence, gather_frame
from backend.render.rasterize import RasterConfig, rasterize

PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh")


def random_scene(n: int, sh_degree: int, device, dtype=torch.float32, seed: int = 0, radius: float = 2.0,
                 scale=(0.005, 0.05)) -> Gaussians:
    """n Gaussians in a ball of ``radius`` around the origin, log-uniform scales, random rotations/opacity/SH."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    means = d / d.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=g) ** (1 / 3) * radius
    lo, hi = math.log(scale[0]), math.log(scale[1])
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.2
    sh[:, 0] = torch.randn(n, 3, generator=g) * 0.8
    return Gaussians(means=means, quats=torch.randn(n, 4, generator=g),
                     log_scales=torch.rand(n, 3, generator=g) * (hi - lo) + lo,
                     opacity_logits=torch.randn(n, generator=g) * 1.5, sh=sh).to_torch(device, dtype)


def scene_camera(width: int, height: int):
    return camera_from_fov(eye=[0.0, -5.0, 1.5], target=[0.0, 0.0, 0.0], width=width, height=height, fov_deg=50.0,
                           near=0.05, far=100.0)


def render_with_grads(g: Gaussians, extra, camera, config, weights):
    """Render and backpropagate sum(weights * outputs); returns (outputs dict, grads dict)."""
    leaves = {p: getattr(g, p).detach().clone().requires_grad_() for p in PARAMS}
    ex = extra.detach().clone().requires_grad_()
    out = rasterize(Gaussians(**leaves), camera, config, extra=ex)
    outs = {"color": out.color, "alpha": out.alpha, "depth": out.depth * out.alpha.detach(), "extra": out.extra}
    loss = sum((weights[k].to(v.dtype) * v).sum() for k, v in outs.items())
    loss.backward()
    grads = {p: leaves[p].grad for p in PARAMS} | {"extra": ex.grad}
    return {k: v.detach() for k, v in outs.items()}, grads


def rel_l2(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def parity_case(n: int, width: int, height: int, degree: int, antialiased: bool, seed: int = 0, device="cuda",
                backends=(("gsplat", "gsplat"), ("ref32", "reference"))) -> dict:
    """gsplat (float32) and reference (float32) vs reference (float64), same scene, camera and loss."""
    dev = torch.device(device)
    g = random_scene(n, degree, dev, torch.float64, seed=seed)
    extra = torch.rand(n, 2, device=dev, dtype=torch.float64, generator=torch.Generator(dev).manual_seed(seed))
    cam = scene_camera(width, height)
    gen = torch.Generator(dev).manual_seed(seed + 1)
    weights = {k: torch.rand(height, width, *c, device=dev, generator=gen, dtype=torch.float64)
               for k, c in {"color": (3,), "alpha": (), "depth": (), "extra": (2,)}.items()}
    cfg = RasterConfig(antialiased=antialiased, background=(0.1, 0.2, 0.3))
    g32 = Gaussians(**{p: getattr(g, p).float() for p in PARAMS})
    truth = render_with_grads(g, extra, cam, replace(cfg, backend="reference"), weights)
    row = {"n": n, "size": f"{width}x{height}", "sh": degree, "aa": antialiased}
    for name, backend in backends:
        outs, grads = render_with_grads(g32, extra.float(), cam, replace(cfg, backend=backend), weights)
        for k in outs:
            row[f"{name}.img.{k}.max_abs"] = float((outs[k].double() - truth[0][k]).abs().max())
            row[f"{name}.img.{k}.rel_l2"] = rel_l2(outs[k], truth[0][k])
        for p in grads:
            row[f"{name}.grad.{p}.rel_l2"] = rel_l2(grads[p], truth[1][p])
    return row


def parity_table(cases) -> list[dict]:
    rows = []
    for n, w, h in cases:
        for degree in range(4):
            for aa in (False, True):
                rows.append(parity_case(n, w, h, degree, aa, seed=n + degree))
    return rows


def cpu_median_ms(fn, iters: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn(0)
    times = []
    for i in range(iters):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def surface_world(n: int, sh_degree: int, device, seed: int = 0) -> Gaussians:
    """A world-like layout: 64 % of the Gaussians tile a 16 x 16 m ground (flat discs, normal +Z) and 36 % a
    cylindrical backdrop (radius 8 m, 4 m high, normals radial), each disc's sigma ~ 0.6 x its spacing, opacity ~0.9.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    n_ground = int(n * 0.64)
    n_wall = n - n_ground
    ground = torch.cat([torch.rand(n_ground, 2, generator=g) * 16 - 8, torch.zeros(n_ground, 1)], 1)
    theta = torch.rand(n_wall, generator=g) * 2 * math.pi
    wall = torch.stack([8 * torch.cos(theta), 8 * torch.sin(theta), torch.rand(n_wall, generator=g) * 4], 1)
    s_ground, s_wall = 0.6 * math.sqrt(256 / n_ground), 0.6 * math.sqrt(2 * math.pi * 8 * 4 / n_wall)
    log_scales = torch.cat([torch.tensor([s_ground, s_ground, 1e-3]).log().expand(n_ground, 3),
                            torch.tensor([1e-3, s_wall, s_wall]).log().expand(n_wall, 3)])
    quats = torch.cat([torch.tensor([1.0, 0, 0, 0]).expand(n_ground, 4),
                       torch.stack([torch.cos(theta / 2), 0 * theta, 0 * theta, torch.sin(theta / 2)], 1)])
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.1
    sh[:, 0] = torch.randn(n, 3, generator=g) * 0.5
    return Gaussians(means=torch.cat([ground, wall]), quats=quats, log_scales=log_scales.clone(),
                     opacity_logits=torch.randn(n, generator=g) * 0.3 + 2.2, sh=sh).to_torch(device)


SCENES = {
    "ball": (random_scene, lambda w, h: scene_camera(w, h)),
    "world": (surface_world, lambda w, h: camera_from_fov(eye=[0.0, -6.0, 1.6], target=[0.0, 0.0, 1.0], width=w,
                                                          height=h, fov_deg=60.0, near=0.05, far=100.0)),
}


def speed_table(n: int = 1_000_000, frames: int = 8, sh_degrees=(0, 3), dynamic_fracs=(1.0, 0.25),
                scenes=("world", "ball"), device="cuda", timer=None, width=1920, height=1080,
                iters: int = 100) -> list[dict]:
    """Per scene, SH degree and dynamic fraction: gather, rasterize, gather + rasterize (the 4D frame),
    forward + backward, and gsplat.rasterization() itself on the same Gaussians (RGB, packed: the library's figure)."""
    dev = torch.device(device)
    timer = timer or functools.partial(median_ms, warmup=5)
    rows = []
    for scene in scenes:
        build, make_cam = SCENES[scene]
        cam = make_cam(width, height)
        for degree in sh_degrees:
            base = build(n, degree, dev, seed=degree)
            for frac in dynamic_fracs:
                rows.append(_speed_row(scene, base, cam, degree, frac, frames, dev, timer, iters))
                print(" | ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
                      flush=True)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _speed_row(scene, base: Gaussians, cam, degree, frac, frames, dev, timer, iters: int = 100) -> dict:
    n = len(base)
    m = int(n * frac)
    idx = torch.randperm(n, device=dev)[:m]
    t = torch.arange(frames, device=dev, dtype=torch.float32)[:, None, None]
    pos = base.means[idx][None] + 0.05 * torch.sin(t + base.means[idx][None])
    rot = torch.nn.functional.normalize(base.quats[idx][None] + 0.1 * torch.cos(t), dim=-1)
    scale = base.log_scales[idx].exp()[None] * (1.0 + 0.1 * torch.sin(t))
    opacity = base.opacity_logits[idx].sigmoid()[None].expand(frames, m).contiguous()
    dseq = DeviceSequence(base=Gaussians(**{p: getattr(base, p).clone() for p in PARAMS}), dynamic_index=idx,
                          channels={"position": pos, "rotation": rot, "scale": scale, "opacity": opacity},
                          frame_count=frames, loop=True)
    row = {"scene": scene, "n": n, "dynamic": m, "sh": degree}
    with torch.no_grad():
        row["gather_ms"] = timer(lambda i: gather_frame(dseq, i % frames), iters)
        row["gather_lerp_ms"] = timer(lambda i: gather_frame(dseq, (i % frames) + 0.5), iters)
        row["rasterize_ms"] = timer(lambda i: rasterize(dseq.base, cam), iters)
        row["frame_ms"] = timer(lambda i: rasterize(gather_frame(dseq, i % frames), cam), iters)
        if "depth" in {f.name for f in dataclasses.fields(RasterConfig)}:  # the RGBA frame of the render job
            rgba = RasterConfig(depth=False)
            row["frame_rgba_ms"] = timer(lambda i: rasterize(gather_frame(dseq, i % frames), cam, rgba), iters)
            rgba32 = RasterConfig(depth=False, tile_size=32)
            row["frame_rgba_tile32_ms"] = timer(lambda i: rasterize(gather_frame(dseq, i % frames), cam, rgba32),
                                                iters)
            if hasattr(rasterize_mod, "AUTO_TILE"):  # the render job's frame: the tile its first frame chose
                auto = RasterConfig(depth=False, tile_size=rasterize_mod.AUTO_TILE)
                row["auto_tile"] = rasterize(gather_frame(dseq, 0), cam, auto).meta["tile_size"]
                row["choose_tile_ms"] = timer(lambda i: rasterize(gather_frame(dseq, i % frames), cam, auto),
                                              iters) - row["frame_rgba_ms" if row["auto_tile"] == 16 else
                                                           "frame_rgba_tile32_ms"]
                chosen = RasterConfig(depth=False, tile_size=row["auto_tile"])
                row["frame_rgba_auto_ms"] = timer(lambda i: rasterize(gather_frame(dseq, i % frames), cam, chosen),
                                                  iters)
        out = rasterize(dseq.base, cam)
        row["visible"] = int(out.meta["visible"].sum())
        row["coverage"] = float(out.alpha.mean())
        if dev.type == "cuda":
            from gsplat import rasterization

            b = dseq.base
            viewmat = torch.as_tensor(cam.world_to_cam, dtype=torch.float32, device=dev)[None]
            K = torch.as_tensor(cam.K, dtype=torch.float32, device=dev)[None]
            row["gsplat_rgb_ms"] = timer(lambda i: rasterization(
                b.means, b.quats, b.log_scales.exp(), b.opacity_logits.sigmoid(), b.sh, viewmat, K, cam.width,
                cam.height, near_plane=cam.near, far_plane=cam.far, sh_degree=degree), iters)
    leaves = {p: getattr(base, p).clone().requires_grad_() for p in PARAMS}

    def train_step(i):
        out = rasterize(Gaussians(**leaves), cam)
        (out.color.sum() + out.alpha.sum()).backward()

    row["fwd_bwd_ms"] = timer(train_step, max(iters // 3, 3))
    return row


def profile_frame(scene="world", n=1_000_000, degree=3, config: RasterConfig | None = None) -> str:
    """CUDA kernel time table of 20 frames (gather + rasterize)."""
    config = config or RasterConfig()
    build, make_cam = SCENES[scene]
    dev = torch.device("cuda")
    base = build(n, degree, dev)
    cam = make_cam(1920, 1080)
    frames = 4
    t = torch.arange(frames, device=dev, dtype=torch.float32)[:, None, None]
    dseq = DeviceSequence(base=base, dynamic_index=torch.arange(n, device=dev),
                          channels={"position": base.means[None] + 0.01 * t}, frame_count=frames, loop=True)
    with torch.no_grad():
        for i in range(5):
            rasterize(gather_frame(dseq, i % frames), cam, config)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for i in range(20):
                rasterize(gather_frame(dseq, i % frames), cam, config)
            torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=15)


def print_table(rows: list[dict], keys: list[str]) -> None:
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys))


def report_parity(parity: list[dict]) -> list[dict]:
    head = ["n", "size", "sh", "aa"]
    print("\n== parity: images (relative L2 error vs float64 reference)")
    print_table(parity, head + [f"{who}.img.{k}.rel_l2" for who in ("gsplat", "ref32")
                                for k in ("color", "alpha", "depth", "extra")])
    print("\n== parity: images (max abs error vs float64 reference)")
    print_table(parity, head + [f"{who}.img.{k}.max_abs" for who in ("gsplat", "ref32")
                                for k in ("color", "alpha", "extra")])
    print("\n== parity: gradients (relative L2 error vs float64 reference)")
    print_table(parity, head + [f"{who}.grad.{p}.rel_l2" for who in ("gsplat", "ref32") for p in PARAMS + ("extra",)])
    return parity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for render_gpu.json")
    ap.add_argument("--json", type=Path, default=None, help="file for the JSON (instead of --out)")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--scenes", default="world,ball")
    ap.add_argument("--sh", default="0,3", help="SH degrees of the speed table")
    ap.add_argument("--fracs", default="1.0,0.25", help="dynamic fractions of the speed table")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--profile", default="world", help="scene of the kernel profile ('' for none)")
    ap.add_argument("--dry", action="store_true", help="CPU reference, 3000 Gaussians at 160x120 (checks the script)")
    args = ap.parse_args()
    dry = args.dry
    if not dry:
        import gsplat

        print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  gsplat {gsplat.__version__}")
    result = {"device": torch.cuda.get_device_name() if not dry else "cpu"}
    if not args.skip_parity:
        cases = [(200, 64, 48), (5000, 256, 192), (50000, 640, 360)] if not dry else [(100, 32, 24)]
        if dry:
            rows = [parity_case(n, w, h, 0, False, device="cpu", backends=(("ref32", "reference"),))
                    for n, w, h in cases]
            result["parity"] = rows
        else:
            result["parity"] = report_parity(parity_table(cases))
    if not args.skip_speed:
        speed = speed_table(n=3000 if dry else 1_000_000, sh_degrees=[int(v) for v in args.sh.split(",")],
                            dynamic_fracs=[float(v) for v in args.fracs.split(",")], scenes=args.scenes.split(","),
                            device="cpu" if dry else "cuda", timer=cpu_median_ms if dry else None,
                            width=160 if dry else 1920, height=120 if dry else 1080, iters=args.iters)
        print("\n== speed at 1920x1080 (ms, CUDA events, median)")
        keys = ["scene", "n", "dynamic", "sh", "visible", "coverage", "gather_ms", "gather_lerp_ms", "rasterize_ms",
                "frame_ms", "frame_rgba_ms", "frame_rgba_tile32_ms", "frame_rgba_auto_ms", "auto_tile", "choose_tile_ms",
                "gsplat_rgb_ms",
                "fwd_bwd_ms"]
        print_table(speed, [k for k in keys if k in speed[0]])
        result["speed"] = speed
        if args.profile and not dry:
            for scene in args.profile.split(","):
                for name, cfg in (("frame", RasterConfig()), ("rgba frame", replace(RasterConfig(), depth=False))
                                  if "depth" in {f.name for f in dataclasses.fields(RasterConfig)} else (None, None)):
                    if cfg is None:
                        continue
                    print(f"\n== profile of 20 {name}s ({scene}, 1M, SH 3, all dynamic)")
                    table = profile_frame(scene, config=cfg)
                    print(table)
                    result[f"profile_{scene}_{name.replace(' ', '_')}"] = table
    path = args.json or (args.out / "render_gpu.json" if args.out is not None else None)
    if path is not None:
        from gpu_common import dump

        dump(path, {"bench": "render_gpu", **result})


if __name__ == "__main__":
    main()
