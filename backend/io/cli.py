"""``lw io``: look inside Gaussian files and convert them.

    lw io info FILE                        count, SH degree, bounds; for a .lw4d also frames, fps, animated count
    lw io convert IN.ply OUT.ply [--sh-degree D]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def describe(path: Path) -> list[str]:
    """Lines describing a .ply or .lw4d (what ``lw io info`` prints)."""
    from .jobs import is_sequence
    from .lw4d import read_sequence
    from .ply import read_ply

    lines = [str(path)]
    if is_sequence(path):
        seq = read_sequence(path)
        g = seq.base
        lines.append(f"sequence: {seq.frame_count} frames at {seq.fps:g} fps ({seq.duration:.2f} s), "
                     f"{'looping' if seq.loop else 'plays once'}, channels {', '.join(seq.channels)}")
        lines.append(f"animated: {seq.dynamic_count} of {seq.count} Gaussians")
    else:
        g = read_ply(path)
    lo, hi = g.means.min(axis=0), g.means.max(axis=0)
    lines.append(f"gaussians: {len(g)}, SH degree {g.sh_degree}")
    lines.append("bounds: min (" + ", ".join(f"{v:.4g}" for v in lo) + ") max (" + ", ".join(f"{v:.4g}" for v in hi)
                 + ")")
    lines.append(f"opacity: mean {float(np.mean(g.opacities())):.3f}; scale: median "
                 f"{float(np.median(g.scales())):.4g}")
    if g.extra:
        lines.append(f"extra properties: {', '.join(g.extra)}")
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a .ply or .lw4d holds."""
    print("\n".join(describe(Path(args.file))))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Read a 3DGS PLY (any layout other tools write) and write it in the INRIA layout, optionally at another
    SH degree (higher bands dropped or zero-filled)."""
    from .outputs import check_output
    from .ply import PLY, read_ply, set_sh_degree, write_ply

    check_output(args.output, PLY, args.replace)
    g = read_ply(args.input)
    if args.sh_degree is not None:
        g = set_sh_degree(g, args.sh_degree)
    write_ply(args.output, g)
    print(f"wrote {len(g)} Gaussians, SH degree {g.sh_degree}, to {args.output}")
    return 0


def add_parser(subparsers) -> None:
    """Add ``lw io info`` and ``lw io convert``."""
    io = subparsers.add_parser("io", help="inspect and convert Gaussian files (.ply, .lw4d)")
    sub = io.add_subparsers(dest="io_command", required=True)
    info = sub.add_parser("info", help="count, SH degree, bounds (and frames/fps for a .lw4d)",
                          description=cmd_info.__doc__)
    info.add_argument("file", help=".ply file or .lw4d folder")
    info.set_defaults(func=cmd_info)
    convert = sub.add_parser("convert", help="rewrite a 3DGS PLY in the INRIA layout", description=cmd_convert.__doc__)
    convert.add_argument("input", help="input .ply")
    convert.add_argument("output", help="output .ply (written atomically)")
    convert.add_argument("--replace", action="store_true", help="replace a PLY LivingWorld wrote at the output "
                                                                "(anything else there is never replaced)")
    convert.add_argument("--sh-degree", type=int, choices=range(4), default=None,
                         help="SH degree of the output (default: keep)")
    convert.set_defaults(func=cmd_convert)
