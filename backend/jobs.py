"""Job kinds: plain functions the server schedules, independent of HTTP.

A job kind is a function ``fn(ctx: JobContext, params: P) -> list[str]`` registered with ``@job_kind(name, P)``
where ``P`` is a pydantic model describing its parameters (it becomes part of the OpenAPI schema). The function
reports progress through ``ctx.progress`` (which also raises ``JobCancelled`` when cancel was requested), writes
its files under ``ctx.job_dir`` (atomically where a reader could see a half-written file) and returns the
artifact names: paths relative to ``ctx.workspace``.

Every job kind can be called from a test or the CLI with ``run_inline`` (no server, no thread).

Modules that define job kinds are listed in ``JOB_MODULES`` and imported lazily by ``registry()``, so that
``import backend.jobs`` stays cheap.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from .errors import InvalidInput, JobCancelled

# Modules whose import registers job kinds. Add yours here.
JOB_MODULES: list[str] = [
    "backend.server.builtin_jobs",
    "backend.io.jobs",
    "backend.render.jobs",
    "backend.world.jobs",
    "backend.world.motion.jobs",
    "backend.moe.jobs",
    "backend.moe.jobs_mixture",
]


@dataclass(frozen=True)
class JobKind:
    name: str
    params: type[BaseModel]
    fn: Callable[[JobContext, BaseModel], list[str]]
    doc: str


_KINDS: dict[str, JobKind] = {}


def job_kind(name: str, params: type[BaseModel]):
    """Register ``fn`` as the job kind ``name`` taking ``params``."""

    def deco(fn):
        if name in _KINDS and _KINDS[name].fn is not fn:
            raise RuntimeError(f"job kind {name!r} registered twice")
        _KINDS[name] = JobKind(name, params, fn, (fn.__doc__ or "").strip())
        return fn

    return deco


def registry() -> dict[str, JobKind]:
    """All job kinds, importing every module of ``JOB_MODULES`` that exists."""
    for mod in JOB_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency inside an existing module: surface it
                raise
    return dict(_KINDS)


@dataclass
class JobContext:
    """What a running job sees: where to write, how to report, whether to stop."""

    workspace: Path
    job_dir: Path
    job_id: str = "inline"
    on_progress: Callable[[float, str], None] | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1]; raises ``JobCancelled`` if cancel was requested (cooperative cancel)."""
        if self.cancel_event.is_set():
            raise JobCancelled("cancelled by the user")
        if self.on_progress is not None:
            self.on_progress(min(max(float(fraction), 0.0), 1.0), message)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled("cancelled by the user")

    def resolve(self, user_path: str) -> Path:
        """A path given by the user: absolute paths are used as they are (local files the user chose);
        relative ones are taken inside the workspace and may not escape it."""
        p = Path(user_path).expanduser()
        if p.is_absolute():
            return p
        full = (self.workspace / p).resolve()
        if not full.is_relative_to(self.workspace.resolve()):
            raise InvalidInput(f"path {user_path!r} leaves the workspace")
        return full

    def artifact(self, path: Path) -> str:
        """Artifact name (relative to the workspace) of a file this job wrote."""
        return Path(path).resolve().relative_to(self.workspace.resolve()).as_posix()


def run_inline(kind: str, params: dict | BaseModel, workspace: Path, job_id: str = "inline",
               on_progress: Callable[[float, str], None] | None = None) -> list[str]:
    """Run a job kind synchronously (tests, CLI)."""
    spec = registry().get(kind)
    if spec is None:
        raise InvalidInput(f"unknown job kind {kind!r}; known: {sorted(registry())}")
    p = params if isinstance(params, BaseModel) else spec.params.model_validate(params)
    workspace = Path(workspace)
    job_dir = workspace / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(workspace=workspace, job_dir=job_dir, job_id=job_id, on_progress=on_progress)
    return spec.fn(ctx, p)
