"""Camera conventions, stated once.

``Camera`` is a pinhole camera in the OpenCV convention: camera frame x right, y down, z forward;
``world_to_cam`` maps world points (Blender Z-up metres) to that frame; ``K`` is in pixels with the pixel
centre of pixel (i, j) at (j + 0.5, i + 0.5) (x = column, y = row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    K: np.ndarray  # (3, 3) float64 intrinsics in pixels
    world_to_cam: np.ndarray  # (4, 4) float64, OpenCV camera frame
    width: int
    height: int
    near: float = 0.01
    far: float = 1.0e4

    @property
    def cam_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_cam)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        return self.cam_to_world[:3, 3].copy()
