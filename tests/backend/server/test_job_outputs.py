"""No job deletes or overwrites what it did not create (issue 21, points 2 and 4).

Every output parameter is checked before the job runs (``backend.jobs.run_job``) and again at submit time
(``POST /jobs`` answers 400): never the workspace or anything holding it, its job store, lock, ``jobs/``, the
folder ``worlds`` itself, another job's folder or a world; never an existing path unless it is an earlier output of the same kind
and ``replace`` is true. The cases run the real job kinds on a real world with motion.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from backend.errors import InvalidInput
from backend.io.lw4d import read_sequence
from backend.io.ply import read_ply
from backend.jobs import registry, run_inline

BUILTIN = {"depth": "builtin", "segmentation": "builtin", "outpaint": "builtin", "device": "cpu"}
FIELD = {"n_levels": 2, "log2_table_size": 8, "steps": 5, "update_steps": 5}


@pytest.fixture(scope="module")
def moving_world(tmp_path_factory):
    """A workspace holding ``worlds/w``: a world made by world_new from a small photo, with clouds moving."""
    ws = tmp_path_factory.mktemp("src") / "workspace"
    ws.mkdir()
    img = np.zeros((24, 32, 3), np.uint8)
    img[:12], img[12:] = (235, 180, 120), (40, 110, 60)  # sky over ground (BGR)
    cv2.imwrite(str(ws / "photo.png"), img)
    run_inline("world_new", {"image": "photo.png", "out": "worlds/w", "resolution": 32, "models": BUILTIN}, ws, "n")
    run_inline("motion_update", {"world": "worlds/w", "presets": [{"preset": "clouds", "region": "sky"}],
                                 "field": FIELD, "device": "cpu"}, ws, "m")
    shutil.rmtree(ws / "jobs")
    return ws


@pytest.fixture
def ws(moving_world, tmp_path):
    """A fresh copy of the moving world's workspace, with a job store like a running backend has."""
    dst = tmp_path / "workspace"
    shutil.copytree(moving_world, dst)
    (dst / "jobs").mkdir()
    for name in ("jobs.sqlite3", "jobs.sqlite3.lock"):
        (dst / name).write_bytes(b"store")
    return dst


