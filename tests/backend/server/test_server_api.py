"""The HTTP API in process (FastAPI TestClient, real app, real worker thread, real SQLite)."""

import os
import sqlite3
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from backend.errors import InvalidInput
from backend.jobs import JobKind
from backend.server import create_app
from backend.server.store import JobStore, WorkspaceBusy

PROTECTED = [
    ("GET", "/kinds"), ("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/abc"), ("POST", "/jobs/abc/cancel"),
    ("GET", "/artifacts/x.txt"), ("GET", "/openapi.json"),
]


def assert_error(response, status: int, type_: str | None = None, contains: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"type", "message"} and error["message"]
    if type_ is not None:
        assert error["type"] == type_
    assert contains in error["message"], error["message"]
    return error


def test_health_needs_no_token_and_reports_the_pid(make_client, workspace):
    with make_client(workspace, token=None) as anonymous:
        body = anonymous.get("/health").json()
    assert body["status"] == "ok" and body["pid"] == os.getpid()


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer ", "test-token"])
def test_every_route_but_health_refuses_a_missing_or_wrong_token(make_client, workspace, method, path, auth):
    with make_client(workspace, token=None) as anonymous:
        headers = {} if auth is None else {"Authorization": auth}
        response = anonymous.request(method, path, headers=headers, json={"kind": "sleep", "params": {}})
    assert_error(response, 401, "Unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_kinds_lists_the_builtin_jobs_with_their_parameter_schema(client):
    kinds = {k["name"]: k for k in client.get("/kinds").json()}
    assert set(kinds) == {"sleep", "fail"}
    assert kinds["sleep"]["params_schema"]["properties"]["seconds"]["maximum"] == 3600.0
    assert "InvalidInput" in kinds["fail"]["doc"]


def test_default_kinds_are_the_whole_registry(workspace, token):
    with TestClient(create_app(workspace, token), headers={"Authorization": f"Bearer {token}"}) as c:
        names = {k["name"] for k in c.get("/kinds").json()}
    assert {"sleep", "fail"} <= names


def test_a_job_runs_to_success_with_times_in_order(client, wait_job):
    response = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0.05, "steps": 2}})
    assert response.status_code == 201
    submitted = response.json()
    assert submitted["state"] in ("queued", "running") and submitted["params"] == {"seconds": 0.05, "steps": 2}
    job = wait_job(client, submitted["id"])
    assert job["state"] == "succeeded" and job["progress"] == 1.0 and job["error"] is None
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert (client.app.state.workspace / "jobs" / job["id"]).is_dir()


def test_progress_and_message_are_visible_while_a_job_runs(client, wait_job):
    job_id = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 2.0, "steps": 4}}).json()["id"]
    job = wait_job(client, job_id, until=lambda j: j["state"] == "running" and j["progress"] >= 0.25)
    assert job["progress"] < 1.0 and job["message"].startswith("step ")
    client.post(f"/jobs/{job_id}/cancel")
    cancelled = wait_job(client, job_id)
    assert cancelled["state"] == "cancelled" and job["progress"] <= cancelled["progress"] < 1.0


def test_cancel_stops_a_running_job_at_its_next_step(client, wait_job):
    job_id = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 6}}).json()["id"]
    wait_job(client, job_id, until=lambda j: j["state"] == "running")
    t0 = time.monotonic()
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    job = wait_job(client, job_id)
    assert job["state"] == "cancelled" and job["finished_at"] is not None
    assert job["progress"] == 0.0  # stopped inside its first step, before reporting it
    assert time.monotonic() - t0 < 9.0  # one step is 10 s: the wait woke up on cancel


