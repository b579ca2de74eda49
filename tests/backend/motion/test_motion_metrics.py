"""Loop quality as a user sees it: VBench temporal flicker, weight-free motion smoothness, the loop seam, the
uncovered share; on synthetic frames with known answers and on a small world through the CLI and the job."""

import argparse
import itertools
import json

import cv2
import numpy as np
import pytest
import torch

from backend.errors import InvalidInput
from backend.jobs import run_inline
from backend.world.motion.cli import add_motion_commands
from backend.world.motion.metrics import interpolate_middle, loop_quality, measure_world, sampled_frames

torch.set_num_threads(1)


def _vbench_flicker(frames_u8):
    """VBench's cal_score (vbench/temporal_flickering.py) on a list of uint8 frames."""
    maes = [np.mean(cv2.absdiff(np.array(a, dtype=np.float32), np.array(b, dtype=np.float32)))
            for a, b in itertools.pairwise(frames_u8)]
    return (255.0 - np.mean(maes).item()) / 255.0


def _texture(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.random((h, 2 * w, 3)).astype(np.float32), (0, 0), 2.0)


def _sliding(count, speed=1.0):
    """A texture sliding right ``speed`` px/frame (one way: the wrap jumps back)."""
    tex = _texture()
    return np.stack([cv2.warpAffine(tex, np.float32([[1, 0, -speed * t], [0, 1, 0]]), (96, 64),
                                    borderMode=cv2.BORDER_WRAP) for t in range(count)])


def test_temporal_flicker_is_vbench_s_definition_on_8_bit_frames():
    colors = _sliding(12, speed=1.0)
    q = loop_quality(colors, np.ones(colors.shape[:3]), list(range(12)), 12)
    u8 = [(np.clip(c, 0, 1) * 255 + 0.5).astype(np.uint8) for c in colors]
    assert q.temporal_flicker == pytest.approx(_vbench_flicker(u8), abs=1e-8)  # float32 sums, as VBench
    still = loop_quality(np.repeat(colors[:1], 5, 0), np.ones((5, 64, 96)), list(range(5)), 5)
    assert still.temporal_flicker == 1.0 and still.seam_ratio == 0.0


def test_motion_smoothness_interpolates_steady_motion_and_punishes_jitter():
    steady = _sliding(9, speed=1.5)
    q = loop_quality(steady, np.ones(steady.shape[:3]), list(range(9)), 9)
    assert q.motion_smoothness > 0.995
    jitter = steady.copy()
    jitter[1::2] = np.roll(jitter[1::2], 4, axis=2)  # the odd frames jump 4 px aside and back
    j = loop_quality(jitter, np.ones(jitter.shape[:3]), list(range(9)), 9)
    assert j.motion_smoothness < q.motion_smoothness - 0.01
    mid = interpolate_middle(*((np.clip(steady[k], 0, 1) * 255).astype(np.uint8) for k in (2, 4)))
    truth = (np.clip(steady[3], 0, 1) * 255).astype(np.uint8)
    assert np.abs(mid.astype(float) - truth)[:, 8:-8].mean() < 2.0


