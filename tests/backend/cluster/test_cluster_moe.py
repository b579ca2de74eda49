"""MoE-GS on Ray: experts in parallel tasks, then the router; a killed worker's expert resumes from its last
checkpoint (Ray retries the task) and the run still finishes with what an uninterrupted run trains."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import ray
import torch

from backend.cli import main as lw_main
from backend.cluster.board import JobBoard
from backend.cluster.moe import train_run_on_ray
from backend.moe.train import TrainConfig, load_run_video, train_expert
from backend.moe.train_router import RouterTrainConfig

EXPERTS = ["deformation", "trajectory"]


def test_killed_worker_resumes_from_its_checkpoint_and_the_run_finishes(ray_cluster, tiny_dataset, tmp_path):
    cfg = TrainConfig(iterations=40, downsample=4, min_points=300, max_points=300, densify_from=1000,
                      checkpoint_every=10)
    board, scope = JobBoard.remote(), "kill-test"
    result, progress = {}, []

    def train():
        try:
            result["run"] = train_run_on_ray(tiny_dataset, tmp_path / "run", EXPERTS, cfg, board=board, scope=scope,
                                             router=RouterTrainConfig(iterations=5, device="cpu"),
                                             progress=lambda f, m: progress.append(f))
        except Exception as exc:  # noqa: BLE001 (re-raised by the test thread below)
            result["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.monotonic() + 120
    while True:  # past the second checkpoint (step 20): kill the worker process training `deformation`
        report = ray.get(board.reports.remote([scope]))[scope].get("expert:deformation")
        if report is not None and report.attempts[-1].to_step >= 20:
            break
        assert time.monotonic() < deadline and thread.is_alive(), result
        time.sleep(0.02)
    os.kill(report.attempts[-1].pid, signal.SIGKILL)
    thread.join(180)
    assert "error" not in result, result.get("error")
    run = result["run"]

    reports = ray.get(board.reports.remote([scope]))[scope]
    killed = reports["expert:deformation"]
    assert len(killed.attempts) == 2 and killed.attempts[0].pid != killed.attempts[1].pid
    assert killed.attempts[1].from_step >= 20  # resumed from its checkpoint, not from step 0
    assert killed.attempts[1].to_step == 40 and killed.steps_trained < 2 * 40
    assert len(reports["expert:trajectory"].attempts) == 1
    assert progress == sorted(progress) and progress[-1] == 1.0

    resumed = torch.load(run / "deformation" / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 40 and len(resumed["log"]["loss"]) == 40
    # the same expert trained without interruption, here: resuming loses nothing
    points = np.load(run / "points.npz")
    straight = train_expert(load_run_video(run), "deformation", tmp_path / "straight", points["points"],
                            points["colors"], cfg)
    reference = torch.load(straight, weights_only=True)
    for key, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, atol=1e-5, rtol=1e-5)

    mixture = torch.load(run / "mixture" / "mixture.pt", weights_only=True)  # then the router, over both
    assert mixture["experts"] == EXPERTS and mixture["step"] == 5


def test_lw_moe_train_with_ray(ray_cluster, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    code = lw_main(["moe", "train", str(tiny_dataset), "--out", str(run), "--experts", *EXPERTS,
                    "--iterations", "3", "--downsample", "4", "--router-iterations", "2", "--ray", ray_cluster])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"run": str(run), "experts": EXPERTS}
    assert "trained deformation, trajectory and the router" in err
    for expert in EXPERTS:
        assert torch.load(run / expert / "checkpoint.pt", weights_only=True)["step"] == 3
    assert torch.load(run / "mixture" / "mixture.pt", weights_only=True)["step"] == 2
