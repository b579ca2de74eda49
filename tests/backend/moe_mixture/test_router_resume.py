"""Stage 2 run again over the same run folder: resumed when nothing changed but the step count, started over when
the options, the experts or their training changed (a frozen router resumed as a joint one used to crash on the
optimizer's parameter groups)."""

from __future__ import annotations

import os
import shutil

import torch

from backend.moe.router import RouterConfig
from backend.moe.train import load_run_video
from backend.moe.train_router import RouterTrainConfig, load_mixture, train_router


def _run_copy(half_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))  # not the session's trained router
    return run, load_run_video(run)


def _train(run, video, messages=None, **kw):
    cfg = RouterTrainConfig(**{"iterations": 6, "device": "cpu", **kw})
    path = train_router(run, video, cfg, progress=(lambda f, m: messages.append(m)) if messages is not None else None)
    return load_mixture(path)


def test_more_iterations_resume_the_same_router(half_run, tmp_path):
    run, video = _run_copy(half_run, tmp_path)
    _, first = _train(run, video, iterations=4)
    messages = []
    _, ckpt = _train(run, video, messages, iterations=8)
    assert ckpt["step"] == 8 and len(ckpt["log"]["loss"]) == 8  # 4 kept + 4 new, not 8 new
    assert ckpt["log"]["loss"][:4] == first["log"]["loss"]
    assert not any("starting over" in m for m in messages)


def test_frozen_then_joint_starts_over_and_fine_tunes_the_experts(half_run, tmp_path):
    run, video = _run_copy(half_run, tmp_path)
    frozen, _ = _train(run, video, router=RouterConfig(gate="param", kind="volume"))
    messages = []
    joint, ckpt = _train(run, video, messages, router=RouterConfig(gate="param", kind="volume"), joint=True)
    assert ckpt["config"]["joint"] and ckpt["step"] == 6 and len(ckpt["log"]["loss"]) == 6
    assert any("starting over" in m and "joint" in m for m in messages)
    moved = [not torch.equal(v, b.state_dict()[k]) for a, b in zip(frozen.experts, joint.experts)
             for k, v in a.state_dict().items()]
    assert any(moved)  # the experts were fine-tuned, so the joint optimizer held their parameters


def test_another_gate_or_a_retrained_expert_starts_over(half_run, tmp_path):
    run, video = _run_copy(half_run, tmp_path)
    _train(run, video, router=RouterConfig(gate="param", kind="volume"))
    messages = []
    field, ckpt = _train(run, video, messages, router=RouterConfig(gate="field", kind="volume"))
    assert ckpt["config"]["router"]["gate"] == "field" and field.router.config.gate == "field"
    assert any("starting over" in m and "router" in m for m in messages)

    ckpt_mtime = (run / "mixture" / "mixture.pt").stat().st_mtime
    later = ckpt_mtime + 5
    os.utime(run / "keyframe" / "checkpoint.pt", (later, later))  # keyframe trained again after the router
    messages.clear()
    _, ckpt = _train(run, video, messages, router=RouterConfig(gate="field", kind="volume"), iterations=7)
    assert any("keyframe trained again" in m for m in messages)
    assert ckpt["step"] == 7 and len(ckpt["log"]["loss"]) == 7
    assert (run / "mixture" / "mixture.pt").stat().st_mtime != ckpt_mtime
