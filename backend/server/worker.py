"""The job worker: one thread that runs queued jobs one at a time through their job kind (``backend.jobs``).

Cancel is cooperative: a queued job is cancelled at once; a running one has its ``threading.Event`` set and
stops with ``JobCancelled`` at its next ``ctx.progress``. Progress goes to SQLite at most every
``PROGRESS_WRITE_INTERVAL_S`` (a training loop may report thousands of times a second); the freshest value is
kept in memory and ``Worker.live`` lays it over the stored record, so readers never see a stale fraction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from pathlib import Path

from pydantic import TypeAdapter

from ..errors import JobCancelled, LWError
from ..jobs import JobContext, JobKind
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


class Worker:
    """Runs jobs from ``store`` one at a time on a background thread."""

    def __init__(self, store: JobStore, kinds: dict[str, JobKind], workspace: Path):
        self.store = store
        self.kinds = kinds
        self.workspace = Path(workspace)
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
        self.store.interrupt_unfinished()

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
            if self._stopping or not self.store.start(job_id):
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
                self.store.set_progress(job_id, fraction, message)

        job_dir = self.workspace / "jobs" / job_id
        ctx = JobContext(workspace=self.workspace, job_dir=job_dir, job_id=job_id, on_progress=on_progress,
                         cancel_event=cancel)
        try:
            params = spec.params.model_validate(record.params)
            job_dir.mkdir(parents=True, exist_ok=True)
            artifacts = _ARTIFACTS.validate_python(spec.fn(ctx, params))
        except JobCancelled as exc:
            if self._stopping:
                self.store.finish(job_id, "interrupted", message=INTERRUPTED_MESSAGE, progress=latest[0])
            else:
                self.store.finish(job_id, "cancelled", message=str(exc), progress=latest[0])
        except LWError as exc:
            self.store.finish(job_id, "failed", message=str(exc), progress=latest[0],
                              error=JobError(type=type(exc).__name__, message=str(exc)))
        except Exception as exc:  # noqa: BLE001 (the job boundary: any error becomes the job's `failed` state)
            self.store.finish(job_id, "failed", message=f"{type(exc).__name__}: {exc}", progress=latest[0],
                              error=JobError(type=type(exc).__name__, message=str(exc),
                                             traceback=traceback_summary(exc)))
        else:
            self.store.finish(job_id, "succeeded", message="done", progress=1.0, artifacts=artifacts)
        finally:
            with self._lock:
                self._running = None
                self._live = None
