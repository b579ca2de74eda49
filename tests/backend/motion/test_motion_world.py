"""motion_update and world_bake on a small world folder (through the World store, the job kinds and the CLI)."""

import argparse
import json

import cv2
import numpy as np
import pytest
import torch

from backend.errors import InvalidInput
from backend.gaussians import Gaussians, rgb_to_sh_dc
from backend.io.lw4d import read_sequence
from backend.io.ply import read_ply, write_ply
from backend.jobs import registry, run_inline
from backend.world import store
from backend.world.motion.bake import BakeConfig
from backend.world.motion.cli import add_motion_commands
from backend.world.motion.field import FieldSize
from backend.world.motion.lift import unproject

torch.set_num_threads(1)

FIELD = {"n_levels": 4, "log2_table_size": 10, "steps": 40, "update_steps": 20}


def _make_world(root, scene):
    cam = scene.look_at([0, -6, 2.5], [0, 0, 0.8], width=48, height=32, focal=30.0)
    depth = scene.ground_depth(cam)
    sky = ~np.isfinite(depth)
    depth = np.where(sky, 200.0, depth).astype(np.float32)
    h, w = depth.shape
    regions = np.where(sky, 1, 0).astype(np.uint8)
    regions[-12:, 10:38] = 2  # water near the camera
    rows, cols = np.mgrid[0:h, 0:w]
    pts = unproject(np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1), depth.ravel().astype(float), cam)
    n = len(pts)
    rgb = np.where((regions.ravel() == 2)[:, None], [0.1, 0.3, 0.8], [0.4, 0.35, 0.2]).astype(np.float32)
    g = Gaussians(means=pts.astype(np.float32), quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
                  log_scales=np.full((n, 3), -3.0, np.float32), opacity_logits=np.full(n, 3.0, np.float32),
                  sh=rgb_to_sh_dc(rgb)[:, None, :])
    image = (np.ones((h, w, 3)) * 128).astype(np.uint8)

    def write(folder):
        cv2.imwrite(str(folder / "image.png"), image)
        cv2.imwrite(str(folder / "mask.png"), np.full((h, w), 255, np.uint8))
        np.save(folder / "depth.npy", depth)
        cv2.imwrite(str(folder / "regions.png"), regions)
        write_ply(folder / "gaussians.ply", g)
        cv2.imwrite(str(folder / "preview.png"), image)
        return {}

    step = store.WorldStep(index=0, kind="new", folder=store.new_step_folder(0), camera=store.camera_to_json(cam))
    store.commit_step(root, None, step, write, world_id="test", settings={})
    return cam, regions


def test_motion_update_and_bake_jobs_on_a_world(tmp_path, scene):
    root = tmp_path / "world"
    _make_world(root, scene)
    assert {"motion_update", "world_bake"} <= set(registry())
    arts = run_inline("motion_update", {"world": str(root), "presets": [
        {"preset": "water", "region": "water", "direction": [0, -1], "speed": 0.1},
        {"preset": "clouds", "region": "sky", "direction": [1, 0], "speed": 0.5}], "field": FIELD}, tmp_path, "m1")
    first = json.loads((tmp_path / arts[0]).read_text())
    assert first["status"] == "first_view" and first["step"] == 1 and first["fit"]["relative_error"] < 0.5
    world = store.load_world(root)
    assert world.current.kind == "motion" and (root / world.current.folder / "motion_field.pt").is_file()
    # the same view again, with the water reversed and three times as fast: alignment undoes it
    run_inline("motion_update", {"world": str(root), "view": 0, "presets": [
        {"preset": "water", "region": "water", "direction": [0, 1], "speed": 0.3}], "field": FIELD}, tmp_path, "m2")
    second = store.load_world(root).current.stats["motion"]
    assert second["status"] == "aligned"
    assert second["scale"] == pytest.approx(1 / 3, rel=0.15)  # 3x faster on screen; perspective bends it a little
    angle = np.degrees(np.arccos(np.clip((np.trace(np.array(second["rotation"])) - 1) / 2, -1, 1)))
    assert angle > 150
    arts = run_inline("world_bake", {"world": str(root), "frames": 5, "device": "cpu"}, tmp_path, "b1")
    seq = read_sequence(tmp_path / "jobs" / "b1" / "loop.lw4d", check_values=True)
    assert seq.loop and seq.frame_count == 5 and any(a.endswith("position.npy") for a in arts)
    # the water and sky Gaussians move, the ground stays
    moved = np.linalg.norm(seq.channels["position"][2] - seq.channels["position"][0], axis=1)
    assert seq.dynamic_count > 0 and np.median(moved) > 0
    undone = store.undo(root)
    assert undone.current.kind == "motion" and len(undone.steps) == 2


