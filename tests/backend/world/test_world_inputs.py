"""The images and depth maps a user hands world_new: every broken one is a one-line error naming it, found before
any work, and the job leaves no world or job folder behind."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.errors import InvalidInput, NotFound
from backend.jobs import run_inline
from backend.world.pipeline import read_image
from tests.backend.image_files import png_header_only

BUILTIN = {"depth": "builtin", "segmentation": "builtin", "outpaint": "builtin", "device": "cpu"}


@pytest.mark.parametrize("make,expect", [
    (lambda p: p.mkdir(), "is a folder; choose an image file"),
    (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    (lambda p: p.write_text("hello, not an image"), "is not an image OpenCV can read"),
    (lambda p: png_header_only(p, 60_000, 60_000), "cannot be read: Image size"),  # Pillow's bomb check
    (lambda p: png_header_only(p, 12_000, 12_000), "says it is 12000x12000 pixels, more than 120,000,000"),
    (lambda p: png_header_only(p, 64, 64), "is not an image OpenCV can read"),
])
def test_broken_images_are_one_line_errors(tmp_path, make, expect):
    path = tmp_path / "photo.png"
    make(path)
    with pytest.raises(InvalidInput, match=expect) as err:
        read_image(path)
    assert "\n" not in str(err.value)


def test_a_missing_image_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        read_image(tmp_path / "nope.png")


def test_unicode_names_are_read(tmp_path):
    path = tmp_path / "été – 山.png"
    cv2.imwrite(str(tmp_path / "a.png"), np.full((8, 8, 3), 200, np.uint8))
    (tmp_path / "a.png").rename(path)
    assert read_image(path).shape == (8, 8, 3)


@pytest.mark.parametrize("depth,expect", [
    (np.zeros((0, 5), np.float32), r"has shape \(0, 5\)"),
    (np.array(["a", "b"]), "dtype <U1, expected float metres"),
    (np.array([None], dtype=object), "a pickle"),
])
def test_world_new_with_a_broken_image_or_depth_fails_in_one_line_and_leaves_nothing(tmp_path, depth, expect):
    ws = tmp_path / "ws"
    ws.mkdir()
    cv2.imwrite(str(ws / "photo.png"), np.full((24, 32, 3), 128, np.uint8))
    np.save(ws / "depth.npy", depth, allow_pickle=True)
    with pytest.raises(InvalidInput, match=expect):
        run_inline("world_new", {"image": "photo.png", "depth": "depth.npy", "out": "worlds/w", "resolution": 32,
                                 "models": BUILTIN}, ws, "n")
    (ws / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidInput, match="is empty"):
        run_inline("world_new", {"image": "empty.png", "resolution": 32, "models": BUILTIN}, ws, "n2")
    assert not (ws / "worlds").exists() and not (ws / "jobs" / "n").exists() and not (ws / "jobs" / "n2").exists()


def test_a_depth_png_whose_header_claims_a_huge_image_is_refused_before_decoding(tmp_path):
    from backend.models.depth import DepthMapFile

    path = png_header_only(tmp_path / "depth.png", 12_000, 12_000)
    with pytest.raises(InvalidInput, match="says it is 12000x12000 pixels, more than 120,000,000") as err:
        DepthMapFile(path).predict(np.zeros((24, 32, 3), np.float32), 30.0)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("where", ["preset", "hint"])
def test_a_motion_mask_whose_header_claims_a_huge_image_is_refused_before_decoding(tmp_path, where):
    from backend.world.motion.pipeline import HintStrokes, MotionUpdate, PresetRegion, View, view_cue

    mask = str(png_header_only(tmp_path / "mask.png", 12_000, 12_000))
    view = View(0, None, np.zeros((24, 32, 3), np.float32), np.ones((24, 32), np.float32), np.zeros((24, 32), np.uint8))
    request = (MotionUpdate(presets=(PresetRegion("water", mask=mask),)) if where == "preset" else
               MotionUpdate(hints=(HintStrokes([[(1.0, 1.0), (5.0, 5.0)]], mask=mask),)))
    with pytest.raises(InvalidInput, match="says it is 12000x12000 pixels, more than 120,000,000") as err:
        view_cue(view, request)
    assert "\n" not in str(err.value)
