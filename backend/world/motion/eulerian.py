"""Eulerian motion predictor: a U-Net image -> 2D flow (the cinemagraph family of Holynski et al. 2021 and
Text2Cinemagraph), loaded from a folder with ``config.json`` and ``model.safetensors``.

Input channels (stacked): RGB in [-1, 1] (3), the material mask (1), and sparse hints (3: hint flow x, y in
pixels per frame and a hint-present flag), as in Holynski et al.'s sparse-hint conditioning. Output: flow (2) in
pixels per frame at the input resolution, multiplied by ``flow_scale``.

Architecture: ``depth`` encoder stages (two 3x3 conv + GroupNorm + SiLU, then a stride-2 conv), a bottleneck,
and ``depth`` decoder stages (bilinear x2 upsampling, concatenation with the skip, two 3x3 convs), then a 1x1
conv to 2 channels. Images are padded to a multiple of 2^depth and cropped back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.errors import InvalidInput, ModelUnavailable

from .cues import MATERIAL_CODE, MotionCue

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class EulerianFlowConfig:
    base_channels: int = 32
    depth: int = 4
    flow_scale: float = 1.0  # network output units -> pixels per frame
    in_channels: int = 7  # RGB + mask + hint (x, y, present)


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = min(8, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
    )


class EulerianFlowNet(nn.Module):
    """U-Net: (B, 7, H, W) -> flow (B, 2, H, W) in pixels per frame."""

    def __init__(self, config: EulerianFlowConfig = EulerianFlowConfig()):
        super().__init__()
        self.config = config
        c = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.enc = nn.ModuleList([_block(config.in_channels if i == 0 else c[i], c[i]) for i in range(config.depth)])
        self.down = nn.ModuleList([nn.Conv2d(c[i], c[i + 1], 3, stride=2, padding=1) for i in range(config.depth)])
        self.mid = _block(c[-1], c[-1])
        self.dec = nn.ModuleList([_block(c[i + 1] + c[i], c[i]) for i in reversed(range(config.depth))])
        self.head = nn.Conv2d(c[0], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.config.depth
        ph, pw = (-h) % m, (-w) % m
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for enc, down in zip(self.enc, self.down):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.mid(x)
        for dec, skip in zip(self.dec, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        return self.head(x)[..., :h, :w] * self.config.flow_scale

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=1))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_NAME))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> EulerianFlowNet:
        """Load a model saved by ``save_pretrained`` (or converted to that layout)."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise ModelUnavailable(f"no Eulerian motion model at {path}: expected {CONFIG_NAME} and {WEIGHTS_NAME}; "
                                   "use artist presets/hints or the built-in fallback instead")
        try:
            cfg = EulerianFlowConfig(**json.loads((path / CONFIG_NAME).read_text()))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{path / CONFIG_NAME} is not an Eulerian motion model config ({exc})") from None
        model = cls(cfg)
        missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise InvalidInput(f"{path / WEIGHTS_NAME} does not fit the config: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
        return model.to(device).eval()


class EulerianMotionProvider:
    """``MotionProvider`` backed by an ``EulerianFlowNet``."""

    def __init__(self, model: EulerianFlowNet, name: str = "eulerian-unet"):
        self.model = model
        self.name = name

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> EulerianMotionProvider:
        return cls(EulerianFlowNet.from_pretrained(path, device), name=f"eulerian-unet:{Path(path).name}")

    @torch.no_grad()
    def predict(self, image: np.ndarray, mask: np.ndarray | None = None,
                hints: MotionCue | None = None) -> MotionCue:
        """image (H, W, 3) in [0, 1]; mask (H, W) of the material to animate (default: all); optional sparse
        ``hints`` (their flow where their mask is set) -> MotionCue restricted to the mask."""
        img = np.asarray(image, np.float32)
        if img.ndim != 3 or img.shape[2] != 3:
            raise InvalidInput(f"motion model needs an (H, W, 3) RGB image, got {img.shape}")
        h, w = img.shape[:2]
        m = np.ones((h, w), bool) if mask is None else np.asarray(mask, bool)
        hint = np.zeros((h, w, 3), np.float32)
        if hints is not None:
            hint[..., :2] = hints.flow
            hint[..., 2] = hints.mask
        x = np.concatenate([img * 2 - 1, m[..., None].astype(np.float32), hint], axis=-1)
        dev = next(self.model.parameters()).device
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(dev)
        flow = self.model(t)[0].permute(1, 2, 0).float().cpu().numpy()
        flow[~m] = 0.0
        return MotionCue(flow.astype(np.float32), m.copy(), np.where(m, MATERIAL_CODE["model"], 0).astype(np.uint8))
