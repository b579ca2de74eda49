"""A whole run: train every expert briefly, evaluate on the held-out camera, export .lw4d; jobs and CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from backend.cli import main as lw_main
from backend.errors import InvalidInput
from backend.io.lw4d import read_sequence
from backend.jobs import run_inline
from backend.moe.evaluate import evaluate_run
from backend.moe.export import export_expert
from backend.moe.train import TrainConfig, load_checkpoint, train_run

EXPERTS = ["deformation", "trajectory", "keyframe"]


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    cfg = TrainConfig(iterations=4, downsample=2, min_points=400, max_points=400, densify_from=1000)
    return train_run(tiny_dataset, tmp_path_factory.mktemp("run") / "run", EXPERTS, cfg)


def test_evaluation_report_and_grid(run):
    report = evaluate_run(run)
    assert report["test_cameras"] == ["cam00"] and report["frames"] == 6 and report["size"] == [48, 36]
    assert report["lpips"].startswith("not available") or report["lpips"].startswith("AlexNet")
    for name in EXPERTS:
        r = report["experts"][name]
        assert 3 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 and len(r["psnr_per_frame"]) == 6
        assert r["fps"] > 0 and r["num_gaussians"] == 400 and r["size_bytes"] > 400 * 14 * 4
        assert r["iterations"] == 4 and r["train_time_s"] > 0
    assert json.loads((run / "report.json").read_text()) == json.loads(json.dumps(report))
    grid = cv2.imread(str(run / "grid.png"))
    scale = int(np.ceil(256 / 48))
    assert grid.shape == (22 + 3 * 36 * scale, 4 * 48 * scale, 3)  # 3 times x (ground truth + 3 experts)
    assert grid[22:, : 48 * scale].std() > 10  # the ground-truth column holds a picture


@pytest.mark.parametrize("name", EXPERTS)
def test_export_bakes_the_expert_into_a_readable_sequence(run, name, tmp_path):
    path = export_expert(run, tmp_path / f"{name}.lw4d", name)
    seq = read_sequence(path, check_values=True)
    assert seq.frame_count == 6 and seq.fps == pytest.approx(30.0) and seq.count == 400
    assert seq.coordinate_frame == "blender_z_up_m"
    model, _ = load_checkpoint(run / name / "checkpoint.pt")
    with torch.no_grad():
        g = model.gaussians_at(1.0)
    idx = seq.dynamic_index
    np.testing.assert_allclose(seq.channels["position"][5], g.means.numpy()[idx], atol=1e-6)
    np.testing.assert_allclose(seq.base.means, model.gaussians_at(0.0).means.detach().numpy(), atol=1e-6)
    static = np.setdiff1d(np.arange(400), idx)
    np.testing.assert_allclose(g.means.detach().numpy()[static], seq.base.means[static], atol=1e-4)


def test_export_refuses_an_untrained_expert(run, tmp_path):
    with pytest.raises(InvalidInput, match="not trained"):
        export_expert(run, tmp_path / "x.lw4d", "mixture")


def test_jobs_train_eval_export_inline(tiny_dataset, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    seen = []
    arts = run_inline("moe_train", {"dataset": str(tiny_dataset), "out": "run", "experts": ["trajectory"],
                                    "iterations": 2, "downsample": 4}, ws, on_progress=lambda f, m: seen.append(f))
    assert arts == ["run/run.json", "run/trajectory/checkpoint.pt"] and seen and max(seen) == 1.0
    assert run_inline("moe_eval", {"run": "run"}, ws) == ["run/report.json", "run/grid.png"]
    arts = run_inline("moe_export", {"run": "run", "out": "seq.lw4d"}, ws)
    assert arts == ["seq.lw4d/manifest.json"]
    assert read_sequence(ws / "seq.lw4d").frame_count == 6


def test_cli_train_eval_export(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert lw_main(["moe", "train", str(tiny_dataset), "--out", str(run), "--experts", "keyframe",
                    "--iterations", "2", "--downsample", "4"]) == 0
    assert lw_main(["moe", "eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "keyframe" in out and "PSNR" in out
    assert lw_main(["moe", "export", str(run), "--out", str(tmp_path / "k.lw4d")]) == 0
    assert read_sequence(tmp_path / "k.lw4d").count > 0
