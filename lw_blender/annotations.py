"""Annotation strokes (Blender's annotation tool) -> motion hints in pixel coordinates of a world view.

An artist draws strokes with the annotation tool in the 3D viewport (placement "3D Cursor", "View" or "Surface":
the points are stored in 3D, Blender Z-up metres). Each stroke, in its drawing order, says "things here move this
way". ``view_strokes`` projects the points through a camera with ``bpy_extras.object_utils.world_to_camera_view``,
which returns (x, y) in 0..1 of the camera frame with y UP and the depth in front of the camera, and turns them
into pixels of the view the backend works on (x right, y DOWN, the convention of the motion_update job):

    px = x * width,  py = (1 - y) * height

Points behind the camera (depth <= 0) are dropped; a stroke keeps its longest run of points in front.
"""

from __future__ import annotations

import numpy as np

SCREEN_MODES = ("2DSPACE", "2DIMAGE", "SCREEN")


class AnnotationError(Exception):
    """No usable annotation strokes (none drawn, only screen-space ones, or all behind the camera)."""


def _frame_at(layer, frame: int):
    """The layer's drawing shown at scene ``frame``: the last key at or before it, else the first one."""
    frames = sorted(layer.frames, key=lambda f: f.frame_number)
    if not frames:
        return None
    shown = [f for f in frames if f.frame_number <= frame]
    return shown[-1] if shown else frames[0]


def stroke_points(scene, frame: int | None = None) -> list[np.ndarray]:
    """3D points (P, 3) float32 of every visible 3D annotation stroke of ``scene`` at ``frame`` (default: current).

    Raises AnnotationError when the scene has annotation strokes but none in 3D space (they cannot be projected
    into the world's view) or no strokes at all.
    """
    data = scene.annotation
    if data is None:
        raise AnnotationError("the scene has no annotations: draw strokes with the Annotate tool in the 3D view "
                              "(camera view), in the direction things should move")
    frame = scene.frame_current if frame is None else frame
    out, skipped = [], 0
    for layer in data.layers:
        if layer.annotation_hide:
            continue
        drawing = _frame_at(layer, frame)
        if drawing is None:
            continue
        for stroke in drawing.strokes:
            if stroke.display_mode in SCREEN_MODES:
                skipped += 1
                continue
            co = np.empty(len(stroke.points) * 3, dtype=np.float32)
            stroke.points.foreach_get("co", co)
            if len(co) >= 6:  # a direction needs two points
                out.append(co.reshape(-1, 3))
    if not out:
        why = (f"{skipped} stroke(s) are in screen space; draw them in the 3D viewport with placement 3D Cursor, "
               "View or Surface" if skipped else "no annotation stroke with two or more points is visible")
        raise AnnotationError(f"no motion hints to send: {why}")
    return out


def project(scene, camera, points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (P, 2) (x right, y down, in a ``width`` x ``height`` view) and in-front flags (P,) of 3D ``points``
    seen by ``camera`` (an Object) with the scene's render settings (aspect, sensor fit)."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    ndc = np.array([tuple(world_to_camera_view(scene, camera, Vector(p))) for p in points], dtype=np.float64)
    pixels = np.stack([ndc[:, 0] * width, (1.0 - ndc[:, 1]) * height], axis=1)
    return pixels, ndc[:, 2] > 0.0


def _longest_run(flags: np.ndarray) -> slice:
    best, start = slice(0, 0), None
    for i, ok in enumerate(list(flags) + [False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if i - start > best.stop - best.start:
                best = slice(start, i)
            start = None
    return best


def view_strokes(scene, camera, width: int, height: int, frame: int | None = None) -> list[list[tuple[float, float]]]:
    """The scene's 3D annotation strokes as pixel polylines of the ``width`` x ``height`` view of ``camera``."""
    strokes = []
    for points in stroke_points(scene, frame):
        pixels, front = project(scene, camera, points, width, height)
        run = pixels[_longest_run(front)]
        if len(run) >= 2:
            strokes.append([(round(float(x), 3), round(float(y), 3)) for x, y in run])
    if not strokes:
        raise AnnotationError("every annotation stroke lies behind the camera; draw them in the camera view")
    return strokes
