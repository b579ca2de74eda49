"""The HTTP JSON API (FastAPI): jobs, job kinds, artifacts. See docs/ARCHITECTURE.md, "HTTP API".

Every route but ``/health`` needs ``Authorization: Bearer <token>``. Every error, whatever raised it (a route,
request validation, routing, the body-size limit), is a JSON body ``{"error": {"type", "message"}}``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime, and the body of
# POST /jobs is a type built inside ``create_app``.

import http
import os
import secrets
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import InvalidInput, LWError, NotFound, one_line
from ..jobs import DB_NAME, WORKSPACE_RESERVED, JobContext, JobKind, PathPolicy, registry
from .models import ErrorBody, Health, JobKindInfo, JobRecord, disk_full, strict_params, submit_body
from .store import JobStore
from .worker import Worker

MAX_BODY_BYTES = 1 << 20
NOT_ARTIFACTS = WORKSPACE_RESERVED - {"jobs", "worlds"}  # the job store, its lock, the add-on's logs

_LW_ERROR_STATUS = {NotFound: 404, InvalidInput: 400}


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody.model_validate({"error": {"type": type_, "message": message}}).model_dump(),
                        status_code=status, headers=headers)


_STATUS_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 413: "PayloadTooLarge", 422: "ValidationError", 500: "InternalError"}


def _status_type(status: int) -> str:
    """The error ``type`` of an HTTP status (``404`` -> ``NotFound``)."""
    return _STATUS_TYPES.get(status, f"HTTP{status}")


class BodySizeLimit:
    """ASGI middleware refusing bodies over ``limit`` bytes with 413: at once from ``Content-Length``, and while
    reading bodies sent without one (chunked), so a client cannot stream an unbounded body into memory."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"request body larger than {self.limit} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    return await _error(400, _status_type(400), "invalid Content-Length header")(scope, receive, send)
                if int(value) > self.limit:
                    return await _error(413, _status_type(413), too_large)(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, too_large)  # FastAPI re-raises HTTPExceptions met reading the body
            return message

        await self.app(scope, limited_receive, send)


_bearer = HTTPBearer(auto_error=False, description="The token printed by `lw serve`.")


def _require_token(token: str):
    expected = token.encode()

    def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if credentials is None:
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), expected):
            raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def _validation_message(exc: RequestValidationError) -> str:
    """Pydantic's errors as one line: ``body.params.seconds: Input should be ...; ...``."""
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # loc is ("body", <char offset>)
            parts.append(f"malformed JSON body at character {err['loc'][-1]}: {err.get('ctx', {}).get('error', '')}")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else err.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def resolve_artifact(workspace: Path, name: str) -> Path:
    """The file ``name`` (relative to ``workspace``) may serve. Refuses absolute paths, ``..`` parts,
    backslashes and NULs with ``InvalidInput``; paths that resolve outside the workspace (symlinks) with
    ``PermissionError``; missing files with ``NotFound``."""
    shown = repr(name) if len(name) <= 200 else repr(name[:200] + "...")
    if not name or "\x00" in name or "\\" in name:
        raise InvalidInput(f"artifact name {shown} is not a relative path with '/' separators")
    posix = PurePosixPath(name)
    if posix.is_absolute() or PureWindowsPath(name).drive:
        raise InvalidInput(f"artifact name {shown} is absolute; give a path relative to the workspace")
    if ".." in posix.parts:
        raise InvalidInput(f"artifact name {shown} contains '..'")
    if posix.parts and posix.parts[0] in NOT_ARTIFACTS:
        raise PermissionError(f"{posix.parts[0]!r} is the backend's own file, not an artifact")
    root = workspace.resolve()
    try:
        path = (root / posix).resolve()
        is_file = path.is_file()
    except (OSError, RuntimeError) as exc:  # a name too long for the OS, a symlink loop: never echo the workspace
        why = getattr(exc, "strerror", None) or "symbolic link loop"
        raise InvalidInput(f"artifact name {shown} is not a usable path ({why})") from None
    if not path.is_relative_to(root):
        raise PermissionError(f"artifact {shown} resolves outside the workspace")
    if not is_file:
        raise NotFound(f"no artifact {shown} in the workspace")
    return path


ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": http.HTTPStatus(status).phrase} for status in (401, 404, 413, 422)
}


