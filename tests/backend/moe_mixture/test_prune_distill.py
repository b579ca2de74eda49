"""Gate-aware pruning, distillation into one expert, the mixture's .lw4d bake and the moe_router job."""

from __future__ import annotations

import itertools
import json
import shutil
import threading

import numpy as np
import pydantic
import pytest
import torch

from backend.errors import InvalidInput, JobCancelled
from backend.io.lw4d import read_sequence
from backend.jobs import run_inline
from backend.moe.distill import DistillConfig, distill, teacher_times, teacher_video
from backend.moe.jobs_mixture import MoeRouterParams
from backend.moe.mixture import bake_mixture, render_mixture
from backend.moe.prune import (
    PruneConfig,
    each_view,
    gate_gradient_scores,
    gate_scores,
    prune_cut,
    prune_mixture,
    training_views,
)
from backend.moe.train_router import RouterTrainConfig, evaluate_mixture, load_mixture, train_router
from backend.render.rasterize import RasterConfig


def test_gate_scores_add_up_to_the_blended_coverage(trained_half):
    path, video = trained_half
    mixture, _ = load_mixture(path)
    scores = gate_scores(mixture, video, max_views=2)
    # sum_i s_i over all Gaussians = mean over views of sum_p sum_k w_k(p) A_k(p)
    expect = 0.0
    views = training_views(video, 2)
    for cam, frame in views:
        t = float(video.times[frame])
        with torch.no_grad():
            out = render_mixture(mixture.gaussians_at(t), mixture.router, video.cameras[cam], t)
        expect += float((out.weights * out.experts.alphas).sum()) / len(views)
    total = sum(float(s.sum()) for s in scores.contribution)
    assert abs(total - expect) < 1e-3 * expect
    for s, c in zip(scores.contribution, scores.coverage):
        assert bool((s <= c + 1e-5).all())


def test_pruning_removes_the_gaussians_whose_expert_loses_there(trained_half, tmp_path):
    path, video = trained_half
    mixture, _ = load_mixture(path)
    before = evaluate_mixture(mixture, video, RasterConfig())
    scores = gate_scores(mixture, video)
    xs = [e.means[:, 0].detach().clone() for e in mixture.experts]
    stats, keeps = prune_mixture(mixture, scores.peak, threshold=0.05)
    assert stats["after"] == stats["before"] - sum(stats["removed"].values()) == mixture.num_gaussians()
    k_def, k_key = mixture.names.index("deformation"), mixture.names.index("keyframe")
    removed_def, removed_key = xs[k_def][~keeps[k_def]], xs[k_key][~keeps[k_key]]
    assert len(removed_def) > 40 and len(removed_key) > 40
    assert (removed_def > 0).float().mean() > 0.9  # the deformation expert is wrong on the right (x > 0)
    assert (removed_key < 0).float().mean() > 0.9
    emptied = evaluate_mixture(mixture, video, RasterConfig())
    # the volume-aware router reads the splatted features: where an expert lost its Gaussians its logit is the
    # decoder's answer to zero features, which training never saw; a short router fine-tune on what is left fixes it
    path = train_router(path.parent.parent, video, RouterTrainConfig(iterations=40, device="cpu"),
                        out=tmp_path / "pruned.pt", mixture=mixture)
    after = evaluate_mixture(load_mixture(path)[0], video, RasterConfig())
    assert emptied["psnr"] < before["psnr"] - 2.0 < after["psnr"] - 1.0
    assert load_mixture(path)[0].num_gaussians() == stats["after"]


def test_the_cut_removes_at_least_the_fraction_and_everything_under_the_threshold():
    values = [torch.tensor([0.01, 0.2, 0.3, 5.0]), torch.tensor([0.02, 0.03, 7.0, 9.0, 0.5, 0.6])]
    flat = torch.cat(values)
    # the threshold removes 3 of 10 (< 0.05 px): the cut rises until half go
    assert int((flat < prune_cut(values, PruneConfig(threshold=0.05))).sum()) == 5
    assert int((flat < prune_cut(values, PruneConfig(threshold=0.05, fraction=0.0))).sum()) == 3
    # a threshold that already removes more than the fraction is kept
    assert int((flat < prune_cut(values, PruneConfig(threshold=1.0, fraction=0.3))).sum()) == 7
    tied = [torch.zeros(6), torch.ones(4)]
    assert int((torch.cat(tied) < prune_cut(tied, PruneConfig(threshold=0.0, fraction=0.5))).sum()) == 6  # ties go
    for bad in (-0.1, 1.0):
        with pytest.raises(InvalidInput, match="fraction"):
            PruneConfig(fraction=bad)


