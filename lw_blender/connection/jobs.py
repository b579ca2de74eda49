"""Running backend jobs from Blender: THE API that operators and other lw_blender modules use.

    from .connection import jobs         # a module of lw_blender/ (world.py, moe.py)
    from ..connection import jobs        # a module of a lw_blender/ subpackage (splats/render.py)
    from ..lw_blender.connection import jobs   # operators/, panels/

    jobs.ensure_backend(context) -> client.Client
        Connect to the remote backend (preferences ``backend_url``/``backend_token``) or start the local one
        (``backend_python``, ``workspace``); idempotent: a live connection is reused, a dead local backend is
        started again. Raises ``BackendError`` (``BackendStartError`` / ``BackendUnavailable``) with a message
        a user can act on; it is also written to ``wm.lw_runtime.last_error``.

    jobs.start_backend(context) -> Client | None
        What ``lw.backend_start`` does: ``ensure_backend`` in background mode; in the UI
        ``start_backend_async(context)``: the start runs on a worker thread (a local start takes seconds),
        ``wm.lw_runtime.connection`` is ``STARTING`` until ``drain_updates()`` applies ``CONNECTED`` or ``ERROR``.
    jobs.stop_backend(context), jobs.restart_backend(context) -> Client | None (same blocking rule).

    jobs.run_job_blocking(context, kind, params: dict, timeout=None) -> JobResult
        Submit and poll until the job ends (background mode, tests, scripts). Updates ``wm.lw_runtime`` as it
        goes. Raises ``JobFailed`` (with ``.result``) when the job ends ``failed|cancelled|interrupted`` or the
        backend dies; its message is the backend's reason and is also in ``wm.lw_runtime.last_error``.

    jobs.submit_job(context, kind, params: dict, on_done=None) -> job id
        UI mode: returns at once. A worker thread polls ``GET /jobs/{id}`` and puts records into a queue;
        the timer function ``drain_updates()`` applies them on the main thread (``wm.lw_runtime``, sidebar
        redraw) and finally calls ``on_done(result: JobResult)`` on the main thread for EVERY ending (check
        ``result.ok``; ``result.state`` is ``"interrupted"`` with ``error_type == "BackendUnavailable"`` when
        the backend died). Nothing touches bpy off the main thread. Timers never fire in background mode:
        there, call ``drain_updates()`` yourself until it returns None (tests do), or use run_job_blocking.

    jobs.run_job(context, kind, params, on_done=None) -> JobResult | None
        ``bpy.app.background``: run_job_blocking (raises ``JobFailed`` on any ending but ``succeeded``), then
        ``on_done(result)`` if given, returns the result. Otherwise submit_job and return None (``on_done`` runs
        later on the main thread, for every ending: check ``result.ok``).

    jobs.cancel_current(context) -> None        request cancel of the job shown in ``wm.lw_runtime``.

    JobResult (frozen): id, kind, state, artifacts: list[str] (names relative to the backend workspace),
        message, error_type, error_message, workspace: Path (local folder mirroring the backend workspace).
        ``result.path(name) -> Path``: local path of an artifact; the shared workspace for a local backend,
        downloaded once into the extension cache for a remote one. ``result.ok`` is ``state == "succeeded"``.

Errors: everything raised here derives from ``client.BackendError`` (``.type``, ``.message``).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from .. import preferences, state
from . import process
from .client import BackendError, BackendUnavailable, Client, JobRecord

POLL_INTERVAL = 0.1  # s between GET /jobs/{id} polls (worker thread and blocking loop), once a job runs a while
FIRST_POLL = 0.005  # s before the first poll; the wait doubles up to POLL_INTERVAL, so short jobs return fast
TIMER_INTERVAL = 0.1  # s between drain_updates() calls while jobs are in flight
BACKEND_STOPPED = "backend stopped unexpectedly"


@dataclass(frozen=True)
class JobResult:
    """How a job ended, and where its files are (see the module docstring)."""

    id: str
    kind: str
    state: str
    artifacts: list[str]
    message: str
    error_type: str
    error_message: str
    workspace: Path
    _client: Client | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"

    @property
    def remote(self) -> bool:
        """The backend's files are downloaded (a remote backend), not read in a shared workspace."""
        return self._client is not None and self._client.local_workspace is None

    def path(self, name: str) -> Path:
        """Local path of artifact ``name`` (downloaded and cached when the backend is remote)."""
        if self._client is None:
            raise BackendError("NoBackend", f"job {self.id} has no backend to fetch {name!r} from")
        return self._client.artifact_path(name)

    @classmethod
    def from_record(cls, rec: JobRecord, client: Client) -> JobResult:
        return cls(id=rec.id, kind=rec.kind, state=rec.state, artifacts=list(rec.artifacts), message=rec.message,
                   error_type=rec.error.type if rec.error else "", error_message=rec.error.message if rec.error else "",
                   workspace=client.artifact_root(), _client=client)


