"""The job worker: one thread that runs queued jobs one at a time through their job kind (``backend.jobs``).

Cancel is cooperative: a queued job is cancelled at once; a running one has its ``threading.Event`` set and
stops with ``JobCancelled`` at its next ``ctx.progress``. Progress goes to SQLite at most every
``PROGRESS_WRITE_INTERVAL_S`` (a training loop may report thousands of times a second); the freshest value is
kept in memory and ``Worker.live`` lays it over the stored record, so readers never see a stale fraction.

A job whose end cannot be recorded (the disk is full, so SQLite refuses the UPDATE) never looks alive: its final
state is kept in memory, laid over the stored record by ``live`` (cancel then finds it finished), and written
again before every later job and on every cancel; a backend started later marks it ``interrupted``. A progress
write that fails does not stop the job (the fraction stays in memory).
"""

from __future__ import annotations

import errno
import logging
import queue
import sqlite3
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter

from ..errors import JobCancelled, LWError, one_line
from ..jobs import JobContext, JobKind, PathPolicy, run_job
from .models import JobError, JobRecord
from .store import INTERRUPTED_MESSAGE, JobStore

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.25
TRACEBACK_FRAMES = 6
_ARTIFACTS = TypeAdapter(list[str])


def traceback_summary(exc: BaseException, frames: int = TRACEBACK_FRAMES) -> str:
    """The last ``frames`` frames of ``exc``'s traceback plus its one-line description."""
    stack = traceback.extract_tb(exc.__traceback__)[-frames:]
    lines = [f'{f.filename}:{f.lineno} in {f.name}: {(f.line or "").strip()}' for f in stack]
    return "\n".join([*lines, f"{type(exc).__name__}: {exc}"])


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def failure(exc: BaseException, remote_traceback: str | None = None) -> JobError:
    """How a job's error is recorded: an ``LWError`` as it is; a full disk or another OS error as one line naming
    the file and what to do (no traceback: there is no bug to find); anything else (a bug) with its type and the
    last frames of its traceback (``remote_traceback`` when it ran elsewhere)."""
    if isinstance(exc, LWError):
        return JobError(type=type(exc).__name__, message=one_line(str(exc)))
    where = one_line(f" writing {exc.filename}") if isinstance(exc, OSError) and exc.filename else ""
    if _disk_full(exc):
        return JobError(type="DiskFull", message=f"no space left on the device{where}; free some space and run the "
                                                 "job again (nothing half-written was kept)")
    if isinstance(exc, OSError):
        verb = where.replace(" writing", " at") if where else ""
        return JobError(type=type(exc).__name__, message=f"{exc.strerror or exc}{verb}; check that path and run "
                                                         "the job again")
    return JobError(type=type(exc).__name__, message=str(exc), traceback=remote_traceback or traceback_summary(exc))


def failure_message(error: JobError) -> str:
    """The job's message for ``error``: a bug's names its type (``ZeroDivisionError: division by zero``)."""
    return error.message if error.traceback is None else f"{error.type}: {error.message}"