def _snapshot(folder):
    """Every file under ``folder`` with its bytes (what a job must leave as it was)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _bake(ws, job="b", **params):
    return run_inline("world_bake", {"world": "worlds/w", "frames": 3, "device": "cpu", **params}, ws, job)


@pytest.mark.parametrize("out", [".", "", "/", "..", "worlds", "jobs", "jobs.sqlite3", "jobs.sqlite3.lock",
                                 "worlds/w", "worlds/w/steps/new.lw4d", "jobs/other/loop.lw4d", "logs/x.lw4d"])
def test_bake_never_writes_over_the_workspace_its_store_or_a_world(ws, out):
    before = _snapshot(ws)
    (ws / "jobs" / "other").mkdir()
    if out == "":  # the default, for comparison: the job's own folder
        _bake(ws)
        assert read_sequence(ws / "jobs" / "b" / "loop.lw4d").frame_count == 3
        return
    with pytest.raises(InvalidInput) as err:
        _bake(ws, out=out)
    assert "\n" not in str(err.value)
    assert _snapshot(ws) == before  # nothing deleted, nothing written
    assert not (ws / "jobs" / "b").exists()  # and no empty job folder left behind


def test_bake_over_a_user_folder_outside_the_workspace_is_refused_even_with_replace(ws, tmp_path):
    mine = tmp_path / "my_photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    for replace in (False, True):
        with pytest.raises(InvalidInput, match="already exists and is not a .lw4d sequence LivingWorld wrote"):
            _bake(ws, out=str(mine), replace=replace)
    assert (mine / "holiday.jpg").read_bytes() == b"jpeg"


def test_a_folder_that_only_looks_like_a_sequence_is_not_replaced(ws, tmp_path):
    _bake(ws, out=str(tmp_path / "loop.lw4d"))
    (tmp_path / "loop.lw4d" / "readme.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="is not a .lw4d sequence LivingWorld wrote"):
        _bake(ws, "b2", out=str(tmp_path / "loop.lw4d"), replace=True)
    assert (tmp_path / "loop.lw4d" / "readme.txt").read_text() == "mine"


def test_an_earlier_bake_is_replaced_only_when_told(ws, tmp_path):
    out = tmp_path / "out" / "loop.lw4d"
    assert _bake(ws, out=str(out)) == []  # outside the workspace: written, nothing to serve, no traceback
    first = (out / "position.npy").stat().st_mtime_ns
    with pytest.raises(InvalidInput, match="already holds a .lw4d sequence; pass replace=true"):
        _bake(ws, "b2", out=str(out), frames=4)
    assert read_sequence(out).frame_count == 3 and (out / "position.npy").stat().st_mtime_ns == first
    _bake(ws, "b3", out=str(out), frames=4, replace=True)
    assert read_sequence(out).frame_count == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["loop.lw4d"]  # no temporary folder left


def test_a_symbolic_link_as_out_is_refused_and_left_alone(ws, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (ws / "link.lw4d").symlink_to(target)
    with pytest.raises(InvalidInput, match="is a symbolic link"):
        _bake(ws, out=str(ws / "link.lw4d"), replace=True)
    with pytest.raises(InvalidInput, match="leaves the workspace"):  # relative: it leads out of the workspace
        _bake(ws, out="link.lw4d", replace=True)
    assert (ws / "link.lw4d").is_symlink() and target.is_dir() and not any(target.iterdir())
    (ws / "alias").symlink_to(ws)  # a link to the workspace: the store behind it is still the store
    with pytest.raises(InvalidInput, match="keeps for itself"):
        _bake(ws, out="alias/jobs.sqlite3")


def test_world_new_never_lands_on_the_workspace_or_an_existing_world(ws):
    before = _snapshot(ws)
    for out, why in ((".", "the workspace"), ("worlds/w", "already holds a world"), ("worlds", "keeps for itself")):
        with pytest.raises(InvalidInput, match=why):
            run_inline("world_new", {"image": "photo.png", "out": out, "resolution": 32, "models": BUILTIN}, ws, "n2")
    assert _snapshot(ws) == before


def test_export_never_overwrites_a_file_it_did_not_write(ws, tmp_path):
    decoded = run_inline("import_gaussians", {"path": "worlds/w/" + _current_ply(ws)}, ws, "i")[0].rsplit("/", 1)[0]
    theirs = tmp_path / "theirs.ply"
    theirs.write_bytes(b"ply\nformat binary_little_endian 1.0\nend_header\n")  # another tool's file
    for replace in (False, True):
        with pytest.raises(InvalidInput, match="is not a 3DGS PLY LivingWorld wrote"):
            run_inline("export_gaussians", {"decoded": decoded, "path": str(theirs), "replace": replace}, ws, "e")
    assert theirs.read_bytes().startswith(b"ply\nformat")
    ours = tmp_path / "ours.ply"
    assert run_inline("export_gaussians", {"decoded": decoded, "path": str(ours)}, ws, "e1") == []
    with pytest.raises(InvalidInput, match="pass replace=true"):
        run_inline("export_gaussians", {"decoded": decoded, "path": str(ours)}, ws, "e2")
    run_inline("export_gaussians", {"decoded": decoded, "path": str(ours), "replace": True}, ws, "e3")
    assert len(read_ply(ours)) > 0


def _current_ply(ws):
    import json

    world = json.loads((ws / "worlds" / "w" / "world.json").read_text())
    return world["steps"][-1]["folder"] + "/gaussians.ply"


@pytest.mark.parametrize("kind,params", [
    ("moe_train", {"dataset": "no-such-dataset", "iterations": 1}),
    ("moe_export", {"run": "no-such-run"}),
])
def test_moe_jobs_refuse_a_bad_out_before_any_work(ws, tmp_path, kind, params):
    """The output is checked first: the dataset / run named here does not even exist."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    for out in (str(mine), ".", "jobs"):
        with pytest.raises(InvalidInput, match="choose another output path|the workspace"):
            run_inline(kind, {**params, "out": out}, ws, "t")
    assert (mine / "keep.txt").read_text() == "x"


def test_submit_refuses_a_bad_out_with_400_and_creates_no_job(make_client, tmp_path):
    workspace = tmp_path / "ws"
    with make_client(workspace, kinds={k: v for k, v in registry().items() if k == "world_bake"}) as c:
        # a job has no folder at submit: every path under jobs/ is refused (jobs/new was taken for its own)
        for out in (".", "jobs", "jobs.sqlite3", str(tmp_path), "jobs/new/loop.lw4d", "jobs/x/loop.lw4d"):
            r = c.post("/jobs", json={"kind": "world_bake", "params": {"world": "w", "out": out}})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["type"] == "InvalidInput"
        assert c.get("/jobs").json() == []
        assert (workspace / "jobs.sqlite3").is_file() and (workspace / "jobs.sqlite3.lock").is_file()


def test_a_failed_job_leaves_no_empty_job_folder(make_client, tmp_path, wait_job):
    workspace = tmp_path / "ws"
    with make_client(workspace, kinds=registry()) as c:
        job = c.post("/jobs", json={"kind": "world_bake", "params": {"world": "no-world"}}).json()
        done = wait_job(c, job["id"])
        assert done["state"] == "failed" and "no-world" in done["error"]["message"]
    assert not (workspace / "jobs" / job["id"]).exists()
