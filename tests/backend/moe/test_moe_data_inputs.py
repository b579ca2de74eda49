"""backend/moe/data.py on broken datasets: every malformed poses_bounds.npy, video or Technicolor camera file is a
one-line error naming the file and the problem, before any frame is decoded, and a job leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import InvalidInput
from backend.jobs import run_inline
from backend.moe.data import load_dataset
from tests.backend.image_files import png_header_only

ROW = np.concatenate([np.hstack([np.eye(3), [[0.0], [0.0], [-4.0]], [[72.0], [96.0], [80.0]]]).ravel(), [1.0, 6.0]])


def _n3v(folder, poses, videos=2, video_bytes=b"not a video"):
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(videos):
        (folder / f"cam{c:02d}.mp4").write_bytes(video_bytes)
    if isinstance(poses, bytes):
        (folder / "poses_bounds.npy").write_bytes(poses)
    else:
        np.save(folder / "poses_bounds.npy", poses, allow_pickle=True)
    return folder


def _rows(**edits):
    pb = np.stack([ROW, ROW])
    for (row, col), value in edits.get("at", {}).items():
        pb[row, col] = value
    return pb


class _Planted:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("poses,expect", [
    (np.zeros((2, 17)), r"row 0: the rotation \(first three columns of the 3x5 pose\) is not orthonormal"),
    (_rows(at={(1, 5): np.nan}), r"NaN or infinite values in row\(s\) \[1\]"),
    (_rows(at={(0, 16): np.inf}), r"NaN or infinite values in row\(s\) \[0\]"),
    (np.zeros((2, 15)), r"shape \(2, 15\), expected \(N, 17\)"),
    (np.zeros((0, 17)), r"shape \(0, 17\), expected \(N, 17\) with N >= 1"),
    (np.array([["abc"] * 17] * 2), "dtype <U3, expected float numbers"),
    (_rows(at={(0, 4): -72.0}), "row 0: height -72, width 96 and focal 80 must be positive"),
    (_rows(at={(1, 14): 0.0}), "row 1: height 72, width 96 and focal 0 must be positive"),
    (_rows(at={(0, 15): 7.0}), "row 0: bounds near 7, far 6; expected 0 <= near < far"),
    (b"this is not numpy", "not a readable numpy array file"),
])
def test_malformed_poses_bounds_are_one_line_errors(tmp_path, poses, expect):
    folder = _n3v(tmp_path / "scene", poses)
    with pytest.raises(InvalidInput, match=expect) as err:
        load_dataset(folder)
    assert str(folder / "poses_bounds.npy") in str(err.value) and "\n" not in str(err.value)


def test_a_pickled_poses_bounds_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    folder = _n3v(tmp_path / "scene", np.array([_Planted(marker)], dtype=object))
    with pytest.raises(InvalidInput, match="not a readable numpy array file"):
        load_dataset(folder)
    assert not marker.exists()


@pytest.mark.parametrize("content,expect", [
    (b"not a video at all", "Invalid data found when processing input"),
    (b"", "the file is empty (0 bytes)"),
])
def test_broken_videos_give_the_real_ffmpeg_error_not_its_banner(tmp_path, content, expect):
    folder = _n3v(tmp_path / "scene", np.stack([ROW, ROW]), video_bytes=content)
    with pytest.raises(InvalidInput) as err:
        load_dataset(folder)
    msg = str(err.value)
    assert expect in msg and str(folder / "cam00.mp4") in msg
    assert "\n" not in msg and len(msg) < 400 and "libavcodec" not in msg and "ffmpeg version" not in msg


def test_a_missing_video_is_a_one_line_error(tmp_path):
    """A camera video that is a dangling link (or vanished after the folder was listed) is named in one line, not a
    raw FileNotFoundError."""
    folder = _n3v(tmp_path / "scene", np.stack([ROW, ROW]))
    (folder / "cam00.mp4").unlink()
    (folder / "cam00.mp4").symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(InvalidInput, match="cannot read video .*cam00.mp4: No such file or directory") as err:
        load_dataset(folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("row,expect", [
    ("1000 480 270 1 0 1 0 0 0 abc 0 0", "is not 12 numbers"),
    ("1000 480 270 1 0 0 0 0 0 0 0 0", "the quaternion qw qx qy qz non-zero"),
    ("-5 480 270 1 0 1 0 0 0 0 0 0", "the focal f > 0"),
    ("nan 480 270 1 0 1 0 0 0 0 0 0", "values must be finite"),
])
def test_malformed_technicolor_cameras_are_one_line_errors(tmp_path, row, expect):
    folder = tmp_path / "Scene"
    folder.mkdir()
    (folder / "cameras_parameters.txt").write_text(f"header\n{row}\n")
    with pytest.raises(InvalidInput, match=expect) as err:
        load_dataset(folder)
    assert "cameras_parameters.txt row 1" in str(err.value) and "\n" not in str(err.value)


def test_a_technicolor_frame_whose_header_claims_a_huge_image_is_refused_before_decoding(tmp_path):
    folder = tmp_path / "Scene"
    folder.mkdir()
    (folder / "cameras_parameters.txt").write_text("header\n1000 480 270 1 0 1 0 0 0 0 0 0\n")
    png_header_only(folder / "Scene_undist_00000_00.png", 12_000, 12_000)
    with pytest.raises(InvalidInput, match="says it is 12000x12000 pixels, more than 120,000,000") as err:
        load_dataset(folder)
    assert "Scene_undist_00000_00.png" in str(err.value) and "\n" not in str(err.value)


def test_moe_train_on_nan_poses_fails_at_once_and_leaves_no_run_or_job_folder(tmp_path):
    ws = tmp_path / "ws"
    _n3v(ws / "scene", _rows(at={(1, 3): np.nan}))
    with pytest.raises(InvalidInput, match=r"NaN or infinite values in row\(s\) \[1\]"):
        run_inline("moe_train", {"dataset": "scene", "out": "run", "iterations": 1}, ws, "t")
    with pytest.raises(InvalidInput, match="NaN"):
        run_inline("moe_train", {"dataset": "scene", "iterations": 1}, ws, "t2")  # default out: jobs/t2/run
    assert not (ws / "run").exists() and not (ws / "jobs" / "t").exists() and not (ws / "jobs" / "t2").exists()
