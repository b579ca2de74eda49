"""Bake a trained expert into a ``.lw4d`` sequence (one frame per dataset frame).

Frame f holds ``expert.gaussians_at(t_f)`` decoded (position, unit rotation, linear scale, opacity in 0..1);
colour is constant and lives in ``base.ply`` (the Gaussians at t = 0). A Gaussian is dynamic when any baked
channel moves away from its frame-0 value by more than a tolerance (position: 1e-5 x scene extent; rotation,
opacity: 1e-5; scale: relative 1e-5); only channels in which some Gaussian changes are written.

Coordinates are the dataset's world frame unchanged (see ``data``): for the Blender-made dataset that is
Blender Z-up metres ("blender_z_up_m"); for real captures the frame of their COLMAP poses ("dataset_colmap").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInput
from ..gaussians import Gaussians
from ..io.lw4d import COORDINATE_FRAME, LW4D, SequenceWriter
from ..io.outputs import check_output
from .train import load_checkpoint, read_run


def _decoded(g: Gaussians) -> dict[str, np.ndarray]:
    return {"position": g.means.detach().cpu().numpy().astype(np.float32),
            "rotation": g.unit_quats().detach().cpu().numpy().astype(np.float32),
            "scale": g.log_scales.exp().detach().cpu().numpy().astype(np.float32),
            "opacity": g.opacity_logits.sigmoid().detach().cpu().numpy().astype(np.float32)}


def coordinate_frame_of(dataset: str | Path) -> str:
    """"blender_z_up_m" for datasets our generator made (its scene.json says so), else "dataset_colmap"."""
    scene = Path(dataset) / "scene.json"
    if scene.is_file() and json.loads(scene.read_text()).get("world") == COORDINATE_FRAME:
        return COORDINATE_FRAME
    return "dataset_colmap"


@torch.no_grad()
def export_expert(run: str | Path, out: str | Path, expert: str | None = None, frames: int | None = None,
                  progress=None, replace: bool = False) -> Path:
    """Bake ``expert`` of ``run`` (default: the first trained; "distilled": the student the router job distilled the
    mixture into) over ``frames`` frames (default: the dataset's) into the ``.lw4d`` folder ``out`` (checked first:
    an earlier sequence there is replaced only with ``replace``, anything else is refused)."""
    check_output(out, LW4D, replace)
    run = Path(run)
    meta = read_run(run)
    trained = [n for n in meta["experts"] if (run / n / "checkpoint.pt").is_file()]
    name = expert or (trained[0] if trained else None)
    if name == "distilled":
        students = sorted((run / "mixture" / "distilled").glob("*/checkpoint.pt"))
        if len(students) != 1:
            raise InvalidInput(f"{run} has {len(students)} distilled students (mixture/distilled/*/checkpoint.pt); "
                               "train the router with a distillation first")
        path = students[0]
    elif name is None or name not in trained:
        raise InvalidInput(f"expert {expert!r} is not trained in {run}; trained: {trained} (or 'distilled')")
    else:
        path = run / name / "checkpoint.pt"
    model, _ = load_checkpoint(path)
    model.eval()
    t_count = int(frames or meta["frames"])
    if t_count < 1:
        raise InvalidInput(f"frames must be >= 1, got {t_count}")
    times = np.linspace(0.0, 1.0, t_count) if t_count > 1 else np.zeros(1)
    first = model.gaussians_at(0.0)
    ref = _decoded(first)
    tol = {"position": 1e-5 * model.extent, "rotation": 1e-5, "opacity": 1e-5}
    moved = {k: np.zeros(len(first), bool) for k in ref}
    for t in times[1:]:  # pass 1: which Gaussians and channels change
        cur = _decoded(model.gaussians_at(float(t)))
        for k, v in cur.items():
            if k == "scale":
                d = np.abs(np.log(np.maximum(v, 1e-30)) - np.log(np.maximum(ref[k], 1e-30)))
                moved[k] |= (d > 1e-5).reshape(len(v), -1).any(1)
            else:
                moved[k] |= (np.abs(v - ref[k]) > tol[k]).reshape(len(v), -1).any(1)
    dynamic = np.nonzero(np.any(np.stack(list(moved.values())), 0))[0].astype(np.int64)
    channels = ["position"] + [k for k in ("rotation", "scale", "opacity") if moved[k].any()]
    base = Gaussians(means=ref["position"], quats=ref["rotation"], log_scales=np.log(np.maximum(ref["scale"], 1e-30)),
                     opacity_logits=first.opacity_logits.cpu().numpy(), sh=first.sh.cpu().numpy())
    with SequenceWriter(out, base, dynamic, t_count, channels=channels, fps=float(meta.get("fps", 30.0)),
                        loop=False, coordinate_frame=coordinate_frame_of(meta["dataset"]), replace=replace) as w:
        for i, t in enumerate(times):  # pass 2: write
            cur = _decoded(model.gaussians_at(float(t)))
            w.append(**{k: cur[k][dynamic] for k in channels})
            if progress is not None:
                progress((i + 1) / t_count, f"baked frame {i + 1}/{t_count}")
    return Path(out)
