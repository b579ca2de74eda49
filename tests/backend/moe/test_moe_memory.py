"""Datasets larger than the machine: refused before decoding with the frame range or downsample that would fit, frame
ranges through the job and the CLI, frames kept on the host when the GPU has no room for them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend import cli
from backend.errors import InvalidInput
from backend.moe import data
from backend.moe.data import load_n3v, load_technicolor
from backend.moe.train import frames_fit_on_device

FRAME = 96 * 72 * 3  # bytes of one decoded tiny frame (4 cameras x 6 frames at 96x72)


def _free(monkeypatch, frames_that_fit: float):
    """Pretend the machine has room for this many frames of all 4 cameras (after the loader's share)."""
    monkeypatch.setattr(data, "available_memory", lambda: int(frames_that_fit * 4 * FRAME / data.MEMORY_SHARE))


def test_n3v_too_large_is_refused_before_decoding_with_a_range_and_a_downsample_that_fit(tiny_dataset, monkeypatch):
    _free(monkeypatch, 2.5)
    decoded = []
    real = data._read_video
    monkeypatch.setattr(data, "_read_video", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    with pytest.raises(InvalidInput) as err:
        load_n3v(tiny_dataset)
    msg = str(err.value)
    assert "4 cameras x 6 frames at 96x72" in msg and "at most 2 frames" in msg and "downsample 1.6 or more" in msg
    assert decoded == []  # refused from the video header, before any frame was decoded
    assert load_n3v(tiny_dataset, frames=(1, 3)).images.shape == (4, 2, 72, 96, 3)  # the range it proposed
    assert load_n3v(tiny_dataset, downsample=1.6).num_frames == 6  # the downsample it proposed
    with pytest.raises(InvalidInput, match="at most 2 frames"):
        load_n3v(tiny_dataset, frames=(2, None))  # 4 frames from frame 2 to the end


def test_technicolor_too_large_is_refused_and_downsampled_intrinsics_stay_right(tiny_dataset, tmp_path, monkeypatch):
    from .test_moe_data import _write_technicolor

    v = load_n3v(tiny_dataset)
    _write_technicolor(v, tmp_path / "Scene")
    half = load_technicolor(tmp_path / "Scene", downsample=2)  # the intrinsics follow the image, not the file size
    for a, b in zip(half.cameras, v.cameras):
        np.testing.assert_allclose(a.K[:2], b.K[:2] / 2, atol=1e-9)
    _free(monkeypatch, 3)
    with pytest.raises(InvalidInput, match="4 cameras x 6 frames at 96x72 .* at most 3 frames"):
        load_technicolor(tmp_path / "Scene")
    assert load_technicolor(tmp_path / "Scene", frames=(151, 154)).num_frames == 3
    with pytest.raises(InvalidInput, match=r"frames 0..49, e.g. frame 0 camera 00 \(the file names number frames "
                                           r"151..156\)"):
        load_technicolor(tmp_path / "Scene", frames=(0, 50))  # video frame indices given for file numbers
    with pytest.raises(InvalidInput, match="the frame range 154..153 holds no frame"):
        load_technicolor(tmp_path / "Scene", frames=(154, 154))


def test_technicolor_images_of_different_sizes_are_named(tiny_dataset, tmp_path):
    import cv2

    from .test_moe_data import _write_technicolor

    _write_technicolor(load_n3v(tiny_dataset), tmp_path / "Scene")
    odd = tmp_path / "Scene" / "Birthday_undist_00153_02.png"
    cv2.imwrite(str(odd), np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(InvalidInput, match="Birthday_undist_00153_02.png is 50x40 .* the first one 96x72"):
        load_technicolor(tmp_path / "Scene")


def test_moe_train_job_trains_on_a_frame_range_and_refuses_a_reversed_one(tiny_dataset, tmp_path, capsys):
    ws = tmp_path / "ws"
    params = {"dataset": str(tiny_dataset), "experts": ["trajectory"], "iterations": 2, "frames": [2, None]}
    assert cli.main(["jobs", "run", "moe_train", "--params", json.dumps(params), "--workspace", str(ws)]) == 0
    run = next(ws.rglob("run.json"))
    meta = json.loads(run.read_text())
    assert meta["frames"] == 4 and meta["train_config"]["frames"] == [2, None]
    ckpt = torch.load(run.parent / "trajectory" / "checkpoint.pt", weights_only=True)
    assert ckpt["num_frames"] == 4
    capsys.readouterr()
    params["frames"] = [3, 1]
    assert cli.main(["jobs", "run", "moe_train", "--params", json.dumps(params), "--workspace", str(ws)]) == 2
    assert "frames must be [start, end) with 0 <= start < end, got [3, 1]" in capsys.readouterr().err


def test_lw_moe_train_frames_and_an_unreadable_dataset_leaves_no_run_folder(tiny_dataset, tmp_path, monkeypatch, capsys):
    assert cli.main(["moe", "train", str(tiny_dataset), "--out", str(tmp_path / "bad"), "--frames", "4", "4"]) == 2
    assert "frames must be [start, end) with 0 <= start < end, got [4, 4]" in capsys.readouterr().err
    _free(monkeypatch, 1)
    assert cli.main(["moe", "train", str(tiny_dataset), "--out", str(tmp_path / "big"), "--iterations", "1"]) == 2
    assert "at most 1 frames" in capsys.readouterr().err and not (tmp_path / "big").exists()
    assert cli.main(["moe", "train", str(tiny_dataset), "--out", str(tmp_path / "one"), "--iterations", "1",
                     "--experts", "keyframe", "--frames", "0", "1"]) == 0
    assert json.loads((tmp_path / "one" / "run.json").read_text())["frames"] == 1


def test_frames_stay_on_the_host_when_the_gpu_has_no_room(monkeypatch):
    assert frames_fit_on_device(10**12, torch.device("cpu"))  # the CPU: a view, never a copy
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 10**9, 80 * 10**9))
    cuda = torch.device("cuda")
    assert frames_fit_on_device(2 * 10**9, cuda) and not frames_fit_on_device(3 * 10**9, cuda)
