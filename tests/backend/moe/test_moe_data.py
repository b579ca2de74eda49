"""Dataset loaders (N3V, Technicolor) on a Blender-rendered multi-view video, their errors, point initialisation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import imageio.v2 as iio
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from backend.errors import InvalidInput
from backend.moe.data import llff_to_world_to_cam, load_dataset, load_n3v, load_technicolor
from backend.moe.points import init_points

from .conftest import make_dataset


def test_n3v_loader_reads_cameras_frames_and_holds_out_cam00(tiny_dataset):
    v = load_n3v(tiny_dataset)
    assert v.images.shape == (4, 6, 72, 96, 3) and v.images.dtype == np.uint8
    assert v.names == ["cam00", "cam01", "cam02", "cam03"]
    assert v.test == [0] and v.train == [1, 2, 3]
    np.testing.assert_allclose(v.times, np.linspace(0, 1, 6))
    assert v.fps == pytest.approx(30.0)
    cam = v.cameras[0]
    assert (cam.width, cam.height) == (96, 72)
    np.testing.assert_allclose(cam.K[:2, 2], [48, 36])
    # the generator aims every camera at (0, 0, 0.55): it projects to the image centre
    p = cam.K @ (cam.world_to_cam @ np.array([0, 0, 0.55, 1.0]))[:3]
    np.testing.assert_allclose(p[:2] / p[2], [48, 36], atol=1e-3)
    f = v.frame(1, 2)
    assert f.dtype == np.float32 and f.shape == (72, 96, 3) and 0.2 < f.mean() < 0.9


def test_llff_convention_maps_down_right_back_to_opencv():
    # camera at (1, 2, 3) looking along world +y with world +z up: OpenCV right = +x, down = -z, forward = +y
    down, right, back = np.array([0, 0, -1.0]), np.array([1.0, 0, 0]), np.array([0, -1.0, 0])
    pose = np.stack([down, right, back, [1, 2, 3], [72, 96, 90]], 1)
    w2c = llff_to_world_to_cam(pose)
    np.testing.assert_allclose(w2c[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(w2c @ [1, 5, 3, 1], [0, 0, 3, 1], atol=1e-12)  # 3 m in front: z = 3


def test_poses_agree_with_rendered_depth_across_cameras(tiny_dataset):
    """Lift cam01's ground-truth depth to 3D with our cameras, project into cam02: depths must agree."""
    v = load_n3v(tiny_dataset)
    d1 = np.load(tiny_dataset / "depth" / "cam01.npy")[0]
    d2 = np.load(tiny_dataset / "depth" / "cam02.npy")[0]
    a, b = v.cameras[1], v.cameras[2]
    jj, ii = np.meshgrid(np.arange(96) + 0.5, np.arange(72) + 0.5)
    rays = np.stack([jj, ii, np.ones_like(jj)], -1).reshape(-1, 3) @ np.linalg.inv(a.K).T
    world = (rays * d1.reshape(-1, 1) - a.world_to_cam[:3, 3]) @ a.world_to_cam[:3, :3]
    pc = world @ b.world_to_cam[:3, :3].T + b.world_to_cam[:3, 3]
    uv = pc @ b.K.T
    j, i = np.floor(uv[:, 0] / uv[:, 2]).astype(int), np.floor(uv[:, 1] / uv[:, 2]).astype(int)
    inside = (j >= 0) & (j < 96) & (i >= 0) & (i < 72)
    err = np.abs(pc[inside, 2] - d2[i[inside], j[inside]])
    assert inside.mean() > 0.5
    assert np.median(err) < 0.03


