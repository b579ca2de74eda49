"""Neural-field building blocks: the multiresolution hash-grid encoding (torch reference | Triton | tcnn)."""

from .hashgrid import (
    HashGridConfig,
    HashGridEncoding,
    LevelLayout,
    TorchHashGrid,
    encode_reference,
    level_layout,
    make_encoding,
    morton_order,
    tcnn_available,
    triton_available,
)

__all__ = [
    "HashGridConfig",
    "HashGridEncoding",
    "LevelLayout",
    "TorchHashGrid",
    "encode_reference",
    "level_layout",
    "make_encoding",
    "morton_order",
    "tcnn_available",
    "triton_available",
]
