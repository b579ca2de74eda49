"""``lw world``: LivingWorld from the command line (twins of the world_* job kinds).

    lw world new IMAGE [--depth D] [--prompt T] [--out DIR] [--resolution N] [--depth-model M] ...
    lw world expand WORLD_DIR --camera CAMERA.json [--prompt T]
    lw world undo WORLD_DIR

Each prints one JSON line: the world folder, the current step, the count of Gaussians and the files of the
current version (PLY, preview). ``backend.world.motion.cli.add_motion_commands(world_subparsers)`` adds the
motion subcommands when that module exists.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from ..errors import InvalidInput


def _report(world) -> int:
    """One JSON line on stdout; on stderr, in plain words, each built-in fallback that replaced a default model and
    the command that fetches the model."""
    fallbacks = world.current.stats.get("fallbacks", [])
    print(json.dumps({"world": str(Path(world.root).resolve()), "step": world.current.index,
                      "steps": len(world.steps), "gaussians": world.current.stats.get("gaussians"),
                      "ply": str(world.file("gaussians.ply")), "preview": str(world.file("preview.png")),
                      "providers": world.current.providers, "fallbacks": fallbacks,
                      "timings": world.current.stats.get("timings")}))
    for note in fallbacks:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    """Create a world from one image."""
    import secrets

    from ..models.config import ModelConfig
    from .pipeline import WorldConfig, new_world

    out = Path(args.out) if args.out else Path("worlds") / secrets.token_hex(4)
    models = ModelConfig(depth=args.depth_model, segmentation=args.segmentation_model, outpaint=args.outpaint_model,
                         device=args.device)
    return _report(new_world(args.image, out, args.depth, args.prompt, WorldConfig(resolution=args.resolution,
                                                                                  models=models)))


def cmd_expand(args: argparse.Namespace) -> int:
    """Expand a world from the Blender camera spec in a JSON file."""
    from . import store
    from .pipeline import camera_from_blender, expand_world

    try:
        spec = json.loads(Path(args.camera).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read the camera file {args.camera!r}: {exc}") from exc
    camera = camera_from_blender(spec, store.load_world(args.world))
    return _report(expand_world(args.world, camera, args.prompt, blender=spec))


def cmd_undo(args: argparse.Namespace) -> int:
    """Step a world back to its previous version."""
    from .pipeline import undo_world

    return _report(undo_world(args.world))


def add_parser(subparsers) -> None:
    world = subparsers.add_parser("world", help="LivingWorld: image -> explorable Gaussian world")
    sub = world.add_subparsers(dest="world_command", required=True)
    new = sub.add_parser("new", help=cmd_new.__doc__, description=cmd_new.__doc__)
    new.add_argument("image", help="input image (PNG/JPEG)")
    new.add_argument("--depth", help="depth map: .npy (metres) or 16-bit .png (millimetres)")
    new.add_argument("--prompt", default="", help="text describing the scene")
    new.add_argument("--out", help="world folder to create (default ./worlds/<id>)")
    new.add_argument("--resolution", type=int, default=512, help="long side of the working image (px)")
    for role in ("depth", "segmentation", "outpaint"):
        new.add_argument(f"--{role}-model", default="auto",
                         help=f"{role} model: auto | builtin | Hugging Face repo id | local folder")
    new.add_argument("--device", default="auto", help="auto | cpu | cuda")
    new.set_defaults(func=cmd_new)
    expand = sub.add_parser("expand", help=cmd_expand.__doc__, description=cmd_expand.__doc__)
    expand.add_argument("world", help="world folder")
    expand.add_argument("--camera", required=True, help="JSON file with a Blender camera spec")
    expand.add_argument("--prompt", default="", help="text for the new content")
    expand.set_defaults(func=cmd_expand)
    undo = sub.add_parser("undo", help=cmd_undo.__doc__, description=cmd_undo.__doc__)
    undo.add_argument("world", help="world folder")
    undo.set_defaults(func=cmd_undo)
    try:
        motion_cli = importlib.import_module("backend.world.motion.cli")
    except ModuleNotFoundError as exc:
        if exc.name != "backend.world.motion.cli":
            raise
    else:
        motion_cli.add_motion_commands(sub)