def test_pruned_mixture_loses_half_and_its_experts_fine_tune_with_the_router(half_run, tmp_path):
    """run_mixture's default pruning: at least half of the Gaussians go, then the router AND the experts train on
    what is left (prune_joint); with prune_joint off the kept Gaussians are the experts' own, untouched."""
    from backend.moe.run_mixture import MixtureRunConfig, run_mixture

    for joint in (True, False):
        run = tmp_path / f"run_{joint}"
        shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))
        report = run_mixture(run, MixtureRunConfig(iterations=4, prune=True, prune_threshold=0.0, prune_finetune=3,
                                                   prune_joint=joint, bake=False, device="cpu", torch_threads=1))
        pruned = report["pruned"]
        assert pruned["before"] - pruned["after"] >= pruned["before"] / 2 > 0
        assert pruned["fraction"] == 0.5 and pruned["joint"] is joint and pruned["finetune"] == 3
        full, _ = load_mixture(run / "mixture" / "mixture.pt")
        cut, _ = load_mixture(run / "mixture" / "pruned.pt")
        assert cut.num_gaussians() == pruned["after"]
        moved = []
        for a, b in zip(full.experts, cut.experts):
            nearest = torch.cdist(b.means.detach().double(), a.means.detach().double()).min(1).values
            moved.append(float(nearest.max()))
        if joint:
            assert max(moved) > 0.0  # the experts took fine-tuning steps
        else:
            assert moved == [0.0] * len(moved)  # every kept Gaussian is one of the expert's own


def test_teacher_times_insert_between_frames():
    t = teacher_times(np.array([0.0, 0.5, 1.0]), 1)
    np.testing.assert_allclose(t, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(teacher_times(np.array([0.0, 1.0]), 0), [0.0, 1.0])


def test_distilled_student_learns_the_teachers_images(trained_half, tmp_path):
    path, video = trained_half
    mixture, _ = load_mixture(path)
    teacher = teacher_video(mixture, video, 1, RasterConfig())
    assert teacher.images.shape[1] == 3 and teacher.images[video.test[0]].max() == 0
    with torch.no_grad():
        ref = render_mixture(mixture.gaussians_at(0.5), mixture.router, video.cameras[1], 0.5).color
    assert np.abs(teacher.images[1, 1] / 255.0 - ref.clamp(0, 1).numpy()).max() < 1 / 255 + 1e-6
    run = path.parent.parent
    ckpt = distill(run, mixture, video, DistillConfig(student="deformation", iterations=3), out=tmp_path / "student")
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 1 + 3
    assert len(state["log"]["loss"]) == 3


def test_bake_scales_opacity_by_the_mean_gate(trained_half, tmp_path):
    path, video = trained_half
    mixture, _ = load_mixture(path)
    scores = gate_scores(mixture, video, max_views=3)
    m = scores.mean_weight()
    seq_path = bake_mixture(mixture.experts, m, tmp_path / "mix.lw4d", np.array([0.0, 1.0]), 30.0)
    seq = read_sequence(seq_path)
    assert seq.count == mixture.num_gaussians()
    with torch.no_grad():
        opac = torch.cat([e.gaussians_at(0.0).opacity_logits.sigmoid() for e in mixture.experts])
    base_opacity = 1 / (1 + np.exp(-seq.base.opacity_logits))
    np.testing.assert_allclose(base_opacity, (opac * torch.cat(m)).numpy(), atol=1e-5)


def test_moe_router_job_trains_prunes_distils_and_bakes(half_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))
    arts = run_inline("moe_router", {"run": str(run), "iterations": 3, "prune": True, "prune_threshold": 3.0,
                                     "distill": "keyframe",
                                     "distill_iterations": 2}, tmp_path)
    names = {a.split("/")[-1] for a in arts}
    assert {"mixture.pt", "pruned.pt", "checkpoint.pt", "manifest.json", "report.json"} <= names
    report = json.loads((run / "mixture" / "report.json").read_text())
    assert set(report["experts"]) == {"deformation", "keyframe"}
    for key in ("moe", "pruned", "distilled", "finetuned"):
        assert 5.0 < report[key]["psnr"] < 60.0 and report[key]["fps"] > 0
    assert report["pruned"]["after"] < report["pruned"]["before"]
    assert read_sequence(run / "mixture" / "mixture.lw4d").count == report["pruned"]["after"]


def test_joint_run_reports_the_best_expert_trained_as_long(half_run, tmp_path):
    """Joint (stage-2 unfrozen) mixture runs also score the fair baseline: the best expert given the same extra
    steps on the ground truth."""
    from backend.moe.run_mixture import MixtureRunConfig, run_mixture

    run = tmp_path / "run"
    shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))
    report = run_mixture(run, MixtureRunConfig(iterations=3, joint=True, device="cpu", torch_threads=1))
    jb = report["joint_baseline"]
    best = max(report["experts"], key=lambda n: report["experts"][n]["psnr"])
    assert jb["expert"] == best and jb["extra_iterations"] == 3
    assert 5.0 < jb["psnr"] < 60.0
    assert (run / "mixture" / "joint_baseline" / best / "checkpoint.pt").is_file()
    assert report["router"]["joint"] is True


