"""The job worker: one thread that runs queued jobs one at a time through their job kind (``backend.jobs``).

Cancel is cooperative: a queued job is cancelled at once; a running one has its ``threading.Event`` set and
stops with ``JobCancelled`` at its next ``ctx.progress``. Progress goes to SQLite at most every
``PROGRESS_WRITE_INTERVAL_S`` (a training loop may report thousands of times a second); the freshest value is
kept in memory and ``Worker.live`` lays it over the stored record, so readers never see a stale fraction.

A job whose end cannot be recorded (the disk is full) never looks alive: ``JobStore.finish`` keeps it in memory.
A progress write that fails does not stop the job (the fraction stays in memory). Errors are recorded by
``JobError.of``: one line for bad input and OS errors (a full disk is ``DiskFull``), a traceback for bugs only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from pydantic import TypeAdapter

from ..errors import JobCancelled
from ..jobs import JobContext, JobKind, PathPolicy, run_job
from .models import JobError, JobRecord
from .store import INTERRUPTED_MESSAGE, JobStore

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.25
_ARTIFACTS = TypeAdapter(list[str])


class Worker:
    """Runs jobs from ``store`` one at a time on a background thread."""

    def __init__(self, store: JobStore, kinds: dict[str, JobKind], workspace: Path,
                 policy: PathPolicy | None = None):
        self.store = store
        self.kinds = kinds
        self.workspace = Path(workspace)
        self.policy = policy or PathPolicy()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()  # guards _running and _live, and orders start vs cancel
        self._running: tuple[str, threading.Event] | None = None
        self._live: tuple[str, float, str] | None = None
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
        they are."""
        with self._lock:
            if self.store.cancel_queued(job_id):
                return
            if self._running is not None and self._running[0] == job_id:
                self._running[1].set()
                self.store.request_cancel(job_id)

    def live(self, record: JobRecord) -> JobRecord:
        """``record`` with the running job's latest in-memory progress and message."""
        with self._lock:
            live = self._live
        if live is None or live[0] != record.id or record.state != "running":
            return record
        return record.model_copy(update={"progress": live[1], "message": live[2]})

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping:
                return
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
                error = JobError.of(exc)
                self.store.finish(job_id, "failed", message=f"the job could not start: {error.summary}", error=error)
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
                self.store.finish(job_id, "interrupted", message=INTERRUPTED_MESSAGE, progress=latest[0])
            else:
                self.store.finish(job_id, "cancelled", message=str(exc), progress=latest[0])
        except Exception as exc:  # noqa: BLE001 (the job boundary: any error becomes the job's `failed` state)
            error = JobError.of(exc)
            self.store.finish(job_id, "failed", message=error.summary, progress=latest[0], error=error)
        else:
            self.store.finish(job_id, "succeeded", message="done", progress=1.0, artifacts=artifacts)
        finally:
            with self._lock:
                self._running = None
                self._live = None
