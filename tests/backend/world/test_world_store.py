"""World versions on disk: atomic steps, undo, a crash mid-step leaves the previous version loadable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.errors import InvalidInput, NotFound
from backend.io.ply import read_ply
from backend.world import store
from backend.world.pipeline import expand_world, new_world, undo_world
from backend.world.samples.make_landscape import SAMPLE_PATH


def test_new_expand_undo_keep_versions_and_files_consistent(tmp_path, config96, turn):
    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, prompt="a lake", config=config96)
    assert [s.kind for s in w0.steps] == ["new"]
    for name in store.STEP_FILES:
        assert w0.file(name).is_file(), name
    n0 = len(read_ply(w0.file("gaussians.ply")))
    w1 = expand_world(root, turn(w0.current.opencv_camera(), 30))
    assert len(w1.steps) == 2 and store.load_world(root).current.folder == w1.current.folder
    assert len(read_ply(w1.file("gaussians.ply"))) == n0 + w1.current.stats["new_gaussians"]
    data = json.loads((root / "world.json").read_text())
    assert data["current"] == 1 and data["steps"][0]["prompt"] == "a lake"
    back = undo_world(root)
    assert len(back.steps) == 1 and not (root / w1.current.folder).exists()
    assert len(read_ply(store.load_world(root).file("gaussians.ply"))) == n0
    with pytest.raises(InvalidInput, match="nothing to undo"):
        undo_world(root)
    # After an undo a new step gets a fresh folder; the history stays a straight line.
    w2 = expand_world(root, turn(w0.current.opencv_camera(), -30))
    assert w2.current.index == 1 and w2.current.folder != w1.current.folder
    assert sorted(p.name for p in (root / "steps").iterdir()) == sorted(s.folder[6:] for s in w2.steps)


def test_a_crash_mid_step_leaves_the_previous_version_intact(tmp_path, config96, turn):
    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=config96)
    before = (root / "world.json").read_bytes()
    g0 = read_ply(w0.file("gaussians.ply"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        expand_world(root, turn(w0.current.opencv_camera(), 30), fail_after_writing=True)
    assert (root / "world.json").read_bytes() == before
    w = store.load_world(root)
    assert len(w.steps) == 1
    np.testing.assert_array_equal(read_ply(w.file("gaussians.ply")).means, g0.means)
    assert [p.name for p in (root / "steps").iterdir()] == [w0.current.folder[6:]]  # no half-written folder
    assert expand_world(root, turn(w0.current.opencv_camera(), 30)).current.index == 1


def test_a_failure_after_the_step_files_were_staged_leaves_nothing_behind(tmp_path, config96, turn, monkeypatch):
    """An expansion writes its image files and the old Gaussians' part of gaussians.ply into a staged step folder
    on its background thread while the GPU refines. A failure after that (here: the refinement) removes the
    folder and what was written into it; the world keeps its version, and the next expansion works."""
    from backend.world import pipeline

    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=config96)
    before = (root / "world.json").read_bytes()
    seen = []

    def failing_refine(*args, **kwargs):
        pipeline._background().submit(lambda: None).result()  # the staged writes queued before it are done
        staged = [p for p in (root / "steps").iterdir() if p.name.startswith(".tmp-")]
        seen.append({p.name: p.stat().st_size for p in staged[0].iterdir()} if len(staged) == 1 else staged)
        raise RuntimeError("refinement failed")

    monkeypatch.setattr(pipeline, "refine", failing_refine)
    with pytest.raises(RuntimeError, match="refinement failed"):
        expand_world(root, turn(w0.current.opencv_camera(), 30))
    files = seen[0]
    assert {"image.png", "mask.png", "depth.npy", "regions.png", "gaussians.ply"} <= set(files)
    assert files["gaussians.ply"] > len(read_ply(w0.file("gaussians.ply"))) * 4  # the old part was written
    assert (root / "world.json").read_bytes() == before
    assert [p.name for p in (root / "steps").iterdir()] == [w0.current.folder[6:]]
    monkeypatch.undo()
    w1 = expand_world(root, turn(w0.current.opencv_camera(), 30))
    n0 = len(read_ply(w0.file("gaussians.ply")))
    assert w1.current.index == 1
    assert len(read_ply(w1.file("gaussians.ply"))) == n0 + w1.current.stats["new_gaussians"]


@pytest.mark.parametrize("at", [0.6, 0.7, 0.85, 0.92])
def test_a_cancel_at_any_stage_after_staging_leaves_nothing_behind(tmp_path, config96, turn, at):
    """The user's cancel arrives through ``progress`` (a job raises ``JobCancelled`` there): at every report after
    the step folder is staged (lifting, refining, the preview, writing) the folder goes and the world keeps its
    version."""
    from backend.errors import JobCancelled

    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=config96)
    before = (root / "world.json").read_bytes()
    reached = []

    def progress(fraction, message):
        if fraction >= at and not reached:
            reached.append(message)
            raise JobCancelled("cancelled by the user")

    with pytest.raises(JobCancelled):
        expand_world(root, turn(w0.current.opencv_camera(), 30), progress=progress)
    assert reached
    assert (root / "world.json").read_bytes() == before
    assert [p.name for p in (root / "steps").iterdir()] == [w0.current.folder[6:]]


def test_a_failed_fsync_of_one_step_file_commits_nothing(tmp_path, config96, turn, monkeypatch):
    """The step's files are flushed concurrently: one failure (a disk error on gaussians.ply) still fails the
    step before the rename, and the world stays at its previous version with no folder left behind."""
    root = tmp_path / "w"
    w0 = new_world(SAMPLE_PATH, root, config=config96)
    before = (root / "world.json").read_bytes()
    real, flushed = store._fsync_path, []

    def failing(path):
        if path.name == "gaussians.ply":
            raise OSError(5, "Input/output error", str(path))
        flushed.append(path.name)
        real(path)

    monkeypatch.setattr(store, "_fsync_path", failing)
    with pytest.raises(OSError, match="Input/output error"):
        expand_world(root, turn(w0.current.opencv_camera(), 30))
    assert {"image.png", "preview.png"} <= set(flushed)  # the others were flushed beside it
    assert (root / "world.json").read_bytes() == before
    assert [p.name for p in (root / "steps").iterdir()] == [w0.current.folder[6:]]
    monkeypatch.setattr(store, "_fsync_path", real)
    assert expand_world(root, turn(w0.current.opencv_camera(), 30)).current.index == 1


def test_loading_something_that_is_not_a_world_says_what_to_do(tmp_path):
    with pytest.raises(NotFound, match="lw world new"):
        store.load_world(tmp_path)
    (tmp_path / "world.json").write_text("{}")
    with pytest.raises(InvalidInput):
        store.load_world(tmp_path)
