"""``lw world motion`` and ``lw world bake``: added to the ``lw world`` subcommands by ``backend/world/cli.py``
calling ``add_motion_commands(world_subparsers)``.

    lw world motion WORLD_DIR [--view N] [--region MASK.png | --region-name sky|water|ground|all]
                    [--preset clouds|water|smoke|fog|fire] [--direction DX,DY] [--speed S] [--hints HINTS.json]
                    [--model MODEL_DIR] [--device auto|cpu|cuda]
    lw world bake WORLD_DIR --frames N [--loop | --no-loop] [--smooth | --no-smooth] [--fps F] --out SEQ.lw4d
                  [--replace] [--device auto|cpu|cuda]
    lw world metrics WORLD_DIR | SEQ.lw4d [--world WORLD_DIR] [--frames N] [--size PX] [--pairs N | --all-frames]

HINTS.json: ``{"strokes": [[[x, y], ...], ...], "speed": S, "mask": "optional.png"}`` (pixels, y down) or a list
of such objects. Each prints one JSON line with what was done.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backend.errors import InvalidInput


def _pair(text: str) -> tuple[float, float]:
    try:
        dx, dy = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DX,DY (two numbers), got {text!r}") from None
    return dx, dy


def cmd_motion(args: argparse.Namespace) -> int:
    from .pipeline import HintStrokes, MotionUpdate, PresetRegion, update_motion

    presets = ()
    if args.preset:
        presets = (PresetRegion(args.preset, args.region_name or "", str(args.region) if args.region else None,
                                args.direction, args.speed),)
    elif args.region or args.region_name:
        raise InvalidInput("--region/--region-name need a --preset (clouds, water, smoke, fog or fire)")
    hints = ()
    if args.hints:
        try:
            data = json.loads(Path(args.hints).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read the hints file {args.hints}: {exc}") from None
        items = data if isinstance(data, list) else [data]
        hints = tuple(HintStrokes([[tuple(p) for p in s] for s in h["strokes"]], float(h.get("speed", args.speed)),
                                  h.get("mask")) for h in items)
    world = update_motion(args.world, MotionUpdate(view=args.view, presets=presets, hints=hints,
                                                   model=str(args.model) if args.model else None,
                                                   speed=args.speed, device=args.device))
    print(json.dumps({"world": str(world.root), "step": world.current.index, **world.current.stats["motion"]}))
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from .bake import BakeConfig
    from .pipeline import bake_world

    path = bake_world(args.world, args.out, BakeConfig(frames=args.frames, loop=args.loop, smooth=args.smooth,
                                                       fps=args.fps), device=args.device, replace=args.replace)
    print(json.dumps({"sequence": str(path), "frames": args.frames, "loop": args.loop}))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics import measure_world

    path = Path(args.path)
    if (path / "world.json").is_file():
        world, sequence = path, None
    elif (path / "manifest.json").is_file():
        if args.world is None:
            raise InvalidInput(f"{path} is a .lw4d sequence, which does not say where it is seen from: give --world "
                               "WORLD_DIR (the world it was baked from; its first camera is used)")
        world, sequence = args.world, path
    else:
        raise InvalidInput(f"{path} is neither a world folder (world.json) nor a .lw4d sequence (manifest.json)")
    quality = measure_world(world, sequence, frames=args.frames, size=args.size,
                            pairs=None if args.all_frames else "auto" if args.pairs is None else args.pairs,
                            device=args.device)
    print(json.dumps({"world": str(world), "sequence": str(sequence) if sequence else None, **quality.to_json()}))
    return 0


def add_motion_commands(world_subparsers) -> None:
    """Add ``motion`` and ``bake`` to the ``lw world`` subparsers."""
    p = world_subparsers.add_parser("motion", help="add a view's motion to the world's motion field")
    p.add_argument("world", type=Path)
    p.add_argument("--view", type=int, default=None, help="world step index of the view (default: current)")
    p.add_argument("--preset", choices=["clouds", "water", "smoke", "fog", "fire"])
    p.add_argument("--region", type=Path, help="mask PNG of the preset's region (non-zero inside)")
    p.add_argument("--region-name", choices=["sky", "water", "ground", "all"], help="segmentation region instead")
    p.add_argument("--direction", type=_pair, default=(1.0, 0.0), help="on screen DX,DY (x right, y up)")
    p.add_argument("--speed", type=float, default=1.0, help="pixels per frame")
    p.add_argument("--hints", type=Path, help="strokes JSON (see `lw world motion --help`)")
    p.add_argument("--model", type=Path, help="Eulerian motion model folder")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_motion)

    b = world_subparsers.add_parser("bake", help="bake the world's motion to a .lw4d loop")
    b.add_argument("world", type=Path)
    b.add_argument("--frames", type=int, required=True)
    b.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True)
    b.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=True,
                   help="smoothstep cross-fade (--no-smooth: linear)")
    b.add_argument("--fps", type=float, default=24.0)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--replace", action="store_true", help="replace the .lw4d an earlier bake wrote at --out")
    b.add_argument("--device", default="auto")
    b.set_defaults(func=cmd_bake)

    m = world_subparsers.add_parser("metrics", help="flicker (VBench), motion smoothness, loop seam and uncovered "
                                                    "pixels of a world's loop, seen from its first camera")
    m.add_argument("path", type=Path, help="a world folder (baked in memory) or a .lw4d baked from one")
    m.add_argument("--world", type=Path, help="the world a .lw4d was baked from")
    m.add_argument("--frames", type=int, default=60, help="loop length when baking a world in memory")
    m.add_argument("--size", type=int, help="long side of the renders (default: world resolution on CUDA, 128 on "
                                            "a CPU)")
    m.add_argument("--pairs", type=int, help="frame triplets to render (default: all on CUDA, 3 on a CPU)")
    m.add_argument("--all-frames", action="store_true", help="render every frame (VBench's definitions exactly)")
    m.add_argument("--device", default="auto")
    m.set_defaults(func=cmd_metrics)