def create_app(workspace: Path, token: str, kinds: dict[str, JobKind] | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, ray_address: str | None = None,
               policy: PathPolicy | None = None) -> FastAPI:
    """The backend app over ``workspace`` (created if missing). ``kinds`` defaults to every registered job kind;
    ``policy`` (default: unconfined, as for a loopback bind) says where jobs may read and write.

    Opening the workspace marks jobs a previous process left unfinished as ``interrupted``; the job worker
    starts and stops with the app's lifespan. ``ray_address`` (``auto``, ``local`` or ``HOST:PORT``): jobs run
    as tasks on that Ray cluster (``backend.cluster.dispatch.RayWorker``) instead of the local worker thread;
    without it Ray is not imported.
    """
    workspace = Path(workspace).expanduser().resolve()
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create the workspace {workspace}: {exc.strerror}; choose another one") from exc
    store = JobStore(workspace / DB_NAME)  # first: a busy workspace is refused before the (slow) job imports
    store.interrupt_unfinished()
    kinds = registry() if kinds is None else dict(kinds)
    policy = policy or PathPolicy()
    if ray_address is None:
        worker = Worker(store, kinds, workspace, policy)
    else:
        try:
            from ..cluster.dispatch import RayWorker  # ClusterUnavailable when ray is not installed

            worker = RayWorker(store, kinds, workspace, ray_address, policy=policy)
        except BaseException:
            store.close()  # the workspace lock is released: a second try may follow
            raise
    SubmitBody = submit_body(kinds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        try:
            yield
        finally:
            worker.stop()
            store.close()

    app = FastAPI(title="LivingWorld backend", version=__version__, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  generate_unique_id_function=lambda route: route.name)
    app.state.workspace = workspace
    app.state.store = store
    app.state.worker = worker
    app.add_middleware(BodySizeLimit, limit=max_body_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message == http.HTTPStatus(exc.status_code).phrase:  # from routing
            message = f"no route {request.method} {request.url.path}"
        return _error(exc.status_code, _status_type(exc.status_code), message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _status_type(422), _validation_message(exc))

    @app.exception_handler(LWError)
    async def lw_error(request: Request, exc: LWError) -> JSONResponse:
        status = next((_LW_ERROR_STATUS[c] for c in type(exc).__mro__ if c in _LW_ERROR_STATUS), 400)
        return _error(status, type(exc).__name__, one_line(str(exc)))

    @app.exception_handler(sqlite3.OperationalError)
    async def store_error(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        if disk_full(exc):  # the job store cannot take the change: say so, the backend stays up
            return _error(507, "DiskFull", f"the job store cannot be written ({exc}); free some space and try again")
        return _error(500, _status_type(500), f"{type(exc).__name__}: {exc}")

    @app.exception_handler(PermissionError)
    async def forbidden(request: Request, exc: PermissionError) -> JSONResponse:
        return _error(403, _status_type(403), str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, _status_type(500), f"{type(exc).__name__}: {exc}")

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness check; needs no token."""
        return Health(version=__version__, pid=os.getpid(), dispatch="local" if ray_address is None else "ray")

    api = APIRouter(dependencies=[Depends(_require_token(token))], responses=ERROR_RESPONSES)

    @api.get("/openapi.json", tags=["service"], include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @api.get("/kinds", tags=["jobs"])
    def list_kinds() -> list[JobKindInfo]:
        """Every job kind this backend runs, with the JSON schema of its parameters."""
        return [JobKindInfo(name=k.name, doc=k.doc, params_schema=strict_params(k.params).model_json_schema())
                for _, k in sorted(kinds.items())]

    @api.post("/jobs", status_code=201, tags=["jobs"])
    def submit_job(body: SubmitBody) -> JobRecord:
        """Queue a job; it runs when the jobs before it are done. Its output paths are checked now (and again when
        it starts): one that is not allowed is refused with 400 and the job is not created."""
        JobContext.at_submit(workspace, policy).check_outputs(body.params)
        record = store.create(body.kind, body.params.model_dump(mode="json"))
        worker.submit(record.id)
        return record

    @api.get("/jobs", tags=["jobs"])
    def list_jobs(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobRecord]:
        """The most recent jobs, newest first (jobs of earlier backend processes included)."""
        return [worker.live(r) for r in store.recent(limit)]

    def get_record(job_id: str) -> JobRecord:
        record = store.get(job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r}")
        return worker.live(record)

    @api.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str) -> JobRecord:
        """One job: state, progress, message, error, artifacts."""
        return get_record(job_id)

    @api.post("/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: str) -> JobRecord:
        """Cancel a job: a queued one at once, a running one at its next progress step (it ends `cancelled`).
        A finished job is returned unchanged."""
        get_record(job_id)
        worker.cancel(job_id)
        return get_record(job_id)

    @api.get("/artifacts/{name:path}", tags=["artifacts"], response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}, "description": "The file."},
                        400: {"model": ErrorBody, "description": "Not a relative path inside the workspace."},
                        403: {"model": ErrorBody, "description": "Resolves outside the workspace."}})
    def get_artifact(name: str) -> FileResponse:
        """Stream a file of the workspace; ``name`` is relative to it (as in a job's ``artifacts``)."""
        return FileResponse(resolve_artifact(workspace, name))

    app.include_router(api)
    return app
