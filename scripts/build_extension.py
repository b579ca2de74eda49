"""Validate and build the LivingWorld extension zip with Blender's own packaging tool.

Blender's ``blender_ext.py`` ships inside the ``bpy`` wheel (``bpy/<X.Y>/scripts/addons_core/bl_pkg/cli/``); this
script finds it through the installed ``bpy`` package (without importing bpy), runs ``validate`` on the manifest
of the source directory and ``build`` into the output directory, and prints the zip path on stdout.

    .venv-blender/bin/python scripts/build_extension.py [--source-dir .] [--out dist]

Exit status 1 with Blender's message when the manifest is invalid or the build fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class BuildError(Exception):
    """Blender's packaging tool refused the manifest or could not build the zip."""


def find_blender_ext() -> Path:
    """Path of ``blender_ext.py`` inside the installed bpy wheel (any Blender version directory)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the bpy wheel is not installed in this Python; run `make envs` and use .venv-blender/bin/python")
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    raise BuildError(f"blender_ext.py not found under {list(spec.submodule_search_locations)}")


def _run(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, str(find_blender_ext()), *args], capture_output=True, text=True, check=False)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BuildError(f"blender_ext {args[0]} failed (exit {proc.returncode}): {out}")
    return out


def validate(source: Path) -> str:
    """Run Blender's manifest validation on a source directory or a built zip; returns its output."""
    return _run(["validate", str(source)])


def build(source_dir: Path = REPO, output_dir: Path = REPO / "dist") -> Path:
    """Validate ``source_dir`` and build ``<output_dir>/<id>-<version>.zip``; returns the zip path."""
    source_dir = Path(source_dir).resolve()
    output_dir = Path(output_dir).resolve()
    validate(source_dir)
    manifest = tomllib.loads((source_dir / "blender_manifest.toml").read_text())
    output_dir.mkdir(parents=True, exist_ok=True)
    zip_path = output_dir / f"{manifest['id']}-{manifest['version']}.zip"
    _run(["build", "--source-dir", str(source_dir), "--output-filepath", str(zip_path)])
    validate(zip_path)
    return zip_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source-dir", type=Path, default=REPO)
    ap.add_argument("--out", type=Path, default=REPO / "dist", help="output directory (created if missing)")
    a = ap.parse_args(argv)
    try:
        print(build(a.source_dir, a.out))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