class Worker:
    """Runs jobs from ``store`` one at a time on a background thread."""

    def __init__(self, store: JobStore, kinds: dict[str, JobKind], workspace: Path,
                 policy: PathPolicy | None = None):
        self.store = store
        self.kinds = kinds
        self.workspace = Path(workspace)
        self.policy = policy or PathPolicy()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()  # guards _running, _live and _unrecorded, and orders start vs cancel
        self._running: tuple[str, threading.Event] | None = None
        self._live: tuple[str, float, str] | None = None
        self._unrecorded: dict[str, tuple] = {}  # job id -> (state, finish() fields, when) the store refused
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="lw-job-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the running job to stop, wait up to ``timeout`` s, then mark whatever is left ``interrupted``."""
        with self._lock:
            self._stopping = True
            if self._running is not None:
                self._running[1].set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        try:
            self.store.interrupt_unfinished()
        except Exception as exc:  # noqa: BLE001 (disk full: the next backend on this workspace marks them)
            log.warning("cannot mark unfinished jobs interrupted: %s", exc)

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def cancel(self, job_id: str) -> None:
        """Cancel a queued job now, or ask a running one to stop at its next step. Finished jobs are left as
        they are (a job whose end could not be recorded is finished: its record is written again now)."""
        self._record_pending()
        with self._lock:
            if job_id in self._unrecorded:
                return
            if self.store.cancel_queued(job_id):
                return
            if self._running is not None and self._running[0] == job_id:
                self._running[1].set()
                self.store.request_cancel(job_id)

    def live(self, record: JobRecord) -> JobRecord:
        """``record`` with the running job's latest in-memory progress and message, or the final state of a job
        whose end the store could not record."""
        with self._lock:
            live = self._live
            ended = self._unrecorded.get(record.id)
        if ended is not None and record.state in ("queued", "running"):
            state, fields, finished_at = ended
            return record.model_copy(update={"state": state, "finished_at": finished_at,
                                             **{k: v for k, v in fields.items() if v is not None}})
        if live is None or live[0] != record.id or record.state != "running":
            return record
        return record.model_copy(update={"progress": live[1], "message": live[2]})

    def _finish(self, job_id: str, state: str, **fields) -> None:
        """``store.finish``; when the store cannot write (disk full) the end is kept in ``_unrecorded`` and
        written by ``_record_pending`` later."""
        try:
            self.store.finish(job_id, state, **fields)
        except Exception as exc:  # noqa: BLE001 (any store failure: the job must still end)
            log.warning("cannot record the end of job %s (%s): %s", job_id, state, exc)
            if state == "succeeded":  # its artifacts may be what filled the disk; say that it is not recorded
                state, fields = "failed", {"message": f"the job finished but its record could not be written ({exc})"
                                                      "; free some space and run it again",
                                           "progress": 1.0, "error": failure(exc)}
            with self._lock:
                self._unrecorded[job_id] = (state, fields, datetime.now(UTC))

    def _record_pending(self) -> None:
        """Write the ends the store refused before (they stay pending while it still refuses)."""
        with self._lock:
            pending = dict(self._unrecorded)
        for job_id, (state, fields, _) in pending.items():
            try:
                self.store.finish(job_id, state, **fields)
            except Exception as exc:  # noqa: BLE001 (still full: try again later)
                log.debug("job %s: its end is still not recorded: %s", job_id, exc)
                continue
            with self._lock:
                self._unrecorded.pop(job_id, None)

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping:
                return
            self._record_pending()
            try:
                self._run(job_id)
            except Exception:  # a store failure must not kill the worker thread; the job stays visible
                log.exception("worker failed on job %s", job_id)

    def _run(self, job_id: str) -> None:
        record = self.store.get(job_id)
        spec = self.kinds[record.kind]
        cancel = threading.Event()
        with self._lock:
            try:
                if self._stopping or not self.store.start(job_id):
                    return
            except Exception as exc:  # noqa: BLE001 (disk full: the job cannot even be marked running)
                error = failure(exc)
                self._unrecorded[job_id] = ("failed", {"message": f"the job could not start: {failure_message(error)}",
                                                       "error": error}, datetime.now(UTC))
                return
            self._running = (job_id, cancel)
            self._live = (job_id, 0.0, "")
        last_write = [0.0]
        latest = [0.0]  # the fraction a cancelled or failed job ends with

        def on_progress(fraction: float, message: str) -> None:
            latest[0] = fraction
            with self._lock:
                self._live = (job_id, fraction, message)
            now = time.monotonic()
            if now - last_write[0] >= PROGRESS_WRITE_INTERVAL_S:
                last_write[0] = now
                try:
                    self.store.set_progress(job_id, fraction, message)
                except Exception as exc:  # noqa: BLE001 (disk full: the job goes on, its fraction is in memory)
                    log.warning("cannot record the progress of job %s: %s", job_id, exc)

        ctx = JobContext(workspace=self.workspace, job_dir=self.workspace / "jobs" / job_id, job_id=job_id,
                         on_progress=on_progress, cancel_event=cancel, policy=self.policy)
        try:
            params = spec.params.model_validate(record.params)
            artifacts = _ARTIFACTS.validate_python(run_job(spec.fn, ctx, params))
        except JobCancelled as exc:
            if self._stopping:
                self._finish(job_id, "interrupted", message=INTERRUPTED_MESSAGE, progress=latest[0])
            else:
                self._finish(job_id, "cancelled", message=str(exc), progress=latest[0])
        except Exception as exc:  # noqa: BLE001 (the job boundary: any error becomes the job's `failed` state)
            error = failure(exc)
            self._finish(job_id, "failed", message=failure_message(error), progress=latest[0], error=error)
        else:
            self._finish(job_id, "succeeded", message="done", progress=1.0, artifacts=artifacts)
        finally:
            with self._lock:
                self._running = None
                self._live = None