class JobFailed(BackendError):
    """A job ended in ``failed``, ``cancelled`` or ``interrupted`` (or its backend died); ``.result`` says how."""

    def __init__(self, result: JobResult):
        reason = result.error_message or result.message or result.state
        super().__init__(result.error_type or result.state, f"job {result.kind} {result.id} {result.state}: {reason}")
        self.result = result


def artifact(result: JobResult, suffix: str, error: type[Exception] = BackendError) -> str:
    """The name of ``result``'s first artifact ending in ``suffix``; ``error`` (message naming the job) if none."""
    for name in result.artifacts:
        if name.endswith(suffix):
            return name
    message = f"job {result.kind} {result.id} returned no {suffix} (artifacts: {result.artifacts})"
    raise error("MissingArtifact", message) if error is BackendError else error(message)


# A link of a job chain: (kind, params, then), or (kind, params, then, True) for an optional job (``optional``).
# ``then(context, result)`` runs when the job succeeded (an optional job's also when it did not: check
# ``result.ok``) and returns the next link, or None to end the chain.
Link = tuple  # (str, dict, Callable[[object, JobResult], Link | None]) or with a fourth element, optional: bool


def optional(kind: str, params: dict, then: Callable[[object, JobResult], Link | None]) -> Link:
    """A chain link whose failure does not fail the action: ``then`` gets the failed result (``result.ok`` is
    false; ``result.error_message`` says why) and the chain goes on as it decides (an extra measurement after the
    real work, say)."""
    return (kind, params, then, True)


def _unpack(link: Link) -> tuple[str, dict, Callable, bool]:
    kind, params, then, *rest = link
    return kind, params, then, bool(rest and rest[0])


class Chain:
    """Jobs of one user action run one after the other, each link choosing the next from its result; one action
    at a time per chain (the world's, the MoE's). Blocking (the background/bpy-console default) raises
    ``JobFailed``; otherwise the jobs run through ``submit_job`` and a failure is left in
    ``wm.lw_runtime.last_error`` like any job's, and the chain ends there. An ``optional`` link's failure does
    neither: its ``then`` gets the failed result (its ending is still in ``wm.lw_runtime`` like any job's)."""

    def __init__(self, error: type[Exception]):
        self.error = error
        self.busy = ""  # label of the action whose jobs run ("" when none)

    def run(self, context, label: str, first: Link, blocking: bool | None) -> None:
        if self.busy:
            raise self.error(f"{self.busy} is still running: wait for it or cancel it")
        blocking = bpy.app.background if blocking is None else blocking
        self.busy = label
        if blocking:
            try:
                link = first
                while link is not None:
                    kind, params, then, may_fail = _unpack(link)
                    try:
                        result = run_job_blocking(context, kind, params)
                    except JobFailed as exc:
                        if not may_fail:
                            raise
                        result = exc.result
                    link = then(context, result)
            finally:
                self.busy = ""
            return

        def submit(link: Link) -> None:
            kind, params, then, may_fail = _unpack(link)

            def done(result: JobResult) -> None:
                following = None
                try:
                    if result.ok or may_fail:
                        following = then(bpy.context, result)
                finally:
                    if following is None:
                        self.busy = ""
                if following is not None:
                    submit(following)

            try:
                submit_job(bpy.context, kind, params, done)
            except BaseException:
                self.busy = ""
                raise

        submit(first)


# --- connection ----------------------------------------------------------------------------------------------

_client: Client | None = None


def _interrupted(job_id: str, kind: str, client: Client, reason: str) -> JobResult:
    return JobResult(id=job_id, kind=kind, state="interrupted", artifacts=[], message=reason,
                     error_type="BackendUnavailable", error_message=f"{BACKEND_STOPPED}: {reason}",
                     workspace=client.artifact_root(), _client=client)


