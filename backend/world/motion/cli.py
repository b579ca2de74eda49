"""``lw world motion`` and ``lw world bake``: added to the ``lw world`` subcommands by ``backend/world/cli.py``
calling ``add_motion_commands(world_subparsers)``.

    lw world motion WORLD_DIR [--view N] [--region MASK.png | --region-name sky|water|ground|all]
                    [--preset clouds|water|smoke|fog|fire] [--direction DX,DY] [--speed S] [--hints HINTS.json]
                    [--model MODEL_DIR] [--device auto|cpu|cuda]
    lw world bake WORLD_DIR --frames N [--loop | --no-loop] [--smooth] [--fps F] --out SEQ.lw4d

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
    b.add_argument("--smooth", action="store_true", help="smoothstep cross-fade")
    b.add_argument("--fps", type=float, default=24.0)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--replace", action="store_true", help="replace the .lw4d an earlier bake wrote at --out")
    b.add_argument("--device", default="auto")
    b.set_defaults(func=cmd_bake)