def test_seam_ratio_is_one_for_a_seamless_loop_and_large_for_a_jump():
    count = 16
    tex96 = _texture()[:, :96]
    loop = np.stack([np.roll(tex96, -t * 96 // count, axis=1) for t in range(count)])  # frame count is frame 0
    q = loop_quality(loop, np.ones(loop.shape[:3]), list(range(count)), count)
    assert q.seam_ratio == pytest.approx(1.0, abs=0.05) and q.seam_ratio_mean == pytest.approx(1.0, abs=0.05)
    jump = _sliding(count, speed=1.0)  # one way: the wrap jumps back 15 px
    j = loop_quality(jump, np.ones(jump.shape[:3]), list(range(count)), count)
    assert j.seam_ratio > 4.0
    holes = np.ones(loop.shape[:3])
    holes[3, :16] = 0.0
    h = loop_quality(loop, holes, list(range(count)), count)
    assert h.uncovered_max == pytest.approx(16 / 64) and h.uncovered_mean == pytest.approx(16 / 64 / count)


def test_a_seamless_wrap_within_the_spread_of_ordinary_steps_is_met_and_a_jump_is_not():
    # a periodic loop whose steps vary with the content (5-7 px): the wrap (6 px after a 5 px step) is above 1.0
    # of its neighbours, as ordinary steps of the same loop are
    tex96 = _texture()[:, :96]
    steps = [5, 7, 6, 6] * 4
    shifts = np.concatenate([[0], np.cumsum(steps)[:-1]])
    assert sum(steps) == 96
    loop = np.stack([np.roll(tex96, -int(s), axis=1) for s in shifts])
    q = loop_quality(loop, np.ones(loop.shape[:3]), list(range(16)), 16)
    assert q.seam_ratio > 1.0
    assert q.ordinary_ratio_sd > 0.02 and q.seam_ratio < q.seam_limit
    assert q.goals["seam_ratio"]["met"] and q.to_json()["goals"]["seam_ratio"]["limit"] == q.seam_limit
    jump = _sliding(16, speed=6.0)  # one way: the wrap jumps back 90 px
    j = loop_quality(jump, np.ones(jump.shape[:3]), list(range(16)), 16)
    assert j.seam_ratio > j.seam_limit and not j.goals["seam_ratio"]["met"]
    sampled = sampled_frames(64, 4)  # the CPU estimate: no ordinary steps to compare with, the goal is 1.0
    long = np.stack([np.roll(tex96, -3 * (t % 32), axis=1) for t in range(64)])
    e = loop_quality(long[sampled], np.ones((len(sampled), 64, 96)), sampled, 64)
    assert e.ordinary_ratio_mean is None and e.seam_limit == 1.0


def test_sampled_frames_are_even_triplets_and_the_wrap():
    f = sampled_frames(60, 4)
    assert {0, 1, 58, 59} <= set(f) and len(f) <= 16
    starts = [t for t in f if t % 2 == 0 and t + 1 in f and t + 2 in f]
    assert len(starts) >= 3
    assert sampled_frames(10, 4) == list(range(10)) and sampled_frames(60, None) == list(range(60))
    with pytest.raises(InvalidInput):
        loop_quality(np.zeros((2, 4, 4, 3)), np.ones((2, 4, 4)), [0, 1], 2)


def _small_world(tmp_path):
    from backend.models.config import ModelConfig
    from backend.world.motion.field import FieldSize
    from backend.world.motion.pipeline import MotionUpdate, update_motion
    from backend.world.pipeline import WorldConfig, new_world
    from backend.world.samples.make_landscape import SAMPLE_PATH

    cfg = WorldConfig(resolution=48, models=ModelConfig("builtin", "builtin", "builtin", device="cpu"))
    w = new_world(SAMPLE_PATH, tmp_path / "ws" / "world", config=cfg)
    update_motion(w.root, MotionUpdate(field=FieldSize(levels=4, table_log2=12, steps=30, update_steps=20),
                                       device="cpu"))
    return w.root


def test_a_world_s_loop_meets_the_goals_and_the_sampled_estimate_agrees(tmp_path):
    root = _small_world(tmp_path)
    exact = measure_world(root, frames=16, size=48, pairs=None, device="cpu")
    assert exact.exact and exact.rendered == 16 and exact.size == (48, 48)
    assert exact.temporal_flicker >= 0.989  # LivingWorld's VBench flicker
    assert exact.seam_ratio < 1.1  # the wrap is a step like those beside it (~1 by construction, 16 frames)
    assert 0.98 < exact.motion_smoothness <= 1.0 and exact.uncovered_max < 0.01
    sampled = measure_world(root, frames=16, size=48, pairs=2, device="cpu")
    assert not sampled.exact and sampled.rendered < 16
    assert sampled.temporal_flicker == pytest.approx(exact.temporal_flicker, abs=0.002)


def test_lw_world_metrics_on_a_world_and_on_its_lw4d_and_the_job(tmp_path, capsys):
    from backend.world.motion.bake import BakeConfig
    from backend.world.motion.pipeline import bake_world

    root = _small_world(tmp_path)
    parser = argparse.ArgumentParser()
    add_motion_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["metrics", str(root), "--frames", "8", "--size", "32", "--all-frames"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact"] and out["frames"] == 8 and set(out["goals"]) == {"temporal_flicker", "seam_ratio"}
    seq = bake_world(root, tmp_path / "loop.lw4d", BakeConfig(frames=8), device="cpu")
    args = parser.parse_args(["metrics", str(seq), "--world", str(root), "--size", "32", "--all-frames"])
    assert args.func(args) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_file["sequence"] == str(seq)
    assert from_file["temporal_flicker"] == pytest.approx(out["temporal_flicker"], abs=1e-6)  # the same loop
    args = parser.parse_args(["metrics", str(seq), "--size", "32"])
    with pytest.raises(InvalidInput, match="--world"):
        args.func(args)
    arts = run_inline("world_metrics", {"world": str(root), "sequence": str(seq), "size": 32, "pairs": None,
                                        "device": "cpu"}, tmp_path / "ws", job_id="m1")
    report = json.loads((tmp_path / "ws" / arts[0]).read_text())
    assert report["temporal_flicker"] == pytest.approx(from_file["temporal_flicker"], abs=1e-9)


def test_zero_frame_triplets_are_refused_at_once_in_the_job_the_cli_and_the_function(tmp_path):
    """``pairs`` 0 measured nothing and failed later (the CLI took it as the default): the job's parameters refuse
    it (-1, the default, stays the device's default), and so do ``lw world metrics --pairs 0`` and
    ``measure_world``, before reading the world."""
    from pydantic import ValidationError

    from backend.jobs import registry

    params = registry()["world_metrics"].params
    with pytest.raises(ValidationError, match="0 frame triplets measure nothing"):
        params.model_validate({"world": "w", "pairs": 0})
    assert [params.model_validate({"world": "w", "pairs": p}).pairs for p in (-1, None, 1)] == [-1, None, 1]
    assert params.model_validate({"world": "w"}).pairs == -1
    for bad in (0, -1, 2.5):
        with pytest.raises(InvalidInput, match="give 'auto'"):
            measure_world(tmp_path / "no-world", pairs=bad)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "world.json").write_text("{}")
    parser = argparse.ArgumentParser()
    add_motion_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["metrics", str(tmp_path / "w"), "--pairs", "0"])
    with pytest.raises(InvalidInput, match="pairs 0: give 'auto'"):
        args.func(args)
