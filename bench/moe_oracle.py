"""How much a mixture could gain on a run's held-out view: the experts' renders against the truth, region by region.

    python3 bench/moe_oracle.py --run RUN [--blocks 1 8 32] [--device cuda] [--picture PNG]

For every trained expert of RUN (a MoE-GS run folder, stage 1 done): its PSNR on the held-out camera over all
frames; the PSNR of an even blend of all experts and of the best two; and ``evaluate.region_oracle`` for each
block size: the expert with the lowest error in every block x block tile of every held-out image, chosen with the
ground truth (block 1: per pixel). The block oracle is an upper bound for a router that gives each region to one
expert: when the 8- or 32-pixel oracle is not 0.5 dB above the best expert, no router reaches MoE-GS's +0.5 dB on
that scene. The router blends, so each block size also gets ``evaluate.blend_oracle``: the best convex blend of the
experts per tile (and per whole image: the best constant blend), chosen with the truth, which bounds a soft router
the same way. ``--picture``: truth and the winner of every 8x8 tile (``--picture-block``; the palette of
bench/moe_mixture_results.py) at the first, middle and last frame.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backend.errors import InvalidInput
from backend.moe.evaluate import blend_oracle, checkpointed_experts, region_oracle, render_expert, write_grid
from backend.moe.losses import psnr
from backend.moe.train import TrainConfig, load_checkpoint, load_run_video, read_run, resolve_device
from backend.render.rasterize import RasterConfig

PALETTE = {"deformation": ("R", (1, 0, 0)), "trajectory": ("G", (0, 1, 0)), "keyframe": ("B", (0, 0, 1)),
           "embedding": ("Y", (1, 1, 0))}  # as bench/moe_mixture_results.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--picture", default="")
    ap.add_argument("--picture-block", type=int, default=8, help="the tile size whose winners the picture shows "
                    "(per pixel, the static background is a speckle of experts that fit it equally)")
    a = ap.parse_args()
    if a.picture and a.picture_block not in a.blocks:
        a.blocks.append(a.picture_block)
    try:
        meta = read_run(a.run)
    except InvalidInput as exc:
        raise SystemExit(str(exc)) from None
    names = checkpointed_experts(a.run)
    if len(names) < 2:
        raise SystemExit(f"{a.run} has {len(names)} trained expert(s); the oracle compares at least two")
    video = load_run_video(a.run)
    dev = resolve_device(a.device)
    raster = RasterConfig(background=TrainConfig.from_dict(meta["train_config"]).background)
    experts = [load_checkpoint(a.run / n / "checkpoint.pt", dev)[0].eval() for n in names]
    pairs = [(c, f) for c in video.test for f in range(video.num_frames)]
    frames = sorted({0, video.num_frames // 2, video.num_frames - 1})  # the picture's, of the first test camera
    psnrs: dict = {}  # row key -> PSNR per held-out image
    wins = {b: torch.zeros(len(names), dtype=torch.float64) for b in a.blocks}
    blends = sorted({b for b in a.blocks if b > 1} | {0})  # 0: one blend per image; per pixel a blend overfits
    shares = {b: torch.zeros(len(names), dtype=torch.float64) for b in blends}
    maps = {}
    with torch.no_grad():  # one image at a time: N3V's 300 frames at 1352x1014 would not fit at once
        for c, f in pairs:
            truth = torch.from_numpy(video.frame(c, f)).to(dev)
            renders = torch.stack([render_expert(e, video, c, f, raster) for e in experts])  # (K, H, W, 3)
            for n, r in zip(names, renders):
                psnrs.setdefault(n, []).append(psnr(r, truth))
            psnrs.setdefault("all", []).append(psnr(renders.mean(0), truth))
            for pair in itertools.combinations(range(len(names)), 2):
                psnrs.setdefault(pair, []).append(psnr(renders[list(pair)].mean(0), truth))
            for b in a.blocks:
                o = region_oracle(renders[:, None], truth[None], b)
                psnrs.setdefault(b, []).append(o["psnr"])
                wins[b] += torch.tensor(o["wins"], dtype=torch.float64)
                if c == video.test[0] and f in frames and b == a.picture_block:
                    maps[f] = o["choice"][0].cpu()
            for b in blends:
                o = blend_oracle(renders[:, None], truth[None], b or max(truth.shape[:2]))
                psnrs.setdefault(("blend", b), []).append(o["psnr"])
                shares[b] += torch.tensor(o["weights"], dtype=torch.float64)
    score = {key: float(np.mean(v)) for key, v in psnrs.items()}
    best = max(names, key=score.get)
    i, j = sorted(range(len(names)), key=lambda k: score[names[k]])[-2:]
    rows = [(n, score[n], "") for n in names]
    rows.append(("even blend of all experts", score["all"], ""))
    if len(names) > 2:
        rows.append((f"even blend of {names[j]} + {names[i]}", score[(min(i, j), max(i, j))], ""))
    for b in a.blocks:
        share = ", ".join(f"{n} {100 * s / len(pairs):.0f} %" for n, s in zip(names, wins[b].tolist()))
        rows.append((f"oracle, one expert per {b}x{b} px tile" if b > 1 else "oracle, one expert per pixel",
                     score[b], share))
    for b in blends:
        share = ", ".join(f"{n} {100 * s / len(pairs):.0f} %" for n, s in zip(names, shares[b].tolist()))
        rows.append((f"oracle, best blend per {b}x{b} px tile" if b else "oracle, best constant blend per image",
                     score[("blend", b)], share))
    w, h = video.size
    print(f"run {a.run}: {len(names)} experts, held-out {[video.names[c] for c in video.test]}, "
          f"{video.num_frames} frames at {w}x{h}")
    print("| model | PSNR (dB) | - best expert | pixels won (blends: mean weight) |")
    print("|---|---|---|---|")
    for label, value, share in rows:
        print(f"| {label} | {value:.2f} | {value - score[best]:+.2f} | {share} |")
    if a.picture:
        colours = torch.tensor([PALETTE.get(n, ("?", (1, 1, 1)))[1] for n in names], dtype=torch.float32)
        winners = [(colours[maps[f]].numpy() * 255).astype(np.uint8) for f in frames]
        truths = [video.images[video.test[0], f] for f in frames]
        legend = "winner: " + " ".join(f"{PALETTE.get(n, ('?',))[0]}={n[:6]}" for n in names)
        write_grid(Path(a.picture), [truths, winners], ["truth", legend], [f"t={video.times[f]:.2f}" for f in frames])
        print(f"picture: {a.picture}")


if __name__ == "__main__":
    main()