def test_cancel_of_a_queued_job_is_immediate_and_it_never_starts(client, wait_job):
    first = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 60}}).json()["id"]
    second = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0, "steps": 1}}).json()["id"]
    cancelled = client.post(f"/jobs/{second}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["started_at"] is None
    client.post(f"/jobs/{first}/cancel")
    assert wait_job(client, first)["state"] == "cancelled"
    assert client.get(f"/jobs/{second}").json()["started_at"] is None


def test_cancel_of_a_finished_job_leaves_it_as_it_was(client, wait_job):
    job_id = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0, "steps": 1}}).json()["id"]
    done = wait_job(client, job_id)
    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 200 and again.json() == done


def test_a_job_that_raises_an_lw_error_fails_with_its_message(client, wait_job):
    job_id = client.post("/jobs", json={"kind": "fail", "params": {"message": "the PLY has no opacity"}}).json()["id"]
    job = wait_job(client, job_id)
    assert job["state"] == "failed" and job["message"] == "the PLY has no opacity"
    assert job["error"] == {"type": "InvalidInput", "message": "the PLY has no opacity", "traceback": None}


class _NoParams(BaseModel):
    pass


def _divide_by_zero(ctx, params):
    """A job with a bug."""
    ctx.progress(0.5, "halfway")
    return [str(1 / 0)]


def _returns_not_a_list(ctx, params):
    """A job returning something that is not a list of artifact names."""
    return {"not": "a list"}


def test_an_unexpected_exception_fails_the_job_with_type_message_and_a_short_traceback(make_client, workspace,
                                                                                        wait_job):
    kinds = {"buggy": JobKind("buggy", _NoParams, _divide_by_zero, "bug"),
             "bad_return": JobKind("bad_return", _NoParams, _returns_not_a_list, "bad")}
    with make_client(workspace, kinds=kinds) as c:
        buggy = wait_job(c, c.post("/jobs", json={"kind": "buggy", "params": {}}).json()["id"])
        bad = wait_job(c, c.post("/jobs", json={"kind": "bad_return", "params": {}}).json()["id"])
    assert buggy["state"] == "failed" and buggy["error"]["type"] == "ZeroDivisionError"
    assert buggy["error"]["message"] == "division by zero"
    trace = buggy["error"]["traceback"]
    assert "_divide_by_zero" in trace and "1 / 0" in trace and trace.count("\n") <= 7
    assert bad["state"] == "failed" and bad["error"]["type"] == "ValidationError"


def test_unknown_job_id_is_404(client):
    assert_error(client.get("/jobs/0123456789abcdef"), 404, "NotFound", "0123456789abcdef")
    assert_error(client.post("/jobs/nope/cancel"), 404, "NotFound")


def test_unknown_kind_and_invalid_params_are_refused_at_submit_time(client):
    assert_error(client.post("/jobs", json={"kind": "teleport", "params": {}}), 422, "ValidationError", "teleport")
    assert_error(client.post("/jobs", json={"kind": "sleep", "params": {"seconds": -1}}), 422, "ValidationError",
                 "seconds")
    assert_error(client.post("/jobs", json={"kind": "sleep", "params": {"steps": "many"}}), 422, None, "steps")
    assert_error(client.post("/jobs", json={"kind": "sleep"}), 422, None, "params")
    assert_error(client.post("/jobs", json={"kind": "sleep", "params": {}, "extra": 1}), 422, None, "extra")
    assert_error(client.post("/jobs", json=[1, 2]), 422)
    assert client.get("/jobs").json() == []


@pytest.mark.parametrize("body", [b"{not json", b'{"kind": "sleep", "params": {}', b"", b"\xff\xfe"])
def test_malformed_json_is_a_4xx_with_a_reason(client, body):
    response = client.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["message"]


def test_malformed_json_names_the_position(client):
    response = client.post("/jobs", content=b'{"kind": sleep}', headers={"Content-Type": "application/json"})
    assert_error(response, 422, "ValidationError", "malformed JSON body at character 9")


