"""Picture and loop metrics of a baked loop (CPU): a striped water patch on a ground plane drifting through a
swirling field, baked bidirectionally (N frames) and as a one-way clip; renders every frame with the torch
reference rasterizer, prints seam / coverage / flicker metrics for both, and saves a strip of frames plus the
preset flow of the view to docs/images/motion_loop.png.

    python bench/motion_loop_picture.py [--frames 24] [--out docs/images/motion_loop.png]
"""

import argparse

import cv2
import numpy as np
import torch

from backend.gaussians import Gaussians, rgb_to_sh_dc
from backend.render.cameras import Camera
from backend.world.motion.bake import BakeConfig, bake_loop, loop_metrics, render_loop
from backend.world.motion.cues import preset_cue


def grid(x0, x1, y0, y1, step, z, color_fn):
    xs, ys = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    n = xs.size
    rgb = color_fn(xs.ravel(), ys.ravel()).astype(np.float32)
    return Gaussians(means=np.c_[xs.ravel(), ys.ravel(), np.full(n, z)].astype(np.float32),
                     quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
                     log_scales=np.full((n, 3), np.log(step * 0.7), np.float32),
                     opacity_logits=np.full(n, 4.0, np.float32), sh=rgb_to_sh_dc(rgb)[:, None, :])


def camera(w=160, h=120):
    eye, target = np.array([0.0, -1.5, 3.0]), np.array([0.0, 2.0, 0.0])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, np.cross(z, x), z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return Camera(K=np.array([[w * 0.62, 0, w / 2], [0, w * 0.62, h / 2], [0, 0, 1]]), world_to_cam=w2c, width=w, height=h)


def flow_image(flow, mask):
    """Flow as colour: hue = direction, value = speed."""
    mag, ang = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (ang * 90 / np.pi).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / max(mag.max(), 1e-9) * 255, 0, 255).astype(np.uint8) * mask
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--out", default="docs/images/motion_loop.png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ground = grid(-2.5, 2.5, 0.0, 4.0, 0.08, 0.0, lambda x, y: np.tile([0.45, 0.38, 0.22], (len(x), 1)))
    water = grid(-1.2, 1.2, 1.0, 3.0, 0.04, 0.02, lambda x, y: np.where(
        (np.sin(6 * x + 3 * y) > 0)[:, None], [0.15, 0.45, 0.9], [0.05, 0.15, 0.45]))
    g = Gaussians.concatenate([ground, water])
    dyn = np.r_[np.zeros(len(ground), bool), np.ones(len(water), bool)]

    def swirl(x):
        c = torch.tensor([0.0, 2.0, 0.0], dtype=x.dtype, device=x.device)
        d = x - c
        v = torch.stack([-d[:, 1], d[:, 0], torch.zeros_like(d[:, 0])], 1) * 0.01
        return v + torch.tensor([0.012, 0.0, 0.0], dtype=x.dtype, device=x.device)

    cam = camera()
    print("| bake | frames | seam | mean step | seam / step | uncovered max | uncovered mean | flicker (static) |")
    print("|---|---|---|---|---|---|---|---|")
    renders = {}
    for name, loop in (("bidirectional loop", True), ("one-way clip", False)):
        baked = bake_loop(g, dyn, swirl, BakeConfig(frames=args.frames, loop=loop))
        colors, alphas, rest = render_loop(baked, cam)
        m = loop_metrics(colors, alphas, rest)
        renders[name] = colors
        print(f"| {name} | {args.frames} | {m.seam:.4f} | {m.mean_step:.4f} | {m.seam_ratio:.2f} | "
              f"{m.uncovered_max:.3f} | {m.uncovered_mean:.3f} | {m.flicker:.2e} |")
    colors = renders["bidirectional loop"]
    picks = np.linspace(0, args.frames - 1, 5).round().astype(int)
    top = np.concatenate([colors[t] for t in picks] + [colors[0]], axis=1)
    one = renders["one-way clip"]
    bottom = np.concatenate([one[t] for t in picks] + [one[0]], axis=1)
    strip = (np.clip(np.concatenate([top, bottom], axis=0), 0, 1) * 255).astype(np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[40:110, 20:140] = True
    flow = flow_image(preset_cue("water", mask, (1, 0.3), 1.0).flow, mask)
    flow = cv2.resize(flow, (160, 240), interpolation=cv2.INTER_NEAREST)
    img = np.concatenate([strip, flow], axis=1)
    for i, t in enumerate(list(picks) + ["0 (wrap)"]):
        cv2.putText(img, f"t={t}", (4 + 160 * i, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
    cv2.putText(img, "loop", (4, 116), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1)
    cv2.putText(img, "one-way", (4, 236), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1)
    cv2.putText(img, "water preset flow", (964, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
    cv2.imwrite(args.out, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
