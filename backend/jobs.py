"""Job kinds: plain functions the server schedules, independent of HTTP.

A job kind is a function ``fn(ctx: JobContext, params: P) -> list[str]`` registered with ``@job_kind(name, P)``
where ``P`` is a pydantic model describing its parameters (it becomes part of the OpenAPI schema). The function
reports progress through ``ctx.progress`` (which also raises ``JobCancelled`` when cancel was requested), writes
its files under ``ctx.job_dir`` (atomically where a reader could see a half-written file) and returns the
artifact names: paths relative to ``ctx.workspace``.

Every job kind can be called from a test or the CLI with ``run_inline`` (no server, no thread).

Paths. ``ctx.resolve`` turns a path a user gave into a ``Path`` and applies the server's ``PathPolicy``: a backend
bound to loopback reads and writes wherever the OS user can (artists open their own photos); one bound to any
other address only inside the workspace and the ``lw serve --allow-path`` roots. A parameter that names an output
is declared ``Annotated[str, Output(KIND)]``; ``run_job`` checks every such parameter before the job function runs
(``JobContext.output``; at submit too, ``JobContext.at_submit``): never the workspace, a folder holding it, its job
store, lock, ``jobs/`` or anything in it but the job's own folder, the folder ``worlds`` itself (a new world or
other output inside it is fine), ``logs/``, a world folder or a path inside one, or a path inside a ``.lw4d`` folder;
never an existing path unless it is an earlier output of the same kind and the job's ``replace`` parameter is true
(``backend.io.outputs``).

Modules that define job kinds are listed in ``JOB_MODULES`` and imported lazily by ``registry()``, so that
``import backend.jobs`` stays cheap.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, StringConstraints

from .errors import InvalidInput, JobCancelled
from .io.outputs import OutputKind, check_output, remove_empty_folders

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


DB_NAME = "jobs.sqlite3"
# What a workspace holds for the backend itself: never a job's output, nor inside one (but a job's own folder).
WORKSPACE_RESERVED = frozenset({DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", f"{DB_NAME}.lock",
                                "jobs", "worlds", "logs"})


# A job parameter naming a torch device: refused at submit (422) unless torch could take it.
# torch.device takes "cuda:N" with N written without leading zeros ("cuda:01" raises; found by the fuzz test)
DeviceName = Annotated[str, StringConstraints(pattern=r"^(auto|cpu|cuda(:(0|[1-9][0-9]?))?)$")]


@dataclass(frozen=True)
class Output:
    """Marks a job parameter as an output path: ``out: Annotated[str, Output(LW4D)] = ""``. ``run_job`` checks it
    (``JobContext.output``) before the job function runs; the boolean parameter named ``replace`` (if the model
    has one) allows replacing an earlier output of the same kind."""

    kind: OutputKind
    replace: str = "replace"


@dataclass(frozen=True)
class PathPolicy:
    """Where jobs may read and write. ``roots`` None: anywhere the OS user can (a backend bound to loopback); else
    only inside these folders (the workspace and the ``lw serve --allow-path`` roots), judged after resolving
    ``..`` and symbolic links, so neither leads out."""

    roots: tuple[Path, ...] | None = None

    @staticmethod
    def confined(workspace: Path, allowed: tuple[Path, ...] = ()) -> PathPolicy:
        return PathPolicy(tuple(Path(p).expanduser().resolve() for p in (workspace, *allowed)))

    def check(self, path: Path, user_path: str) -> None:
        """Raise ``InvalidInput`` when ``path`` (given by the user as ``user_path``) lies outside every root."""
        if self.roots is not None and not any(_real(path, user_path).is_relative_to(r) for r in self.roots):
            raise InvalidInput(f"path {_shown(user_path)} is outside the folders this backend may use (its workspace"
                               " and the `lw serve --allow-path` roots); copy the file into the workspace or restart"
                               " the backend with --allow-path")

    def check_model(self, setting: str, what: str) -> None:
        """Raise ``InvalidInput`` when a model setting (``auto``, ``builtin``, a Hugging Face repo id or a local
        folder, ``backend.models.hub.load_local``) names a local folder outside every root. A setting is a local
        path as ``load_local`` takes it: absolute, starting with '.' or '~', or existing on disk; repo ids pass."""
        if self.roots is None or setting in ("auto", "builtin"):
            return
        try:
            p = Path(setting).expanduser()
            local = p.is_absolute() or setting.startswith((".", "~")) or p.exists()
        except (RuntimeError, OSError, ValueError):  # "~name" of an unknown user, a name the OS cannot take
            local = True
            p = Path(setting)
        if local:
            try:
                self.check(p, setting)
            except InvalidInput as exc:
                raise InvalidInput(f"{what}: {exc}") from None


def _shown(user_path: str) -> str:
    """A user's path for an error message: quoted, at most 200 characters."""
    return repr(user_path if len(user_path) <= 200 else user_path[:200] + "...")


def _holds(folder: Path, name: str) -> bool:
    try:
        return (folder / name).is_file()
    except OSError:  # a folder we may not look into holds nothing we know of
        return False