def test_bodies_over_the_limit_are_413_whether_announced_or_streamed(make_client, workspace):
    padding = "x" * 2000
    with make_client(workspace, max_body_bytes=1000) as c:
        assert_error(c.post("/jobs", json={"kind": "fail", "params": {"message": padding}}), 413,
                     "PayloadTooLarge", "1000 bytes")

        def chunks():  # no Content-Length: sent chunked
            yield b'{"kind": "fail", "params": {"message": "'
            for _ in range(10):
                yield b"y" * 200
            yield b'"}}'

        assert_error(c.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"}), 413)
        assert c.get("/jobs").json() == []
        assert c.post("/jobs", json={"kind": "fail", "params": {"message": "short"}}).status_code == 201


def test_unknown_routes_and_methods_answer_json_errors(client):
    assert_error(client.get("/no/such/route"), 404, "NotFound", "/no/such/route")
    assert_error(client.delete("/jobs"), 405, "MethodNotAllowed")
    assert_error(client.get("/jobs", params={"limit": 0}), 422, "ValidationError", "limit")


def test_jobs_are_listed_newest_first_with_a_limit(client):
    ids = [client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0, "steps": 1}}).json()["id"]
           for _ in range(3)]
    assert [j["id"] for j in client.get("/jobs").json()] == ids[::-1]
    assert [j["id"] for j in client.get("/jobs", params={"limit": 2}).json()] == ids[:0:-1]


def test_artifacts_stream_files_of_the_workspace(client):
    ws = client.app.state.workspace
    (ws / "jobs" / "abc").mkdir(parents=True)
    payload = os.urandom(200_000)
    (ws / "jobs" / "abc" / "out.bin").write_bytes(payload)
    response = client.get("/artifacts/jobs/abc/out.bin")
    assert response.status_code == 200 and response.content == payload
    assert_error(client.get("/artifacts/jobs/abc/missing.bin"), 404, "NotFound")
    assert_error(client.get("/artifacts/jobs/abc"), 404, "NotFound")  # a folder is not an artifact


@pytest.mark.parametrize("raw_path", [
    "/artifacts/..%2Fsecret.txt", "/artifacts/jobs/..%2F..%2Fsecret.txt", "/artifacts/%2E%2E/secret.txt",
    "/artifacts/..%5Csecret.txt", "/artifacts/jobs%00.txt",
])
def test_artifact_paths_with_dot_dot_are_refused(client, raw_path):
    (client.app.state.workspace.parent / "secret.txt").write_text("outside")
    assert_error(client.get(raw_path), 400, "InvalidInput")


@pytest.mark.parametrize("raw_path", ["/artifacts//etc/passwd", "/artifacts/%2Fetc%2Fpasswd",
                                      "/artifacts/C:%5CWindows%5Cwin.ini", "/artifacts/C:/Windows/win.ini"])
def test_absolute_artifact_paths_are_refused(client, raw_path):
    assert_error(client.get(raw_path), 400, "InvalidInput")


@pytest.mark.parametrize("name", ["a" * 4096, "d/" * 3000 + "x", "é" * 2000, "b" * 300])
def test_artifact_names_too_long_for_the_os_are_400_without_the_workspace_path(client, name):
    error = assert_error(client.get(f"/artifacts/{name}"), 400, "InvalidInput", "not a usable path")
    assert str(client.app.state.workspace) not in error["message"] and len(error["message"]) < 400


def test_a_symlink_loop_is_400_and_the_backends_own_files_are_not_artifacts(client):
    ws = client.app.state.workspace
    (ws / "loop").symlink_to(ws / "loop")
    assert_error(client.get("/artifacts/loop/x"), 400, "InvalidInput", "not a usable path")
    (ws / "logs").mkdir()
    (ws / "logs" / "backend.out").write_text('{"token": "secret"}')
    for name in ("jobs.sqlite3", "jobs.sqlite3.lock", "logs/backend.out"):
        assert_error(client.get(f"/artifacts/{name}"), 403, "Forbidden", "not an artifact")


