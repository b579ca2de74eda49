"""Where jobs may read and write (issue 21, point 3).

Bound to loopback (the default) a job reads any file the OS user can: artists open their own photos. Bound to any
other address (``lw serve --host 0.0.0.0``) reads and writes stay inside the workspace and the ``--allow-path``
roots, judged after resolving ``..`` and symbolic links.
"""

from __future__ import annotations

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from backend.cli import is_loopback
from backend.io.ply import write_ply
from backend.jobs import PathPolicy, registry


def _ply(path, make_gaussians):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_ply(path, make_gaussians(5, 0))
    return path


@pytest.fixture
def make_gaussians():
    from backend.gaussians import Gaussians

    def make(n: int, degree: int = 0) -> Gaussians:
        rng = np.random.default_rng(n)
        return Gaussians(means=rng.normal(size=(n, 3)).astype(np.float32),
                         quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
                         log_scales=np.full((n, 3), -2.0, np.float32), opacity_logits=np.zeros(n, np.float32),
                         sh=np.zeros((n, (degree + 1) ** 2, 3), np.float32))

    return make


@pytest.fixture
def io_kinds():
    return {k: v for k, v in registry().items() if k in ("import_gaussians", "export_gaussians", "world_new")}


@pytest.mark.parametrize("address,loopback", [("127.0.0.1", True), ("127.3.0.1", True), ("::1", True),
                                              ("0.0.0.0", False), ("::", False), ("192.168.1.20", False),
                                              ("fe80::1%eth0", False)])
def test_which_bind_addresses_are_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_confined_jobs_read_only_inside_the_workspace_and_allowed_roots(make_client, tmp_path, io_kinds, wait_job,
                                                                        make_gaussians):
    ws, shared, private = tmp_path / "ws", tmp_path / "shared", tmp_path / "private"
    inside = _ply(ws / "in.ply", make_gaussians)
    allowed = _ply(shared / "a.ply", make_gaussians)
    secret = _ply(private / "s.ply", make_gaussians)
    (ws / "sneaky.ply").symlink_to(secret)  # a link inside the workspace to a file outside it
    policy = PathPolicy.confined(ws, (shared,))
    with make_client(ws, kinds=io_kinds, policy=policy) as c:
        def run(path):
            job = c.post("/jobs", json={"kind": "import_gaussians", "params": {"path": path}}).json()
            return wait_job(c, job["id"])

        assert run("in.ply")["state"] == "succeeded"
        assert run(str(inside))["state"] == "succeeded"
        assert run(str(allowed))["state"] == "succeeded"
        for path in (str(secret), str(ws / "sneaky.ply"), str(shared / ".." / "private" / "s.ply"), "/etc/passwd"):
            job = run(path)
            assert job["state"] == "failed" and "outside the folders this backend may use" in job["message"], path
        assert "leaves the workspace" in run("sneaky.ply")["message"]
        assert "leaves the workspace" in run("../private/s.ply")["message"]
        # an output outside the roots is refused when the job is submitted
        r = c.post("/jobs", json={"kind": "export_gaussians", "params": {"decoded": "x", "path": str(private / "o.ply")}})
        assert r.status_code == 400 and "outside the folders" in r.json()["error"]["message"]
    assert not (private / "o.ply").exists()


def test_a_confined_world_new_never_copies_an_outside_image_into_the_workspace(make_client, tmp_path, io_kinds,
                                                                              wait_job):
    ws, photos = tmp_path / "ws", tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "p.png"), np.full((24, 32, 3), 128, np.uint8))
    builtin = {"depth": "builtin", "segmentation": "builtin", "outpaint": "builtin", "device": "cpu"}
    params = {"image": str(photos / "p.png"), "resolution": 32, "models": builtin}
    with make_client(ws, kinds=io_kinds, policy=PathPolicy.confined(ws)) as c:
        job = wait_job(c, c.post("/jobs", json={"kind": "world_new", "params": params}).json()["id"])
    assert job["state"] == "failed" and "outside the folders" in job["message"]
    assert not (ws / "worlds").exists() and not list(ws.rglob("*.png"))


def test_lw_serve_on_all_interfaces_is_confined_and_on_loopback_is_not(backend_factory, tmp_path, make_gaussians):
    shared, private = tmp_path / "shared", tmp_path / "private"
    allowed, secret = _ply(shared / "a.ply", make_gaussians), _ply(private / "s.ply", make_gaussians)

    def import_state(backend, path):
        with backend.client() as c:
            job = c.post("/jobs", json={"kind": "import_gaussians", "params": {"path": str(path)}}).json()
            for _ in range(600):
                job = c.get(f"/jobs/{job['id']}").json()
                if job["state"] not in ("queued", "running"):
                    return job
                time.sleep(0.05)
        raise AssertionError(job)

    remote = backend_factory(tmp_path / "ws-remote", "--host", "0.0.0.0", "--allow-path", str(shared))
    assert import_state(remote, allowed)["state"] == "succeeded"
    job = import_state(remote, secret)
    assert job["state"] == "failed" and "--allow-path" in job["message"]
    remote.stop()
    local = backend_factory(tmp_path / "ws-local")
    assert import_state(local, secret)["state"] == "succeeded"  # loopback: the artist's own files


