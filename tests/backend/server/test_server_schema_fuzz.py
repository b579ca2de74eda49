"""Property-based run over the published OpenAPI schema (schemathesis): whatever it sends, valid or not, to any
operation, the backend answers without a 5xx, and every error is a JSON ``{"error": {"type", "message"}}`` body.

The app runs in process (ASGI) with the built-in job kinds only: generated-but-valid parameters of other kinds
would run real jobs (reading and writing wherever a generated path points)."""

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans

from backend.server import create_app

EXAMPLES_PER_OPERATION = 30


@pytest.fixture
def api(tmp_path):
    """(schema, auth headers) of a fresh app; schemathesis starts its lifespan (the job worker) on first use."""
    from backend.jobs import registry

    token = "fuzz-token"
    kinds = {name: spec for name, spec in registry().items() if name in ("sleep", "fail")}
    app = create_app(tmp_path / "workspace", token, kinds=kinds)
    auth = {"Authorization": f"Bearer {token}"}
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=auth), auth
    shutdown_lifespans()  # stops the job worker (cancels the running job) and closes the store


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(api, mode):
    schema, auth = api
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/health", "/kinds", "/jobs", "/jobs/{job_id}",
                                              "/jobs/{job_id}/cancel", "/artifacts/{name}"}
    seen_statuses, calls = set(), []
    for operation in operations:
        has_inputs = any(len(group) for group in (operation.body, operation.query, operation.path_parameters))
        if mode == GenerationMode.NEGATIVE and not has_inputs:
            continue  # nothing to get wrong (GET /health, GET /kinds)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers=auth, timeout=10)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
            seen_statuses.add(response.status_code)
            calls.append(response.status_code)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["type"] and error["message"]

        check()
    print(f"{mode.value}: {len(calls)} generated requests, statuses {sorted(seen_statuses)}")
    if mode == GenerationMode.POSITIVE:
        assert {200, 201} <= seen_statuses, seen_statuses
    else:
        assert 422 in seen_statuses, seen_statuses


JOB_EXAMPLES = 100
SLOW_JOB_EXAMPLES = 1000


@pytest.fixture
def every_kind_api(tmp_path):
    """Every registered job kind but ``sleep`` (a generated hour-long wait would hold the queue), on a backend
    confined to its workspace as with ``--host 0.0.0.0``: generated paths cannot read or write outside it."""
    from backend.jobs import PathPolicy, registry

    token = "fuzz-token"
    workspace = tmp_path / "workspace"
    kinds = {name: spec for name, spec in registry().items() if name != "sleep"}
    app = create_app(workspace, token, kinds=kinds, policy=PathPolicy.confined(workspace))
    auth = {"Authorization": f"Bearer {token}"}
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=auth), auth, app
    shutdown_lifespans()


def test_generated_jobs_of_every_kind_are_refused_or_fail_in_one_line(every_kind_api, tmp_path):
    """POST /jobs with generated bodies for every kind (valid and invalid): never a 5xx, and every job that ran
    ends without an unexpected exception (no traceback: only the one-line errors of bad input)."""
    _fuzz_jobs(every_kind_api, tmp_path, JOB_EXAMPLES)


@pytest.mark.slow
def test_generated_jobs_of_every_kind_long(every_kind_api, tmp_path):
    _fuzz_jobs(every_kind_api, tmp_path, SLOW_JOB_EXAMPLES)


def _fuzz_jobs(api, tmp_path, examples: int) -> None:
    schema, auth, app = api
    submit = next(op.ok() for op in schema.get_all_operations() if op.ok().path == "/jobs" and
                  op.ok().method.upper() == "POST")
    submitted, statuses = [], {}

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @given(case=submit.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers=auth, timeout=30)
            assert response.status_code < 500, (case.body, response.text)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 201:
                submitted.append(response.json()["id"])

        check()
    store, worker = app.state.store, app.state.worker
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(store.get(j).state in ("queued", "running") for j in submitted):
        time.sleep(0.05)
    records = [worker.live(store.get(j)) for j in submitted]
    unfinished = [r.kind for r in records if r.state in ("queued", "running")]
    bugs = [(r.kind, r.params, r.error.type, r.error.message) for r in records
            if r.error is not None and r.error.traceback is not None]
    assert not bugs, bugs
    multi_line = [(r.kind, r.message) for r in records if "\n" in r.message]
    assert not multi_line, multi_line
    assert statuses.get(201, 0) >= examples // 5 and statuses.get(422, 0) >= examples // 10, statuses
    assert not unfinished, unfinished
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workspace"]  # nothing written outside it
    print(f"POST /jobs: {sum(statuses.values())} generated requests, statuses {sorted(statuses.items())}; "
          f"{len(records)} jobs ran: {sorted({r.state for r in records})}")