def _set_connection(rt, client: Client | None, error: str = "") -> None:
    rt.connection = "CONNECTED" if client is not None else ("ERROR" if error else "DISCONNECTED")
    rt.url = client.url if client is not None else ""
    rt.remote = client is not None and client.local_workspace is None
    proc = process.current()
    rt.backend_pid = proc.info.pid if client is not None and proc is not None and not rt.remote else 0
    if error:
        rt.last_error = error


@dataclass(frozen=True)
class _Settings:
    """What a connection needs from the preferences, read on the main thread (worker threads never read bpy)."""

    backend_url: str
    backend_token: str
    backend_python: str
    workspace: Path | None  # local mode
    cache_dir: Path | None  # remote mode


def _settings(context) -> _Settings:
    prefs = preferences.get(context)
    if prefs.backend_url:
        server = urllib.parse.urlsplit(prefs.backend_url).netloc.replace(":", "_") or "remote"
        return _Settings(prefs.backend_url.rstrip("/"), prefs.backend_token, "", None,
                         preferences.cache_dir() / server)
    return _Settings("", "", prefs.backend_python, preferences.workspace_dir(prefs), None)


def _connect(s: _Settings) -> Client:
    """Start/connect per ``s``; no bpy, so it also runs on the start-up worker thread."""
    if s.backend_url:
        process.stop()  # switched to a remote backend: do not leave a local one behind
        client = Client(s.backend_url, s.backend_token, cache_dir=s.cache_dir)
        client.kinds()  # an authenticated route: a wrong token fails here, not at the first job
        return client
    info = process.start(s.backend_python, s.workspace)
    client = Client(info.url, info.token, local_workspace=info.workspace)
    client.health()
    return client


def _live(client: Client | None, s: _Settings) -> bool:
    """Whether ``client`` is what the preferences ask for and answers."""
    if client is None:
        return False
    if s.backend_url:
        if client.local_workspace is not None or (client.url, client.token) != (s.backend_url, s.backend_token):
            return False
    elif client.local_workspace is None or not process.is_alive():
        return False
    try:
        client.health(timeout=2.0)
    except BackendUnavailable:
        return False
    return True


def _connected(rt, client: Client) -> None:
    global _client
    _client = client
    _set_connection(rt, client)
    if rt.job_id and rt.job_state not in ("succeeded", "failed", "cancelled"):
        _refresh_current(rt, client)


def _forget_dead_client() -> None:
    """Drop a connection that stopped answering; if it was our local backend, make sure that process is gone
    (a SIGKILLed process can still look alive for a moment after its socket closed; a hung one must not linger)."""
    global _client
    if _client is not None and _client.local_workspace is not None:
        process.stop()
    _client = None


def ensure_backend(context=None) -> Client:
    """Connect to (remote) or start (local) the backend per the preferences; idempotent. See module docstring."""
    context = context or bpy.context
    rt = state.runtime(context)
    s = _settings(context)
    if _live(_client, s):
        _set_connection(rt, _client)
        return _client
    _forget_dead_client()
    try:
        client = _connect(s)
    except BackendError as exc:
        _set_connection(rt, None, str(exc))
        raise
    _connected(rt, client)
    return client


@dataclass(frozen=True)
class _StartDone:
    client: Client | None
    error: str = ""


_starting = False


def start_backend_async(context=None) -> None:
    """UI mode: start/connect on a worker thread (a local start takes seconds); ``wm.lw_runtime.connection`` is
    ``STARTING`` until ``drain_updates()`` applies the outcome (``CONNECTED``, or ``ERROR`` with last_error)."""
    global _starting
    context = context or bpy.context
    rt = state.runtime(context)
    s = _settings(context)
    if _live(_client, s):
        _set_connection(rt, _client)
        return
    if _starting:
        return
    _forget_dead_client()
    _starting = True
    rt.connection, rt.url, rt.last_error = "STARTING", "", ""

    def work():
        try:
            _updates.put(_StartDone(_connect(s)))
        except BackendError as exc:
            _updates.put(_StartDone(None, str(exc)))

    threading.Thread(target=work, name="lw-backend-start", daemon=True).start()
    _ensure_timer()


