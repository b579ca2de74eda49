"""The HTTP API over a Ray-backed job queue (a local 2-CPU cluster): progress, errors and cancel reach the
client as with the local worker, and moe_train trains its experts in parallel tasks with the local worker's
results."""

from __future__ import annotations

import time

import pytest
import torch
from fastapi.testclient import TestClient

from backend.jobs import registry
from backend.moe.evaluate import evaluate_run
from backend.server import create_app

TOKEN = "cluster-test-token"
FINISHED = {"succeeded", "failed", "cancelled", "interrupted"}
KINDS = ("sleep", "fail", "moe_train")


def make_client(workspace, ray_address=None) -> TestClient:
    kinds = {k: v for k, v in registry().items() if k in KINDS}
    app = create_app(workspace, TOKEN, kinds=kinds, ray_address=ray_address)
    return TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture(scope="module")
def ray_client(ray_cluster, tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("ray") / "ws", ray_cluster) as client:
        assert client.get("/health").json()["dispatch"] == "ray"
        yield client


def wait_job(client, job_id, until=lambda job: job["state"] in FINISHED, timeout=120.0, seen=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if seen is not None:
            seen.append(job)
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job did not get there in {timeout} s: {job}"
        time.sleep(0.02)


def submit(client, kind, **params) -> str:
    response = client.post("/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_progress_and_errors_reach_the_client(ray_client):
    ok = submit(ray_client, "sleep", seconds=1.0, steps=10)
    bad = submit(ray_client, "fail", message="broken on purpose")
    seen = []
    job = wait_job(ray_client, ok, seen=seen)
    assert job["state"] == "succeeded" and job["progress"] == 1.0 and job["message"] == "done"
    running = [j["progress"] for j in seen if j["state"] == "running"]
    assert any(0 < p < 1 for p in running), seen  # intermediate progress came through
    assert running == sorted(running)
    assert any(j["message"].startswith("step ") for j in seen)
    failed = wait_job(ray_client, bad)
    assert failed["state"] == "failed"
    assert failed["error"] == {"type": "InvalidInput", "message": "broken on purpose", "traceback": None}


def test_cancel_a_running_and_a_queued_job(ray_client):
    # 2 CPUs: two sleeps run, the third waits in Ray's queue and stays `queued`
    running = [submit(ray_client, "sleep", seconds=20.0, steps=200) for _ in range(2)]
    queued = submit(ray_client, "sleep", seconds=1.0, steps=2)
    for job_id in running:
        wait_job(ray_client, job_id, until=lambda j: j["progress"] > 0)
    assert ray_client.get(f"/jobs/{queued}").json()["state"] == "queued"
    cancelled = ray_client.post(f"/jobs/{queued}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["message"] == "cancelled before it started"
    for job_id in running:
        assert ray_client.post(f"/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    for job_id in running:
        job = wait_job(ray_client, job_id, timeout=10.0)
        assert job["state"] == "cancelled" and job["message"] == "cancelled by the user"
        assert 0 < job["progress"] < 0.5
    assert ray_client.get(f"/jobs/{queued}").json()["state"] == "cancelled"


MOE = {"experts": ["deformation", "trajectory"], "iterations": 12, "downsample": 4}


def test_moe_train_on_ray_matches_the_local_worker(ray_client, tiny_dataset, tmp_path):
    runs = {}
    with make_client(tmp_path / "local") as local:
        assert local.get("/health").json()["dispatch"] == "local"
        for name, client in (("local", local), ("ray", ray_client)):
            job_id = submit(client, "moe_train", dataset=str(tiny_dataset), out=f"{name}-run", **MOE)
            job = wait_job(client, job_id)
            assert job["state"] == "succeeded", job
            assert job["artifacts"] == [f"{name}-run/run.json", f"{name}-run/deformation/checkpoint.pt",
                                        f"{name}-run/trajectory/checkpoint.pt"]
            runs[name] = client.app.state.workspace / f"{name}-run"
    for expert in MOE["experts"]:
        a, b = (torch.load(runs[n] / expert / "checkpoint.pt", weights_only=True) for n in ("local", "ray"))
        assert a["step"] == b["step"] == 12
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-5, rtol=1e-5)
        assert a["log"]["loss"] == pytest.approx(b["log"]["loss"], abs=1e-5)
    psnr = {n: evaluate_run(runs[n]) for n in runs}
    for expert in MOE["experts"]:
        assert psnr["ray"]["experts"][expert]["psnr"] == pytest.approx(psnr["local"]["experts"][expert]["psnr"],
                                                                       abs=0.01)


def test_moe_train_cancel_reaches_every_expert_task(ray_client, tiny_dataset, tmp_path):
    job_id = submit(ray_client, "moe_train", dataset=str(tiny_dataset), out="cancelled-run",
                    **{**MOE, "iterations": 5000})
    run = ray_client.app.state.workspace / "cancelled-run"
    job = wait_job(ray_client, job_id, until=lambda j: "deformation: step" in j["message"]
                   and "trajectory: step" in j["message"])
    assert job["state"] == "running" and 0 < job["progress"] < 1
    ray_client.post(f"/jobs/{job_id}/cancel")
    job = wait_job(ray_client, job_id, timeout=30.0)
    assert job["state"] == "cancelled" and "cancelled at step" in job["message"], job
    for expert in MOE["experts"]:  # each task checkpointed where it stopped: a resubmit resumes there
        step = torch.load(run / expert / "checkpoint.pt", weights_only=True)["step"]
        assert 10 <= step < 5000
