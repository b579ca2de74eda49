"""Job kinds of backend/io: bring Gaussians into Blender (``import_gaussians``) and back out (``export_gaussians``).

``import_gaussians`` validates a ``.ply`` or ``.lw4d`` and writes ``<job_dir>/decoded/`` (the decoded Gaussians
folder of docs/ARCHITECTURE.md); for a sequence the folder holds its base and ``manifest.json`` names the
``.lw4d`` whose channel arrays the add-on then memory-maps itself. ``export_gaussians`` turns a decoded folder
(the add-on writes one from the current frame) into an INRIA 3DGS PLY.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from ..errors import InvalidInput
from ..jobs import JobContext, Output, job_kind
from .decoded import ARRAY_FILES, read_decoded, write_decoded
from .lw4d import check_sequence_values, read_sequence
from .ply import PLY, read_ply, write_ply


class ImportGaussiansParams(BaseModel):
    path: str = Field(..., min_length=1, max_length=4096,
                      description="A 3DGS .ply file or a .lw4d sequence folder; absolute, or relative to the "
                                  "workspace.")


def is_sequence(path: Path) -> bool:
    """A ``.lw4d`` folder (by suffix or by holding a manifest.json)."""
    return path.suffix == ".lw4d" or (path.is_dir() and (path / "manifest.json").is_file())


@job_kind("import_gaussians", ImportGaussiansParams)
def import_gaussians(ctx: JobContext, params: ImportGaussiansParams) -> list[str]:
    """Validate a .ply or .lw4d and write ``decoded/`` (position, scale, rotation, opacity, color, sh as float32
    .npy + manifest.json) for the add-on. For a .lw4d every frame is checked for NaN and out-of-range values."""
    path = ctx.resolve(params.path)
    ctx.progress(0.0, f"reading {path.name}")
    if is_sequence(path):
        seq = read_sequence(path, mmap=True)
        ctx.progress(0.1, f"{seq.count} Gaussians, {seq.dynamic_count} animated over {seq.frame_count} frames")
        check_sequence_values(seq, lambda f: ctx.progress(0.1 + 0.6 * f, "checking frames"))
        gaussians, sequence = seq.base, path.absolute()
    elif path.suffix.lower() == ".ply":
        gaussians, sequence = read_ply(path), None
        ctx.progress(0.5, f"{len(gaussians)} Gaussians, SH degree {gaussians.sh_degree}")
    else:
        raise InvalidInput(f"{path}: expected a .ply file or a .lw4d sequence folder")
    ctx.check_cancelled()
    folder = write_decoded(ctx.job_dir / "decoded", gaussians, source=path, sequence=sequence)
    ctx.progress(1.0, f"decoded {len(gaussians)} Gaussians")
    names = [ctx.artifact(folder / name) for name in ("manifest.json", *ARRAY_FILES)]
    if sequence is not None:  # its files too (those inside the workspace): a remote add-on downloads them to play
        names += ctx.artifacts(sorted(f for f in path.iterdir() if f.is_file()))
    return names


class ExportGaussiansParams(BaseModel):
    decoded: str = Field(..., min_length=1, max_length=4096,
                         description="Decoded Gaussians folder (manifest.json + position/scale/rotation/opacity/"
                                     "sh .npy); absolute, or relative to the workspace.")
    path: Annotated[str, Output(PLY)] = Field(..., min_length=1, max_length=4096,
                                              description="Output .ply; absolute, or relative to the workspace. "
                                                          "Written atomically; an existing file is refused unless "
                                                          "it is a PLY LivingWorld wrote and replace is true.")
    replace: bool = Field(False, description="Replace the PLY an earlier export wrote at path (anything else there "
                                             "is never replaced).")


@job_kind("export_gaussians", ExportGaussiansParams)
def export_gaussians(ctx: JobContext, params: ExportGaussiansParams) -> list[str]:
    """Write a decoded folder as an INRIA 3DGS binary PLY (scale -> log, opacity -> logit). Returns the PLY as an
    artifact when it lies inside the workspace; otherwise nothing, and the job message names the file."""
    out = ctx.resolve(params.path)
    if out.suffix.lower() != ".ply":
        raise InvalidInput(f"{out}: the output file must end in .ply")
    ctx.progress(0.0, "reading decoded Gaussians")
    gaussians = read_decoded(ctx.resolve(params.decoded))
    ctx.check_cancelled()
    write_ply(out, gaussians)
    ctx.progress(1.0, f"wrote {len(gaussians)} Gaussians to {out}")
    return ctx.artifacts([out])