def test_allow_path_must_name_existing_folders(tmp_path):
    res = subprocess.run([sys.executable, "-m", "backend.cli", "serve", "--workspace", str(tmp_path / "ws"),
                          "--host", "0.0.0.0", "--allow-path", str(tmp_path / "missing")], check=False,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--allow-path" in res.stderr and "not a folder" in res.stderr


@pytest.mark.parametrize("kind", ["moe_eval", "moe_export", "moe_router", "moe_render"])
def test_a_run_json_naming_an_outside_dataset_is_refused_on_a_confined_backend(tmp_path, kind):
    """A run folder inside the workspace whose run.json was edited to name a dataset elsewhere: every stage-2 job
    refuses it before reading anything (the dataset was checked only when moe_train ran)."""
    import json

    from backend.errors import InvalidInput
    from backend.jobs import JobContext, run_job

    ws, private = tmp_path / "ws", tmp_path / "private"
    (private / "scene").mkdir(parents=True)
    (ws / "run").mkdir(parents=True)
    (ws / "run" / "run.json").write_text(json.dumps({"dataset": str(private / "scene"), "experts": ["trajectory"]}))
    spec = registry()[kind]
    extra = {"cameras": [{}], "times": [0.0], "frames": [1]} if kind == "moe_render" else {}
    params = spec.params.model_validate({"run": "run", **extra})
    ctx = JobContext(workspace=ws, job_dir=ws / "jobs" / "j1", job_id="j1", policy=PathPolicy.confined(ws))
    with pytest.raises(InvalidInput, match="names a dataset this backend may not read: path .* is outside the folders"):
        run_job(spec.fn, ctx, params)


def test_model_settings_naming_local_folders_pass_the_path_policy(tmp_path, monkeypatch):
    """A model setting is a Hugging Face repo id or a local folder: on a confined backend a local folder (absolute,
    starting with '.' or '~', or existing) outside the roots is refused; repo ids, auto and builtin pass."""
    from backend.errors import InvalidInput

    ws, private = tmp_path / "ws", tmp_path / "private"
    (ws / "models" / "depth").mkdir(parents=True)
    (private / "depth").mkdir(parents=True)
    policy = PathPolicy.confined(ws)
    monkeypatch.chdir(tmp_path)
    for ok in ("auto", "builtin", "depth-anything/Depth-Anything-V2-Small-hf", str(ws / "models" / "depth"),
               "./ws/models/depth"):
        policy.check_model(ok, "models.depth")
    for bad in (str(private / "depth"), "private/depth", "./private", "../elsewhere", "~/models/depth", "/opt/m"):
        with pytest.raises(InvalidInput, match=r"models.depth: path .* is outside the folders"):
            policy.check_model(bad, "models.depth")
    PathPolicy().check_model(str(private / "depth"), "models.depth")  # unconfined: anywhere


def test_a_confined_world_new_refuses_a_model_folder_outside_the_roots(tmp_path):
    from backend.errors import InvalidInput
    from backend.jobs import JobContext, run_job

    ws, private = tmp_path / "ws", tmp_path / "private"
    (private / "depth").mkdir(parents=True)
    ws.mkdir()
    cv2.imwrite(str(ws / "p.png"), np.full((24, 32, 3), 128, np.uint8))
    spec = registry()["world_new"]
    models = {"depth": str(private / "depth"), "segmentation": "builtin", "outpaint": "builtin", "device": "cpu"}
    params = spec.params.model_validate({"image": "p.png", "resolution": 32, "models": models})
    ctx = JobContext(workspace=ws, job_dir=ws / "jobs" / "j1", job_id="j1", policy=PathPolicy.confined(ws))
    with pytest.raises(InvalidInput, match="models.depth: path .* is outside the folders"):
        run_job(spec.fn, ctx, params)
    assert not (ws / "worlds").exists()


def test_a_confined_world_expand_refuses_model_folders_world_json_names_outside_the_roots(tmp_path):
    """world.json records model settings and the motion model of the latest motion request; a world edited to
    name folders elsewhere is refused before the expansion does any work (the carried motion model reloads)."""
    from backend.errors import InvalidInput
    from backend.world import store
    from backend.world.motion.pipeline import FIELD_FILE, carried_request
    from backend.world.pipeline import WorldConfig, expand_world

    ws, private = tmp_path / "ws", tmp_path / "private"
    (private / "m").mkdir(parents=True)
    root = ws / "worlds" / "w"

    def write(folder):
        (folder / FIELD_FILE).write_bytes(b"a field")  # only its presence marks the motion step
        return {}

    request = {"presets": [], "hints": [], "model": str(private / "m"), "speed": 1.0, "device": "cpu"}
    step = store.WorldStep(index=0, kind="new", folder=store.new_step_folder(0), camera={},
                           stats={"motion": {"request": request}})
    world = store.commit_step(root, None, step, write, world_id="t", settings={"config": WorldConfig().to_json()})
    policy = PathPolicy.confined(ws)
    with pytest.raises(InvalidInput, match="the motion model world step 0 records: path .* is outside the folders"):
        carried_request(world, policy)
    assert carried_request(world, PathPolicy.confined(ws, (private,))).model == str(private / "m")
    with pytest.raises(InvalidInput, match="motion model .* is outside the folders"):
        expand_world(root, None, policy=policy)
    cfg = WorldConfig().to_json()
    cfg["models"]["outpaint"] = str(private / "m")
    store.commit_step(ws / "worlds" / "w2", None, step, write, world_id="t", settings={"config": cfg})
    with pytest.raises(InvalidInput, match="the outpaint model world.json names: path .* is outside the folders"):
        expand_world(ws / "worlds" / "w2", None, policy=policy)