def test_a_later_motion_update_fits_the_update_steps_it_asks_for(tmp_path, scene):
    """The add-on's Update Steps (``FieldSpec.update_steps``) applies to every later fit, not only the one the
    field was created with (the saved field kept its own)."""
    root = tmp_path / "world"
    _make_world(root, scene)
    run_inline("motion_update", {"world": str(root), "field": FIELD, "device": "cpu"}, tmp_path, "m1")
    messages = []
    run_inline("motion_update", {"world": str(root), "field": {"update_steps": 7}, "device": "cpu"}, tmp_path, "m2",
               on_progress=lambda f, m: messages.append(m))
    assert store.load_world(root).current.stats["motion"]["fit"]["steps"] == 7
    assert sum(m.startswith("re-fitting the motion field: step") for m in messages) == 7
    run_inline("motion_update", {"world": str(root), "device": "cpu"}, tmp_path, "m3")  # unset: the field's own
    assert store.load_world(root).current.stats["motion"]["fit"]["steps"] == FIELD["update_steps"]


def test_motion_update_without_motion_regions_fails_clearly(tmp_path, scene):
    root = tmp_path / "world"
    _make_world(root, scene)
    with pytest.raises(InvalidInput):
        run_inline("world_bake", {"world": str(root), "frames": 4}, tmp_path, "b0")
    with pytest.raises(InvalidInput):
        run_inline("motion_update", {"world": str(root), "view": 7}, tmp_path, "m0")


def test_cli_parses_motion_and_bake(tmp_path):
    parser = argparse.ArgumentParser()
    add_motion_commands(parser.add_subparsers(dest="cmd"))
    a = parser.parse_args(["motion", "w", "--preset", "smoke", "--region-name", "ground", "--direction", "1,0.5"])
    assert a.direction == (1.0, 0.5) and a.preset == "smoke" and a.func.__name__ == "cmd_motion"
    b = parser.parse_args(["bake", "w", "--frames", "48", "--no-loop", "--out", "x.lw4d"])
    assert b.frames == 48 and b.loop is False and b.func.__name__ == "cmd_bake"


def test_moving_gaussians_use_each_samples_own_spacing_and_skip_still_regions():
    """Dense water samples near the camera, sparse sky samples far away, ground held still (zero speed): the
    sky's spacing must not make the whole near field move, and still regions stay static."""
    from backend.world.motion.lift import SceneFlow
    from backend.world.motion.pipeline import moving_gaussians

    gx, gy = np.meshgrid(np.arange(0, 2, 0.05), np.arange(0, 2, 0.05))
    water = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)  # 5 cm apart, moving
    ground = water + [3.0, 0.0, 0.0]  # 5 cm apart, zero speed
    sx, sy = np.meshgrid(np.arange(-500, 500, 50.0), np.arange(-500, 500, 50.0))
    sky = np.stack([sx.ravel(), sy.ravel(), np.full(sx.size, 1000.0)], 1)  # 50 m apart, moving
    pts = np.concatenate([water, ground, sky])
    vec = np.concatenate([np.tile([0.01, 0, 0], (len(water), 1)), np.zeros((len(ground), 3)),
                          np.tile([1.0, 0, 0], (len(sky), 1))])
    flow = SceneFlow(pts, vec, np.zeros(len(pts), np.uint8), np.zeros(len(pts), np.int32))
    queries = np.array([[1.0, 1.0, 0.02],   # on the water: moves
                        [4.0, 1.0, 0.02],   # on the still ground: static
                        [1.0, 1.0, 1.0],    # 1 m above the water, far from its 5 cm spacing: static
                        [10.0, 10.0, 990.0],  # among the sky samples: moves
                        [0.0, 0.0, 400.0]])  # between: static
    np.testing.assert_array_equal(moving_gaussians(queries, flow), [True, False, False, True, False])
    assert not moving_gaussians(queries, flow.subset(slice(len(water), len(water) + len(ground)))).any()
    assert moving_gaussians(np.zeros((0, 3)), flow).shape == (0,)