def start_backend(context=None) -> Client | None:
    """``ensure_backend`` in background mode (returns the client), ``start_backend_async`` otherwise (None)."""
    if bpy.app.background:
        return ensure_backend(context)
    start_backend_async(context)
    return None


def _refresh_current(rt, client: Client) -> None:
    """After (re)connecting, show what the backend now says about the job that was current (e.g. interrupted)."""
    try:
        _apply_record(rt, client.job(rt.job_id))
    except BackendError as exc:
        if exc.status != 404:
            raise
        rt.message = f"job {rt.job_id} is unknown to this backend"


def stop_backend(context=None) -> None:
    """Stop the local backend this Blender started, or forget the remote connection."""
    global _client
    process.stop()
    _client = None
    _set_connection(state.runtime(context), None)


def restart_backend(context=None) -> Client | None:
    """Stop, then ``start_backend`` (blocking in background mode, asynchronous in the UI)."""
    stop_backend(context)
    return start_backend(context)


# --- runtime state ---------------------------------------------------------------------------------------------

def _apply_record(rt, rec: JobRecord) -> None:
    rt.job_id, rt.job_kind, rt.job_state = rec.id, rec.kind, rec.state
    rt.progress, rt.message = rec.progress, rec.message
    if rec.state in ("failed", "cancelled", "interrupted"):
        rt.last_error = f"{rec.kind} {rec.state}: " + (f"{rec.error.type}: {rec.error.message}" if rec.error
                                                       else rec.message or rec.state)


def _redraw(context) -> None:
    wm = context.window_manager
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def _submit(context, kind: str, params: dict) -> tuple[Client, JobRecord]:
    client = ensure_backend(context)
    rt = state.runtime(context)
    rec = client.submit(kind, params)
    rt.last_error = ""
    _apply_record(rt, rec)
    return client, rec


# --- blocking -----------------------------------------------------------------------------------------------------

def run_job_blocking(context, kind: str, params: dict, timeout: float | None = None) -> JobResult:
    """Submit ``kind`` with ``params`` and wait for it (see module docstring). ``timeout`` cancels the job."""
    context = context or bpy.context
    client, rec = _submit(context, kind, params)
    rt = state.runtime(context)
    deadline = None if timeout is None else time.monotonic() + timeout
    wait = FIRST_POLL
    while not rec.done:
        if deadline is not None and time.monotonic() > deadline:
            client.cancel(rec.id)
            raise JobFailed(JobResult(id=rec.id, kind=kind, state="cancelled", artifacts=[],
                                      message=f"timed out after {timeout} s", error_type="Timeout",
                                      error_message=f"timed out after {timeout} s; cancel requested",
                                      workspace=client.artifact_root(), _client=client))
        time.sleep(wait)
        wait = min(2 * wait, POLL_INTERVAL)
        try:
            rec = client.job(rec.id)
        except BackendUnavailable as exc:
            result = _interrupted(rec.id, kind, client, exc.message)
            _set_connection(rt, None, f"{kind} {rec.id}: {result.error_message}")
            rt.job_state = "interrupted"
            raise JobFailed(result) from None
        _apply_record(rt, rec)
    result = JobResult.from_record(rec, client)
    if not result.ok:
        raise JobFailed(result)
    return result


# --- UI mode: worker thread + main-thread timer ----------------------------------------------------------------

@dataclass(frozen=True)
class _Update:
    job_id: str
    kind: str
    record: JobRecord | None  # None with ``lost`` set: the backend stopped answering
    lost: str = ""


_updates: queue.Queue[_Update | _StartDone] = queue.Queue()
_pending: dict[str, tuple[Client, Callable[[JobResult], None] | None]] = {}
_stop_polling = threading.Event()


def _poll(client: Client, job_id: str, kind: str) -> None:
    """Worker thread: poll one job until it ends or the backend is gone; never touches bpy."""
    last = None
    wait = FIRST_POLL
    while not _stop_polling.is_set():
        try:
            rec = client.job(job_id)
        except BackendUnavailable as exc:
            _updates.put(_Update(job_id, kind, None, exc.message))
            return
        except BackendError as exc:
            _updates.put(_Update(job_id, kind, JobRecord(job_id, kind, "failed", message=str(exc))))
            return
        except Exception as exc:  # noqa: BLE001  a dead poller would leave the job pending forever: end it visibly
            traceback.print_exc()
            _updates.put(_Update(job_id, kind, JobRecord(job_id, kind, "failed",
                                                         message=f"polling failed: {type(exc).__name__}: {exc}")))
            return
        if rec != last:
            _updates.put(_Update(job_id, kind, rec))
            last = rec
        if rec.done:
            return
        _stop_polling.wait(wait)
        wait = min(2 * wait, POLL_INTERVAL)


