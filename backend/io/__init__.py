"""File formats every part of LivingWorld reads and writes.

- ``ply``:     the INRIA 3DGS binary PLY (``read_ply`` / ``write_ply``), SH degree 0..3.
- ``lw4d``:    ``.lw4d/`` 4D sequences (``read_sequence`` / ``write_sequence`` / ``SequenceWriter`` /
               ``frame_gaussians`` / ``gaussians_at``).
- ``decoded``: the decoded Gaussians folder handed to the Blender add-on (``write_decoded`` / ``read_decoded``).
- ``jobs``:    the ``import_gaussians`` and ``export_gaussians`` job kinds; ``cli``: ``lw io ...``.
"""

from .decoded import read_decoded, write_decoded
from .lw4d import (
                   Frame,
                   Sequence,
                   SequenceWriter,
                   check_sequence_values,
                   frame_gaussians,
                   gaussians_at,
                   read_sequence,
                   write_sequence,
)
from .ply import read_ply, set_sh_degree, write_ply

__all__ = [
    "Frame",
    "Sequence",
    "SequenceWriter",
    "check_sequence_values",
    "frame_gaussians",
    "gaussians_at",
    "read_decoded",
    "read_ply",
    "read_sequence",
    "set_sh_degree",
    "write_decoded",
    "write_ply",
    "write_sequence",
]