def test_pruning_reads_each_gaussians_best_view_not_its_mean(trained_half):
    """The criterion is the best view's contribution, not the mean over views: a Gaussian that paints in a
    single (camera, frame) -- a dynamic expert's short-lived Gaussian -- is kept."""
    path, video = trained_half
    mixture, _ = load_mixture(path)
    scores = gate_scores(mixture, video)
    n_views = len(training_views(video))
    for s, p in zip(scores.contribution, scores.peak):
        assert bool((p >= s - 1e-6).all()) and bool((p <= s * n_views + 1e-5).all())
    k = 0
    i = int(torch.argmax(scores.peak[k]))
    threshold = float(scores.contribution[k][i]) * 1.01  # above its mean over views, below its peak
    peak = scores.peak[k].clone()
    _, keeps = prune_mixture(mixture, scores.peak, threshold)
    assert bool(keeps[k][i]) and float(peak[i]) > threshold
    assert bool((keeps[k] == (peak >= threshold)).all())


def test_moe_router_job_takes_the_router_prior_options(half_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(half_run, run, ignore=shutil.ignore_patterns("mixture"))
    run_inline("moe_router", {"run": str(run), "iterations": 4, "router": "volume", "gate": "param",
                              "expert_bias": True, "gate_decay": 0.01, "bake": False}, tmp_path)
    mixture, _ = load_mixture(run / "mixture" / "mixture.pt")
    assert mixture.router.config.expert_bias and mixture.router.config.gate_decay == 0.01
    assert mixture.router.bias.abs().sum() > 0  # trained, and saved with the mixture
    report = json.loads((run / "mixture" / "report.json").read_text())
    assert report["router"]["router"]["expert_bias"] is True
    with pytest.raises(pydantic.ValidationError, match="use router 'volume' and gate 'param'"):
        MoeRouterParams(run=str(run), router="volume", gate="field", gate_decay=0.1)
    with pytest.raises(pydantic.ValidationError, match="use router 'volume' and gate 'param'"):
        MoeRouterParams(run=str(run), router="volume_pixel", gate="param", gate_decay=0.1)  # it has no logits
    assert MoeRouterParams(run=str(run), gate_decay=0.1).router == "volume"  # the default router takes it


def test_scoring_reports_every_view_and_stops_when_cancelled(trained_half):
    """Gate scores render every training view (hundreds on a real run, minutes on a CPU): the job's progress moves
    with each view and a cancel stops the loop at the next view, for our score and the paper's."""
    path, video = trained_half
    mixture, _ = load_mixture(path)
    views = training_views(video)
    assert len(views) <= 100  # one report per view (longer lists: at most 100 reports)
    for score in (gate_scores, gate_gradient_scores):
        seen, cancel = [], threading.Event()
        score(mixture, video, progress=lambda f, msg, seen=seen: seen.append((f, msg)), cancel=cancel)
        assert [f for f, _ in seen] == pytest.approx([(i + 1) / len(views) for i in range(len(views))])
        assert seen[-1][1].endswith(f"view {len(views)}/{len(views)}")

        def stop_after_two(f, msg, cancel=cancel, seen=seen):
            seen.append(f)
            if len(seen) >= len(views) + 2:
                cancel.set()

        with pytest.raises(JobCancelled, match=f"cancelled at view 2 of {len(views)}"):
            score(mixture, video, progress=stop_after_two, cancel=cancel)


def test_a_long_view_list_reports_at_most_a_hundred_times():
    seen = []
    views = [(c, f) for c in range(15) for f in range(70)]  # 1050 views
    assert list(each_view(views, "gate scores", lambda f, msg: seen.append((f, msg)))) == views
    assert 90 <= len(seen) <= 101 and seen[-1] == (1.0, "gate scores: view 1050/1050")
    assert all(a[0] < b[0] for a, b in itertools.pairwise(seen))


@pytest.mark.parametrize("kind", ["volume", "volume_pixel"])
def test_an_expert_pruned_to_nothing_still_renders_and_fine_tunes(half_run, tmp_path, kind):
    """At least half goes by default: an expert that never wins can lose every Gaussian. The mixture must still
    render, score and fine-tune (router and experts) without it."""
    from backend.moe.router import RouterConfig
    from backend.moe.train import load_run_video

    video = load_run_video(half_run)
    cfg = RouterTrainConfig(iterations=3, router=RouterConfig(kind=kind), device="cpu")
    mixture, _ = load_mixture(train_router(half_run, video, cfg, out=tmp_path / "mixture.pt"))
    values = [torch.zeros(e.num_gaussians) if k == 0 else torch.ones(e.num_gaussians)
              for k, e in enumerate(mixture.experts)]
    stats, _ = prune_mixture(mixture, values, 0.5)
    assert mixture.experts[0].num_gaussians == 0 and stats["after"] == mixture.experts[1].num_gaussians > 0
    path = train_router(half_run, video, RouterTrainConfig(iterations=2, router=RouterConfig(kind=kind), joint=True,
                                                           device="cpu"), out=tmp_path / "pruned.pt", mixture=mixture)
    pruned, _ = load_mixture(path)
    assert pruned.experts[0].num_gaussians == 0
    scores = evaluate_mixture(pruned, video, RasterConfig())
    assert 5.0 < scores["psnr"] < 60.0