def _world_from_photo(tmp_path, resolution=64):
    from backend.models.config import ModelConfig
    from backend.world.pipeline import WorldConfig, new_world
    from backend.world.samples.make_landscape import SAMPLE_PATH

    cfg = WorldConfig(resolution=resolution, models=ModelConfig("builtin", "builtin", "builtin", device="cpu"))
    return new_world(SAMPLE_PATH, tmp_path / "world", config=cfg)


def _moved(seq_path, steps: np.ndarray, which: float, region: float | None = None) -> np.ndarray:
    """(K,) displacement over half the loop of the forward copies of Gaussians made by world step ``which``."""
    seq = read_sequence(seq_path)
    base = seq.base
    idx = seq.dynamic_index
    m = len(idx) // 2  # forward copies first
    fwd = idx[:m]
    sel = base.extra["step"][fwd] == which
    if region is not None:
        sel &= base.extra["region"][fwd] == region
    pos = seq.channels["position"]
    return np.linalg.norm(pos[len(pos) // 2, :m][sel] - pos[0, :m][sel], axis=1)


def test_edits_in_any_order_keep_motion_everywhere_and_undo_restores_the_field_exactly(tmp_path):
    """new -> motion -> expand -> expand -> motion -> undo -> bake: the sky and water that each expansion adds
    move (the latest request is carried to the new view and the field, defined on all of R^3, is re-fitted);
    undoing a motion step gives back the previous field bit for bit, and the same bake."""
    from backend.world.motion.field import MotionField
    from backend.world.motion.pipeline import (
        FIELD_FILE,
        MotionUpdate,
        PresetRegion,
        bake_world,
        latest_motion_step,
        update_motion,
    )
    from backend.world.pipeline import expand_world, turned_camera

    small = FieldSize(levels=4, table_log2=12, steps=40, update_steps=30)
    w = _world_from_photo(tmp_path)
    root = w.root
    cam0 = w.current.opencv_camera()
    update_motion(root, MotionUpdate(field=small, device="cpu"))  # the sky/water fallback
    w = expand_world(root, turned_camera(cam0, 40))
    assert w.current.kind == "expand" and "motion" in w.current.stats  # the fallback carried to the new view
    assert (root / w.current.folder / FIELD_FILE).is_file()
    w = expand_world(root, turned_camera(cam0, -40))  # steps: 0 new, 1 motion, 2 and 3 expansions
    assert w.current.stats["motion"]["view"] == 3
    seq = bake_world(root, tmp_path / "a.lw4d", BakeConfig(frames=8), device="cpu")
    field = MotionField.load(root / w.current.folder / FIELD_FILE)
    # the third view's water flows away from the viewer instead: a motion step on the current view
    w = update_motion(root, MotionUpdate(presets=(PresetRegion("water", "water", direction=(0.0, 1.0), speed=1.0),
                                                  PresetRegion("clouds", "sky", speed=0.5)), field=small,
                                         device="cpu"))
    assert w.current.kind == "motion" and w.current.stats["motion"]["view"] == 3
    changed = bake_world(root, tmp_path / "b.lw4d", BakeConfig(frames=8), device="cpu")
    assert not np.array_equal(read_sequence(changed).channels["position"][:], read_sequence(seq).channels["position"][:])
    w = store.undo(root)
    assert w.current.index == 3
    after = MotionField.load(root / latest_motion_step(w).folder / FIELD_FILE)
    for k, v in field.state_dict().items():
        assert torch.equal(v, after.state_dict()[k]), k  # the previous field, bit for bit
    again = bake_world(root, tmp_path / "c.lw4d", BakeConfig(frames=8), device="cpu")
    np.testing.assert_array_equal(read_sequence(again).channels["position"][:], read_sequence(seq).channels["position"][:])
    g = read_ply(root / w.current.folder / "gaussians.ply")
    for step in (0.0, 2.0, 3.0):  # the sky of every step moves, including what the expansions added
        assert (g.extra["step"] == step).any()
        moved = _moved(seq, g.extra["step"], step, region=1.0)
        assert len(moved) > 20 and np.median(moved) > 0, step


def test_motion_recorded_on_cuda_carries_to_an_expansion_on_any_machine(tmp_path):
    """world.json records the device of a motion update; the request carried to an expanded view runs on "auto"
    (a world motion-updated on CUDA and expanded on a CPU-only machine failed)."""
    from backend.world.motion.pipeline import MotionUpdate, update_motion
    from backend.world.pipeline import expand_world, turned_camera

    w = _world_from_photo(tmp_path)
    root = w.root
    update_motion(root, MotionUpdate(field=FieldSize(levels=4, table_log2=12, steps=20, update_steps=10),
                                     device="cpu"))
    doc = json.loads((root / "world.json").read_text())
    doc["steps"][-1]["stats"]["motion"]["request"]["device"] = "cuda"  # as a CUDA machine records it
    (root / "world.json").write_text(json.dumps(doc))
    w = expand_world(root, turned_camera(w.current.opencv_camera(), 40))
    motion = w.current.stats["motion"]
    assert motion["request"]["device"] == "auto" and MotionUpdate(device="cuda").carried().device == "auto"
    assert motion["field"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_samples_prepared_ahead_give_the_same_alignment_and_field(tmp_path):
    """An expansion loads the world's motion samples and builds their match index while it outpaints
    (``prepare_samples``); the view's motion is then exactly what it is without: same alignment, samples and
    field. A preparation of another step is not used."""
    from dataclasses import replace

    from backend.world.motion.pipeline import MotionUpdate, View, fit_view_motion, prepare_samples, update_motion

    w = _world_from_photo(tmp_path)
    assert prepare_samples(w, MotionUpdate().align) is None  # no motion yet
    request = MotionUpdate(field=FieldSize(levels=4, table_log2=12, steps=40, update_steps=30), device="cpu")
    w = update_motion(w.root, request)
    view = View.of_step(w, w.steps[0])
    prepared = prepare_samples(w, request.align)
    assert prepared.folder == w.current.folder and len(prepared.samples) > 100
    runs = [fit_view_motion(w, view, request, prepared=p) for p in (None, prepared, replace(prepared, folder="old"))]
    for run in runs[1:]:
        for key in ("status", "rotation", "scale", "matches", "inlier_fraction", "samples", "fit"):
            assert run.stats[key] == runs[0].stats[key], key
        np.testing.assert_array_equal(run.samples.points, runs[0].samples.points)
        for k, v in run.field.state_dict().items():
            assert torch.equal(v, runs[0].field.state_dict()[k]), k
    # the preparation is what the alignment used: an index over other samples than the ones given is refused
    other = replace(prepared, samples=prepared.samples.with_vectors(prepared.samples.vectors * 2))
    with pytest.raises(ValueError, match="match index"):
        fit_view_motion(w, view, request, prepared=other)


def test_a_damaged_samples_file_stops_an_expansion_clearly_and_loses_nothing(tmp_path):
    from backend.errors import InvalidInput
    from backend.world.motion.lift import SceneFlow
    from backend.world.motion.pipeline import SAMPLES_FILE, MotionUpdate, latest_motion_step, update_motion
    from backend.world.pipeline import expand_world, turned_camera

    w = _world_from_photo(tmp_path)
    w = update_motion(w.root, MotionUpdate(field=FieldSize(levels=4, table_log2=12, steps=20, update_steps=10),
                                           device="cpu"))
    samples = w.root / latest_motion_step(w).folder / SAMPLES_FILE
    good = SceneFlow.load(samples)
    samples.write_bytes(b"not an archive")
    before = (w.root / "world.json").read_text()
    steps = sorted(p.name for p in (w.root / "steps").iterdir())
    with pytest.raises(InvalidInput, match="damaged or not one LivingWorld wrote .not a readable .npz archive.: undo"):
        expand_world(w.root, turned_camera(w.steps[0].opencv_camera(), 40))
    assert (w.root / "world.json").read_text() == before
    assert sorted(p.name for p in (w.root / "steps").iterdir()) == steps
    for arrays, reason in (({"points": good.points}, "no vectors, material, view array"),
                           ({"points": good.points, "vectors": good.vectors[:5], "material": good.material,
                             "view": good.view}, "mismatched shapes")):
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(InvalidInput, match=reason):
            SceneFlow.load(tmp_path / "bad.npz")
