"""The router's blend of a mixture frame at N3V's resolution: per-pixel weights of K = 3 experts from their
splatted channels (random), the camera's rays included, for every router kind; median ms of ``--reps`` calls.
This is the part of a mixture frame that is not rasterization (``bench/moe_fps.py`` times the whole frame).
LW_CODE picks the code tree measured (``bench/gpu_common.py``), e.g. a git worktree of an older commit:

    .venv/bin/python bench/moe_blend_speed.py [--size 1352x1014] [--device cpu|cuda] [--reps 7]
    git worktree add /tmp/old COMMIT && LW_CODE=/tmp/old .venv/bin/python bench/moe_blend_speed.py
"""

from __future__ import annotations

import argparse

import numpy as np
from gpu_common import median_ms, use_code_tree

use_code_tree()
import torch

from backend.moe.router import Router, RouterConfig
from backend.render.cameras import Camera


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1352x1014")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    dev = torch.device(a.device)
    torch.manual_seed(0)
    f = 1.2 * w
    cam = Camera(K=np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]]), world_to_cam=np.eye(4), width=w, height=h)
    print(f"router blend of 3 experts at {w}x{h} on {dev}, median of {a.reps} (ms)")
    for kind in ("volume", "volume_pixel", "pixel"):
        router = Router(3, [1000] * 3, torch.full((3,), -1.0), torch.ones(3), RouterConfig(kind=kind)).to(dev)
        c = router.splatted_channels
        splatted = torch.rand(3, h, w, c, device=dev) if c else None
        with torch.no_grad():
            ms = median_ms(lambda i, r=router, s=splatted: r.pixel_weights(s, cam, 0.5, (3, h, w)), a.reps,
                           cuda=dev.type == "cuda")
        print(f"{kind}: {ms:.1f}")


if __name__ == "__main__":
    main()
