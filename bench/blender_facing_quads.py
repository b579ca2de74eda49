"""Benchmark: the view-facing quad frames (lw_blender.splats.quads.sorting.facing_quads, numpy) for N random Gaussians.

    .venv-blender52/bin/python bench/blender_facing_quads.py [--sizes 100000,250000,1000000] [--repeat 3]

Prints the median seconds per call (what one view change costs a carrier whose quads are shown, and what every
rendered frame costs it; quads are the display of Blender 4.2-5.2). The add-on package is loaded from this tree
(its quad modules import bpy: run it with a bpy environment).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,250000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("livingworld", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    sys.modules["livingworld"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["livingworld"])
    sorting = importlib.import_module("livingworld.lw_blender.splats.quads.sorting")
    rng = np.random.default_rng(0)
    print("| Gaussians | facing_quads median (s) |")
    print("|---|---|")
    for n in (int(x) for x in a.sizes.split(",")):
        pos = rng.uniform(-5, 5, (n, 3)).astype(np.float32)
        q = rng.normal(size=(n, 4)).astype(np.float32)
        s = rng.uniform(0.01, 0.1, (n, 3)).astype(np.float32)
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            sorting.facing_quads(pos, q, s, np.array([0.0, -20.0, 1.0]), np.array([0.0, 1.0, 0.0]), True)
            times.append(time.perf_counter() - t)
        print(f"| {n:,} | {np.median(times):.3f} |")


if __name__ == "__main__":
    main()
