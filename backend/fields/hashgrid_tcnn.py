"""tiny-cuda-nn's ``Encoding`` (HashGrid) behind the ``HashGridEncoding`` interface.

tiny-cuda-nn computes exactly the function documented in ``hashgrid.py`` (that module follows its layout), so the
flat table here is tcnn's own parameter vector viewed as ``(rows, F)``. Only used when ``tinycudann`` imports.
"""

from __future__ import annotations

import tinycudann as tcnn
import torch

from .hashgrid import HashGridConfig, HashGridEncoding


class TcnnHashGrid(HashGridEncoding):
    """Hash grid evaluated by tiny-cuda-nn (float32 parameters; output cast to float32)."""

    name = "tcnn"

    def __init__(self, config: HashGridConfig):
        super().__init__(config, dtype=torch.float32)
        self._encoding = tcnn.Encoding(
            n_input_dims=3,
            encoding_config={
                "otype": "HashGrid",
                "n_levels": config.n_levels,
                "n_features_per_level": config.n_features_per_level,
                "log2_hashmap_size": config.log2_table_size,
                "base_resolution": config.base_resolution,
                "per_level_scale": config.per_level_scale,
                "interpolation": "Linear",
            },
            dtype=torch.float32,
        )
        if self._encoding.params.numel() != self.table.numel():
            raise RuntimeError(f"tiny-cuda-nn laid out {self._encoding.params.numel()} parameters, the reference "
                               f"layout has {self.table.numel()}: their layouts differ in this tcnn version")
        # One parameter, one layout: tcnn reads a flat view of our table instead of its own parameter.
        del self._encoding.params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._encoding.params = self.table.view(-1)
        return self._encoding(self.normalize(x)).float()