def _real(path: Path, user_path: str) -> Path:
    """``path`` with ``..`` and symbolic links resolved; ``InvalidInput`` for paths the OS cannot take."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # too long, NUL byte, symlink loop
        raise InvalidInput(f"path {_shown(user_path)} cannot be used: {getattr(exc, 'strerror', None) or exc}") \
            from None


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
    policy: PathPolicy = field(default_factory=PathPolicy)

    @staticmethod
    def at_submit(workspace: Path, policy: PathPolicy) -> JobContext:
        """The context that checks a job's outputs when it is submitted: the job has no id and no folder yet, so
        no path under ``jobs/`` is its own (each is refused)."""
        return JobContext(workspace=workspace, job_dir=workspace / "jobs", job_id="", policy=policy)

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
        relative ones are taken inside the workspace and may not escape it. Either must pass ``policy``."""
        if "\x00" in user_path:
            raise InvalidInput(f"path {_shown(user_path)} contains a NUL character")
        try:
            p = Path(user_path).expanduser()
        except RuntimeError:  # "~name" of a user this machine does not have
            raise InvalidInput(f"path {_shown(user_path)} starts with the home folder of an unknown user") from None
        if not p.is_absolute():
            p = _real(self.workspace / p, user_path)
            if not p.is_relative_to(self.workspace.resolve()):
                raise InvalidInput(f"path {_shown(user_path)} leaves the workspace")
        self.policy.check(p, user_path)
        return p

    def output(self, user_path: str, kind: OutputKind, replace: bool = False) -> Path:
        """``resolve(user_path)`` checked as a place to write ``kind`` (see the module docstring); raises
        ``InvalidInput`` saying why and what to do, before anything is written."""
        try:
            return self._output(user_path, kind, replace)
        except OSError as exc:  # a name too long for the OS, a folder we may not look into
            raise InvalidInput(f"output {_shown(user_path)} cannot be used: {exc.strerror or exc}") from None

    def _output(self, user_path: str, kind: OutputKind, replace: bool) -> Path:
        path = self.resolve(user_path)
        shown = _shown(user_path)
        ws = _real(self.workspace, str(self.workspace))
        target = _real(path.parent, user_path) / path.name  # a link at the end is judged by check_output
        if target == ws or ws.is_relative_to(target):
            raise InvalidInput(f"output {shown} is the workspace or a folder holding it; give a new file or folder "
                               "inside it instead")
        if target.is_relative_to(ws):
            parts = target.relative_to(ws).parts
            own_job = (parts[0] == "jobs" and len(parts) > 2 and self.job_id != "" and
                       parts[1] == self.job_dir.name)
            if parts[0] in WORKSPACE_RESERVED and (len(parts) == 1 or parts[0] != "worlds") and not own_job:
                raise InvalidInput(f"output {shown} is {'inside ' if len(parts) > 1 else ''}the workspace's "
                                   f"{parts[0]!r}, which the backend keeps for itself; choose another output path")
        for folder in target.parents:
            if _holds(folder, "world.json"):
                raise InvalidInput(f"output {shown} is inside the world folder {folder}; worlds change only "
                                   "through world jobs; choose another output path")
            if folder.suffix == ".lw4d" and _holds(folder, "manifest.json"):
                raise InvalidInput(f"output {shown} is inside the .lw4d sequence {folder}; choose another path")
        return check_output(path, kind, replace)

    def check_outputs(self, params: BaseModel) -> list[Path]:
        """``output`` for every parameter of ``params`` declared ``Output`` and given (not empty); returns the
        paths that do not exist yet (a failed job removes them again if it left them empty)."""
        fresh = []
        for name, info in type(params).model_fields.items():
            spec = next((m for m in info.metadata if isinstance(m, Output)), None)
            value = getattr(params, name)
            if spec is not None and value:
                path = self.output(value, spec.kind, bool(getattr(params, spec.replace, False)))
                if not path.exists():  # output() refused links and names the OS cannot take
                    fresh.append(path)
        return fresh

    def artifact(self, path: Path) -> str:
        """Artifact name (relative to the workspace) of a file this job wrote."""
        return Path(path).resolve().relative_to(self.workspace.resolve()).as_posix()

    def artifacts(self, paths) -> list[str]:
        """Artifact names of those of ``paths`` that lie inside the workspace (files a job wrote to a folder
        outside it, which the user chose, are not served by ``/artifacts``)."""
        root = self.workspace.resolve()
        return [self.artifact(p) for p in paths if Path(p).resolve().is_relative_to(root)]


def run_job(fn: Callable, ctx: JobContext, params: BaseModel, *args) -> list[str]:
    """Check every output of ``params`` (``JobContext.check_outputs``), make the job folder and call
    ``fn(ctx, params, *args)``. When it raises, the job folder and the outputs it created are removed if they
    hold no file (cancelled training keeps its checkpoints; a failed job leaves no empty ``jobs/<id>/``)."""
    fresh = ctx.check_outputs(params)
    existed = ctx.job_dir.is_dir()
    ctx.job_dir.mkdir(parents=True, exist_ok=True)
    try:
        return fn(ctx, params, *args)
    except BaseException:
        for path in fresh + ([] if existed else [ctx.job_dir]):
            remove_empty_folders(path)
        raise


def run_inline(kind: str, params: dict | BaseModel, workspace: Path, job_id: str = "inline",
               on_progress: Callable[[float, str], None] | None = None) -> list[str]:
    """Run a job kind synchronously (tests, CLI)."""
    spec = registry().get(kind)
    if spec is None:
        raise InvalidInput(f"unknown job kind {kind!r}; known: {sorted(registry())}")
    p = params if isinstance(params, BaseModel) else spec.params.model_validate(params)
    workspace = Path(workspace)
    ctx = JobContext(workspace=workspace, job_dir=workspace / "jobs" / job_id, job_id=job_id, on_progress=on_progress)
    return run_job(spec.fn, ctx, p)