def submit_job(context, kind: str, params: dict, on_done: Callable[[JobResult], None] | None = None) -> str:
    """Submit without blocking; progress and ``on_done`` arrive via ``drain_updates`` (see module docstring)."""
    context = context or bpy.context
    client, rec = _submit(context, kind, params)
    _stop_polling.clear()
    _pending[rec.id] = (client, on_done)
    threading.Thread(target=_poll, args=(client, rec.id, kind), name=f"lw-poll-{rec.id}", daemon=True).start()
    _ensure_timer()
    return rec.id


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(drain_updates):
        bpy.app.timers.register(drain_updates, first_interval=TIMER_INTERVAL)


def pending_jobs() -> list[str]:
    """Ids of submitted jobs whose ``on_done`` has not run yet."""
    return list(_pending)


def drain_updates() -> float | None:
    """Main thread (timer body): apply queued job updates to ``wm.lw_runtime``, redraw, call ``on_done``.

    Also applies the outcome of ``start_backend_async``. Returns the next timer interval while jobs are pending or
    the backend is starting, else None (which also unregisters the timer).
    """
    global _starting
    context = bpy.context
    rt = state.runtime(context)
    finished: list[tuple[Callable | None, JobResult]] = []
    while True:
        try:
            up = _updates.get_nowait()
        except queue.Empty:
            break
        if isinstance(up, _StartDone):
            _starting = False
            if up.client is not None:
                _connected(rt, up.client)
            else:
                _set_connection(rt, None, up.error)
            continue
        if up.job_id not in _pending:
            continue
        client, on_done = _pending[up.job_id]
        current = rt.job_id == up.job_id
        if up.record is None:
            result = _interrupted(up.job_id, up.kind, client, up.lost)
            _set_connection(rt, None, f"{up.kind} {up.job_id}: {result.error_message}")
            if current:
                rt.job_state = "interrupted"
        else:
            if current:
                _apply_record(rt, up.record)
            if not up.record.done:
                continue
            result = JobResult.from_record(up.record, client)
        del _pending[up.job_id]
        finished.append((on_done, result))
    _redraw(context)
    for on_done, result in finished:
        if on_done is None:
            continue
        try:
            on_done(result)
        except Exception as exc:  # noqa: BLE001  shown (traceback + last_error); a raising timer would be unregistered
            traceback.print_exc()
            rt.last_error = f"{result.kind} {result.id}: applying the result failed: {type(exc).__name__}: {exc}"
    return TIMER_INTERVAL if _pending or _starting else None


def run_job(context, kind: str, params: dict, on_done: Callable[[JobResult], None] | None = None) -> JobResult | None:
    """Blocking in background mode (returns the result, after ``on_done``), else ``submit_job`` (returns None)."""
    if bpy.app.background:
        result = run_job_blocking(context, kind, params)
        if on_done is not None:
            on_done(result)
        return result
    submit_job(context, kind, params, on_done)
    return None


def cancel_current(context=None) -> None:
    """Request cancel of the job shown in ``wm.lw_runtime`` (it ends ``cancelled`` at its next progress step)."""
    context = context or bpy.context
    rt = state.runtime(context)
    if not rt.job_id:
        raise BackendError("NoJob", "there is no current job to cancel")
    rec = ensure_backend(context).cancel(rt.job_id)
    _apply_record(rt, rec)


@persistent
def _on_load_post(*_args) -> None:
    """A newly loaded file brings a fresh WindowManager: show the live connection there again."""
    rt = state.runtime()
    _set_connection(rt, _client)


def register():
    _stop_polling.clear()
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister():
    global _client, _starting
    _stop_polling.set()
    _starting = False
    if bpy.app.timers.is_registered(drain_updates):
        bpy.app.timers.unregister(drain_updates)
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    _pending.clear()
    _client = None