def test_a_symlink_leading_out_of_the_workspace_is_refused(client):
    ws = client.app.state.workspace
    secret = ws.parent / "secret.txt"
    secret.write_text("outside")
    (ws / "link.txt").symlink_to(secret)
    (ws / "linkdir").symlink_to(ws.parent, target_is_directory=True)
    assert_error(client.get("/artifacts/link.txt"), 403, "Forbidden", "outside the workspace")
    assert_error(client.get("/artifacts/linkdir/secret.txt"), 403, "Forbidden")


def test_a_clean_shutdown_marks_unfinished_jobs_interrupted_and_a_restart_lists_them(make_client, workspace,
                                                                                       wait_job):
    with make_client(workspace) as c:
        running = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 2}}).json()["id"]
        queued = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 2}}).json()["id"]
        wait_job(c, running, until=lambda j: j["state"] == "running")
    with make_client(workspace) as c:
        jobs = {j["id"]: j for j in c.get("/jobs").json()}
    assert jobs[running]["state"] == "interrupted" and jobs[queued]["state"] == "interrupted"
    assert "submit it again" in jobs[running]["message"]


def test_jobs_a_dead_process_left_running_become_interrupted_on_start(make_client, workspace):
    workspace.mkdir(parents=True)
    store = JobStore(workspace / "jobs.sqlite3")
    job = store.create("sleep", {"seconds": 1, "steps": 1})
    assert store.start(job.id)
    store.close()  # as a killed process would leave it: state 'running' in the file
    make_client(workspace)  # creating the app opens the workspace
    with sqlite3.connect(workspace / "jobs.sqlite3") as db:
        state, journal = db.execute("SELECT state, (SELECT journal_mode FROM pragma_journal_mode) FROM jobs").fetchone()
    assert state == "interrupted" and journal == "wal"


def test_openapi_schema_describes_every_kind_the_token_and_error_bodies(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert components["SubmitSleep"]["properties"]["kind"]["const"] == "sleep"
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "kind"
    assert set(components["JobRecord"]["properties"]["state"]["enum"]) == {
        "queued", "running", "succeeded", "failed", "cancelled", "interrupted"}
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            if path == "/health":
                assert "security" not in op
                continue
            assert op["security"] == [{"HTTPBearer": []}], (method, path)
            for status in ("401", "422"):
                assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")


def test_a_second_backend_on_a_busy_workspace_is_refused_and_leaves_the_jobs_alone(client, token, wait_job):
    job_id = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 60, "steps": 60}}).json()["id"]
    wait_job(client, job_id, until=lambda j: j["state"] == "running")
    with pytest.raises(WorkspaceBusy, match="another backend"):
        create_app(client.app.state.workspace, token)
    assert client.get(f"/jobs/{job_id}").json()["state"] == "running"
    client.post(f"/jobs/{job_id}/cancel")


def test_a_misspelt_parameter_is_refused_not_ignored(client):
    assert_error(client.post("/jobs", json={"kind": "sleep", "params": {"secnds": 5}}), 422, "ValidationError",
                 "secnds")
    schema = {k["name"]: k for k in client.get("/kinds").json()}["sleep"]["params_schema"]
    assert schema["additionalProperties"] is False


def test_concurrent_clients_see_consistent_records(client, wait_job):
    from concurrent.futures import ThreadPoolExecutor

    def submit_and_read(i):
        job = client.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0.01, "steps": 2}}).json()
        for _ in range(5):
            assert client.get(f"/jobs/{job['id']}").status_code == 200
            assert client.get("/jobs").status_code == 200
        return job["id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit_and_read, range(24)))
    assert len(set(ids)) == 24
    assert all(wait_job(client, job_id)["state"] == "succeeded" for job_id in ids)


def test_an_unusable_workspace_is_an_invalid_input_error(tmp_path, token):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InvalidInput, match="cannot create the workspace"):
        create_app(tmp_path / "file" / "ws", token)
