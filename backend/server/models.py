"""Schema models of the HTTP API: everything that crosses the wire is one of these (they make the OpenAPI schema).

The request body of ``POST /jobs`` is built per server from the registered job kinds (``submit_body``), so the
schema names every kind with its exact parameters and a wrong kind or parameter is refused at submit time.
"""

import errno
import sqlite3
import traceback
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..errors import LWError, one_line
from ..jobs import JobKind

TRACEBACK_FRAMES = 6

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
FINISHED_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "interrupted"})


class ErrorDetail(BaseModel):
    type: str = Field(description="Error class, e.g. `NotFound`, `Unauthorized`, `ValidationError`.")
    message: str = Field(description="What was wrong, in words a user can act on.")


class ErrorBody(BaseModel):
    """Body of every non-2xx response."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    pid: int = Field(description="Process id of the backend (lets a client check it talks to its own process).")
    dispatch: Literal["local", "ray"] = Field(
        "local", description="Where jobs run: the backend's worker thread, or tasks on a Ray cluster (--ray).")


class JobKindInfo(BaseModel):
    name: str
    doc: str = Field(description="The job function's docstring.")
    params_schema: dict[str, Any] = Field(description="JSON schema of the `params` object this kind takes.")


class JobError(BaseModel):
    type: str = Field(description="Exception class name, e.g. `InvalidInput`; `DiskFull` for a full disk.")
    message: str
    traceback: str | None = Field(
        None, description="Last frames of the traceback (unexpected errors only; `LWError`s carry none).")

    @classmethod
    def of(cls, exc: BaseException, remote_traceback: str | None = None) -> "JobError":
        """How a job's error is recorded: an ``LWError`` as it is; a full disk or another OS error as one line
        naming the file and what to do (no traceback: there is no bug to find); anything else (a bug) with its type
        and the last frames of its traceback (``remote_traceback`` when it ran elsewhere)."""
        if isinstance(exc, LWError):
            return cls(type=type(exc).__name__, message=one_line(str(exc)))
        where = one_line(f" writing {exc.filename}") if isinstance(exc, OSError) and exc.filename else ""
        if disk_full(exc):
            return cls(type="DiskFull", message=f"no space left on the device{where}; free some space and run the "
                                                "job again (nothing half-written was kept)")
        if isinstance(exc, OSError):
            return cls(type=type(exc).__name__, message=f"{exc.strerror or exc}{where.replace(' writing', ' at')}; "
                                                        "check that path and run the job again")
        return cls(type=type(exc).__name__, message=str(exc), traceback=remote_traceback or traceback_summary(exc))

    @property
    def summary(self) -> str:
        """The job's message for this error: a bug's names its type (``ZeroDivisionError: division by zero``)."""
        return self.message if self.traceback is None else f"{self.type}: {self.message}"


def disk_full(exc: BaseException) -> bool:
    """``exc`` says the disk (or the user's quota) is full: ENOSPC / EDQUOT, or SQLite's "database or disk is full"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def traceback_summary(exc: BaseException, frames: int = TRACEBACK_FRAMES) -> str:
    """The last ``frames`` frames of ``exc``'s traceback plus its one-line description."""
    stack = traceback.extract_tb(exc.__traceback__)[-frames:]
    lines = [f'{f.filename}:{f.lineno} in {f.name}: {(f.line or "").strip()}' for f in stack]
    return "\n".join([*lines, f"{type(exc).__name__}: {exc}"])


class JobRecord(BaseModel):
    """One job as the server knows it."""

    id: str
    kind: str
    state: JobState
    progress: float = Field(ge=0.0, le=1.0)
    message: str = Field(description="Latest progress message (or why the job was interrupted).")
    error: JobError | None = Field(None, description="Set when `state` is `failed`.")
    artifacts: list[str] = Field(description="Files the job wrote, relative to the workspace; GET /artifacts/{name}.")
    params: dict[str, Any]
    cancel_requested: bool = Field(description="Cancel was asked for while the job ran; it stops at its next step.")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


def strict_params(params: type[BaseModel]) -> type[BaseModel]:
    """``params`` refusing unknown fields, so a misspelt parameter is an error instead of silently ignored."""
    if params.model_config.get("extra") == "forbid":
        return params
    return type(params.__name__, (params,), {"model_config": ConfigDict(**params.model_config, extra="forbid"),
                                             "__module__": params.__module__, "__doc__": params.__doc__})


def submit_body(kinds: dict[str, JobKind]) -> Any:
    """The ``POST /jobs`` body type: a union of ``{"kind": <name>, "params": <that kind's Params>}``, one per
    registered kind, discriminated by ``kind``."""
    variants = []
    for name, spec in sorted(kinds.items()):
        title = "Submit" + "".join(part.capitalize() for part in name.split("_"))
        variants.append(create_model(
            title,
            __config__=ConfigDict(extra="forbid"),
            kind=(Literal[name], Field(description="Job kind (see GET /kinds).")),
            params=(strict_params(spec.params), Field(description=f"Parameters of `{name}`.")),
        ))
    if len(variants) == 1:
        return Annotated[variants[0], Body()]
    return Annotated[Union[tuple(variants)], Body(discriminator="kind")]  # noqa: UP007 (runtime-built union)
