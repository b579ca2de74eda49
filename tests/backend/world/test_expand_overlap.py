"""The expansion's speed-ups compute what the plain code did: lifting the new region's box, the step files
encoded ahead, the previous step's Gaussians kept in memory (the refinement's FixedGeometry: tests/backend/render)."""

from __future__ import annotations

import io
from dataclasses import replace

import cv2
import numpy as np

from backend.gaussians import Gaussians
from backend.io.ply import read_ply
from backend.world import pipeline
from backend.world.lift import LiftConfig, lift_image
from backend.world.pipeline import expand_world, lift_selected, new_world
from backend.world.samples.make_landscape import SAMPLE_PATH


def _assert_same(a: Gaussians, b: Gaussians):
    assert len(a) == len(b) > 0
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-6, err_msg=name)
    for k in a.extra:
        np.testing.assert_array_equal(a.extra[k], b.extra[k])


def test_lifting_the_selection_box_gives_the_whole_image_s_gaussians(tmp_path, make_config, turn):
    w0 = new_world(SAMPLE_PATH, tmp_path / "w", config=make_config(96))
    cam = turn(w0.current.opencv_camera(), 30)
    rng = np.random.default_rng(0)
    image = rng.random((96, 96, 3)).astype(np.float32)
    v, u = np.mgrid[0:96, 0:96].astype(np.float32)
    depth = 4.0 + 0.05 * u + 0.12 * v + 0.3 * np.sin(u / 5.0) * np.cos(v / 7.0)  # sloped, curved ground
    depth[:, 75:] += 6.0  # and a depth edge inside the band
    depth = depth.astype(np.float32)
    sky = np.zeros((96, 96), bool)
    sky[:20] = True
    water = np.zeros((96, 96), bool)
    water[70:, 40:] = True
    band = np.zeros((96, 96), bool)
    band[:, 61:] = True  # a turned camera's new band
    hole = np.zeros((96, 96), bool)
    hole[30:47, 12:33] = True  # a hole away from every border
    for select in (band, hole):
        for stride in (1, 2):
            cfg = LiftConfig(stride=stride)
            whole = lift_image(image, depth, cam, sky, water, select=select, step=3, config=cfg)
            _assert_same(lift_selected(image, depth, cam, sky, water, select, 3, cfg), whole)


def test_step_files_encoded_ahead_are_the_files_the_writers_made(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.random((40, 56, 3)).astype(np.float32)
    missing = rng.random((40, 56)) < 0.3
    depth = rng.random((40, 56)).astype(np.float32) * 100
    sky, water = rng.random((40, 56)) < 0.2, rng.random((40, 56)) < 0.2
    files = pipeline._encode_step_files(image, missing, depth, sky, water)
    pipeline._write_png(tmp_path / "image.png", image)
    cv2.imwrite(str(tmp_path / "mask.png"), missing.astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "regions.png"), pipeline._region_labels(sky, water))
    for name in ("image.png", "mask.png", "regions.png"):
        assert files[name] == (tmp_path / name).read_bytes(), name
    np.testing.assert_array_equal(np.load(io.BytesIO(files["depth.npy"])), depth)


def test_the_kept_gaussians_are_what_the_step_file_holds_and_a_changed_file_is_read_again(tmp_path, make_config,
                                                                                          turn):
    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=make_config(64))
    w1 = expand_world(root, turn(w0.current.opencv_camera(), 35))
    path = w1.file("gaussians.ply")
    kept = pipeline._read_gaussians(path)
    _assert_same(kept, read_ply(path))
    assert pipeline._read_gaussians(path) is kept  # no second read
    fewer = kept.subset(np.arange(10))
    from backend.io.ply import write_ply

    write_ply(path, fewer)  # someone replaced the file: its size changed
    assert len(pipeline._read_gaussians(path)) == 10
    w2 = expand_world(root, replace(turn(w0.current.opencv_camera(), -35)))
    assert len(read_ply(w2.file("gaussians.ply"))) == 10 + w2.current.stats["new_gaussians"]