def test_downsample_and_frame_range(tiny_dataset):
    full = load_n3v(tiny_dataset)
    half = load_n3v(tiny_dataset, downsample=2, frames=(1, 4))
    assert half.images.shape == (4, 3, 36, 48, 3)
    np.testing.assert_array_equal(half.frame_numbers, [1, 2, 3])
    np.testing.assert_allclose(half.cameras[2].K, np.diag([0.5, 0.5, 1]) @ full.cameras[2].K)
    expect = cv2.resize(full.images[2, 2], (48, 36), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(half.images[2, 1], expect)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_n3v_errors_name_what_is_wrong(tiny_dataset, tmp_path):
    with pytest.raises(InvalidInput, match="neither an N3V"):
        load_dataset(tmp_path)
    d = _copy(tiny_dataset, tmp_path / "a")
    (d / "cam03.mp4").unlink()
    with pytest.raises(InvalidInput, match="4 poses but the folder has 3 camNN.mp4"):
        load_n3v(d)
    d = _copy(tiny_dataset, tmp_path / "b")
    (d / "cam02.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InvalidInput, match="cam02.mp4"):
        load_n3v(d)
    d = _copy(tiny_dataset, tmp_path / "c")
    frames = iio.mimread(d / "cam01.mp4")[:4]
    iio.mimwrite(d / "cam01.mp4", frames, fps=30, macro_block_size=8)
    with pytest.raises(InvalidInput, match="different frame counts"):
        load_n3v(d)
    assert load_n3v(d, frames=(0, 4)).num_frames == 4  # a range every video covers works
    with pytest.raises(InvalidInput, match="cam01.mp4 has 4 frames"):
        load_n3v(d, frames=(0, 6))
    d = _copy(tiny_dataset, tmp_path / "e")
    (d / "poses_bounds.npy").unlink()
    with pytest.raises(InvalidInput, match="poses_bounds.npy is missing"):
        load_n3v(d)


def _write_technicolor(video, folder, scene="Birthday", first=151, ext="png"):
    folder.mkdir()
    lines = ["f cx cy ar skew qw qx qy qz tx ty tz"]
    for c, cam in enumerate(video.cameras):
        x, y, z, w = Rotation.from_matrix(cam.world_to_cam[:3, :3]).as_quat()
        t = cam.world_to_cam[:3, 3]
        lines.append(" ".join(map(str, [cam.K[0, 0], cam.K[0, 2], cam.K[1, 2], 1.0, 0.0, w, x, y, z, *t])))
        for f in range(video.num_frames):
            cv2.imwrite(str(folder / f"{scene}_undist_{first + f:05d}_{c:02d}.{ext}"), video.images[c, f][..., ::-1])
    (folder / "cameras_parameters.txt").write_text("\n".join(lines) + "\n")


def test_technicolor_layout_reads_like_n3v(tiny_dataset, tmp_path):
    v = load_n3v(tiny_dataset)
    _write_technicolor(v, tmp_path / "Scene")
    t = load_technicolor(tmp_path / "Scene")
    assert t.names == v.names and t.num_frames == 6
    np.testing.assert_array_equal(t.images, v.images)
    np.testing.assert_array_equal(t.frame_numbers, np.arange(151, 157))
    for a, b in zip(t.cameras, v.cameras):
        np.testing.assert_allclose(a.K, b.K, atol=1e-9)
        np.testing.assert_allclose(a.world_to_cam, b.world_to_cam, atol=1e-6)
    # held out: the camera nearest the rig's centre
    centres = np.stack([c.center for c in v.cameras])
    assert t.test == [int(np.argmin(np.linalg.norm(centres - centres.mean(0), axis=1)))]
    assert load_technicolor(tmp_path / "Scene", downsample=2, frames=(152, 154)).images.shape == (4, 2, 36, 48, 3)


def test_technicolor_reads_jpeg_frames(tiny_dataset, tmp_path):
    v = load_n3v(tiny_dataset)
    _write_technicolor(v, tmp_path / "Scene", ext="jpg")  # OpenCV's default JPEG quality, 95
    t = load_dataset(tmp_path / "Scene")
    assert t.images.shape == v.images.shape
    err = np.abs(t.images.astype(np.float64) - v.images).mean()
    assert 0.0 < err < 3.0  # lossy, but the same pictures


def test_technicolor_uses_the_stg_clip_and_reports_missing_images(tiny_dataset, tmp_path):
    v = load_n3v(tiny_dataset)
    _write_technicolor(v, tmp_path / "Birthday", first=151)
    # the STG clip for Birthday is frames 151..200: only 6 exist here
    with pytest.raises(InvalidInput, match="images missing for frames 151..200"):
        load_technicolor(tmp_path / "Birthday")
    (tmp_path / "Birthday" / "cameras_parameters.txt").write_text("header\n1 2 3\n")
    with pytest.raises(InvalidInput, match="row 1 has 3 values"):
        load_technicolor(tmp_path / "Birthday")


def _depth_error_in_cam00(pts: np.ndarray, v, dataset: Path) -> tuple[np.ndarray, float]:
    """|z - true depth| of the points seen by the held-out cam00 (a view the sweep never used), and the fraction
    of the points it sees."""
    cam = v.cameras[0]
    depth = np.load(dataset / "depth" / "cam00.npy")[0]
    pc = pts @ cam.world_to_cam[:3, :3].T + cam.world_to_cam[:3, 3]
    uv = pc @ cam.K.T
    j, i = np.floor(uv[:, 0] / uv[:, 2]).astype(int), np.floor(uv[:, 1] / uv[:, 2]).astype(int)
    inside = (pc[:, 2] > 0) & (j >= 0) & (j < 96) & (i >= 0) & (i < 72)
    return np.abs(pc[inside, 2] - depth[i[inside], j[inside]]), float(inside.mean())


def test_point_init_lies_on_the_true_surfaces(tiny_dataset):
    v = load_n3v(tiny_dataset)
    pts, cols, method = init_points(v, min_points=0)
    assert method in ("sweep", "colmap") and len(pts) > 300 and pts.dtype == np.float32
    assert cols.min() >= 0 and cols.max() <= 1
    err, _ = _depth_error_in_cam00(pts, v, tiny_dataset)
    assert np.median(err) < 0.15
    grown, _, _ = init_points(v, min_points=5000)
    assert len(grown) == 5000


def test_point_init_finds_the_scene_without_depth_bounds(tiny_dataset, tmp_path):
    """A Technicolor folder has no depth bounds (the loader puts 0.01..100): the sweep finds the scene's depth
    range itself, and the cloud lies on the same surfaces as with the N3V folder's real bounds (it landed ~100
    units away before, and every expert trained on it stayed blank)."""
    v = load_n3v(tiny_dataset)
    _write_technicolor(v, tmp_path / "Scene")
    t = load_technicolor(tmp_path / "Scene")
    assert np.allclose(t.bounds, [0.01, 100.0])
    pts, _, method = init_points(t, "sweep", min_points=0)
    assert method == "sweep" and len(pts) > 300
    err, seen = _depth_error_in_cam00(pts, t, tiny_dataset)
    assert np.median(err) < 0.15 and seen > 0.5


def test_mixed_scene_adds_movers_above_the_basic_scene(tiny_dataset, tmp_path):
    """``--scene mixed`` (the bench scene whose regions move in different ways) renders its bouncing ball, turning
    wheel and waving banner: far more of the upper half of every view changes over the clip than in the basic
    scene, whose movers are on the floor."""
    mixed = make_dataset(tmp_path / "mixed", "--preset", "tiny", "--scene", "mixed")
    meta = json.loads((mixed / "scene.json").read_text())
    assert meta["scene"] == "mixed"
    assert {"bouncing_ball", "turning_wheel", "waving_banner"} <= set(meta["motions"])

    def moving_upper_half(folder: Path) -> np.ndarray:
        im = load_n3v(folder).images.astype(np.int16)  # (K, T, H, W, 3)
        moving = (im.max(axis=1) - im.min(axis=1)).sum(axis=-1) > 60
        return moving[:, : im.shape[2] // 2].mean(axis=(1, 2))  # per camera

    basic, mix = moving_upper_half(tiny_dataset), moving_upper_half(mixed)
    assert np.all(mix > 1.6 * basic), (mix, basic)


def test_repeats_play_the_motions_again_over_a_longer_clip(tmp_path):
    """``--repeats 2``: the sphere crosses and comes back, so the clip's last frame shows it where the first does
    (the once-played clip ends it 2.2 m away); a bad count is refused before anything is written."""
    once = make_dataset(tmp_path / "once", "--preset", "tiny", "--frames", "7")
    twice = make_dataset(tmp_path / "twice", "--preset", "tiny", "--frames", "7", "--repeats", "2")
    assert json.loads((twice / "scene.json").read_text())["repeats"] == 2

    def changed(folder: Path, a: int, b: int) -> float:  # share of pixels whose depth moved between two frames
        d = np.load(folder / "depth" / "cam00.npy")
        return float((np.abs(d[a] - d[b]) > 0.05).mean())

    assert changed(twice, 0, 6) < 0.5 * changed(once, 0, 6), (changed(twice, 0, 6), changed(once, 0, 6))
    assert changed(twice, 0, 3) > 0.5 * changed(once, 0, 6)  # half way it is across, as the single pass ends
    with pytest.raises(RuntimeError, match="--repeats must be between 1 and frames - 1"):
        make_dataset(tmp_path / "bad", "--preset", "tiny", "--repeats", "0")
    assert not (tmp_path / "bad").exists()


def test_flame_scene_lights_still_surfaces_that_change_over_the_clip(tiny_dataset, tmp_path):
    """``--scene flame``: a flickering flame's light brightens and dims the wall and floor around it, so pixels whose
    depth never changes (nothing moves there) change colour far more often than in the basic scene (whose only such
    pixels are under moving shadows)."""
    flame = make_dataset(tmp_path / "flame", "--preset", "tiny", "--scene", "flame")
    meta = json.loads((flame / "scene.json").read_text())
    assert {"flame", "flame_light", "bouncing_ball"} <= set(meta["motions"])

    def lit_still_pixels(folder: Path) -> float:
        im = load_n3v(folder).images.astype(np.float32)[0]  # cam00: (T, H, W, 3)
        depth = np.load(folder / "depth" / "cam00.npy")  # (T, H, W)
        still = (depth.max(0) - depth.min(0)) < 1e-3
        brightness = im.mean(-1)
        varies = (brightness.max(0) - brightness.min(0)) > 25
        return float((still & varies).mean())

    basic, lit = lit_still_pixels(tiny_dataset), lit_still_pixels(flame)
    assert lit > 0.05 and lit > 2 * basic, (lit, basic)  # basic: moving shadows; measured 0.085 vs 0.031
