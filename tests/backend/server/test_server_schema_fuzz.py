"""Property-based run over the published OpenAPI schema (schemathesis): whatever it sends, valid or not, to any
operation, the backend answers without a 5xx, and every error is a JSON ``{"error": {"type", "message"}}`` body.

The app runs in process (ASGI) with the built-in job kinds only: generated-but-valid parameters of other kinds
would run real jobs (reading and writing wherever a generated path points)."""

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
    seen_statuses = set()
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
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["type"] and error["message"]

        check()
    if mode == GenerationMode.POSITIVE:
        assert {200, 201} <= seen_statuses, seen_statuses
    else:
        assert 422 in seen_statuses, seen_statuses
