"""``RayWorker``: the backend's job queue dispatching to a Ray cluster (``lw serve --ray auto|ADDRESS``).

It has the local ``Worker``'s interface (start, stop, submit, cancel, live), so the HTTP API does not change.
Every submitted job becomes one ``run_job`` Ray task with the resources of ``tasks.placement``; Ray schedules
them (no scheduler of ours), so jobs run side by side as far as the cluster's CPUs and GPUs allow. One monitor
thread polls the tasks (``ray.wait``) and the ``JobBoard`` every ``POLL_S``:

- a job becomes ``running`` when its task reports that it started (it stays ``queued`` while Ray has no room);
- its progress and message are kept in memory (``live``) and written to SQLite at most every
  ``PROGRESS_WRITE_INTERVAL_S``;
- a finished task's result or error becomes the job's final state, exactly as the local worker maps them.

Cancel: a queued job is cancelled at once (and its pending task with ``ray.cancel``); a running one gets the
board's cancel flag, which its task turns into the cooperative ``JobContext.cancel_event``. A task still running
``cancel_grace_s`` later (a job kind that never reports) is stopped with ``ray.cancel(force=True)``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from pydantic import TypeAdapter

from ..errors import JobCancelled, LWError
from ..jobs import JobKind, PathPolicy
from ..server.models import TRACEBACK_FRAMES, JobError, JobRecord
from ..server.store import INTERRUPTED_MESSAGE, JobStore
from ..server.worker import PROGRESS_WRITE_INTERVAL_S
from .board import JobBoard, connect
from .tasks import JOB_KEY, cluster_has_gpus, placement, run_job

log = logging.getLogger(__name__)

POLL_S = 0.1
CANCEL_GRACE_S = 30.0
STOP_TIMEOUT_S = 10.0
_ARTIFACTS = TypeAdapter(list[str])


@dataclass
class _Task:
    ref: ray.ObjectRef
    started: bool = False
    cancel_at: float | None = None  # monotonic time cancel was asked for
    forced: bool = False
    last_write: float = 0.0


class RayWorker:
    """Runs the jobs of ``store`` as Ray tasks on the cluster at ``address`` (see ``board.connect``)."""

    def __init__(self, store: JobStore, kinds: dict[str, JobKind], workspace: Path, address: str,
                 cancel_grace_s: float = CANCEL_GRACE_S, policy: PathPolicy | None = None):
        self.store = store
        self.kinds = kinds
        self.workspace = Path(workspace)
        self.policy = policy or PathPolicy()
        self.address = address
        self.cancel_grace_s = cancel_grace_s
        self._owns_ray = connect(address)
        self.board = JobBoard.remote()
        self._gpus = cluster_has_gpus()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()  # guards _tasks, _live, _stopping
        self._tasks: dict[str, _Task] = {}
        self._live: dict[str, tuple[float, str]] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="lw-ray-dispatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Ask every job to stop, wait up to ``timeout`` s, force-cancel what is left; unfinished jobs end
        ``interrupted``. Shuts Ray down if this worker started it."""
        with self._lock:
            self._stopping = True
            for job_id in self._tasks:
                self.board.cancel.remote(job_id)
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            for task in self._tasks.values():
                ray.cancel(task.ref, force=True)
        if self._thread.is_alive():  # it records the force-cancelled tasks as interrupted
            self._thread.join(timeout)
        self.store.interrupt_unfinished()
        if self._owns_ray:
            ray.shutdown()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def cancel(self, job_id: str) -> None:
        """Cancel a queued job now (its Ray task, if pending, is dropped), or ask a running one to stop at its
        next step. Finished jobs are left as they are."""
        with self._lock:
            task = self._tasks.get(job_id)
            if self.store.cancel_queued(job_id):
                if task is not None:
                    self.board.cancel.remote(job_id)
                    ray.cancel(task.ref)
                return
            if task is not None and task.cancel_at is None:
                task.cancel_at = time.monotonic()
                self.board.cancel.remote(job_id)
                self.store.request_cancel(job_id)

    def live(self, record: JobRecord) -> JobRecord:
        """``record`` with the running job's latest progress and message."""
        with self._lock:
            live = self._live.get(record.id)
        if live is None or record.state != "running":
            return record
        return record.model_copy(update={"progress": live[0], "message": live[1]})

    def _dispatch(self, job_id: str) -> None:
        record = self.store.get(job_id)
        if record is None or record.state != "queued":
            return
        where = placement(record.kind, self._gpus)
        ref = run_job.options(**where.options()).remote(str(self.workspace), job_id, record.kind, record.params,
                                                        self.board, self.policy)
        with self._lock:
            self._tasks[job_id] = _Task(ref)

    def _loop(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception:  # a store or Ray hiccup must not kill the monitor; the jobs stay visible
                if self._stopping:
                    return
                log.exception("Ray dispatch monitor failed; retrying")
                time.sleep(POLL_S)

    def _step(self) -> bool:
        """One poll; False when the worker is stopping and nothing runs any more."""
        with self._lock:
            tasks = dict(self._tasks)
        try:
            job_id = self._queue.get(timeout=0 if tasks else POLL_S)
            while job_id is not None:
                if not self._stopping:
                    self._dispatch(job_id)
                job_id = self._queue.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            tasks = dict(self._tasks)
            stopping = self._stopping
        if not tasks:
            return not stopping
        refs = {t.ref: job_id for job_id, t in tasks.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S)
        reports = ray.get(self.board.reports.remote(list(tasks)))
        now = time.monotonic()
        for job_id, task in tasks.items():
            report = reports[job_id].get(JOB_KEY)
            if report is not None:
                self._started(job_id, task)
                with self._lock:
                    self._live[job_id] = (report.fraction, report.message)
                if now - task.last_write >= PROGRESS_WRITE_INTERVAL_S:
                    task.last_write = now
                    self.store.set_progress(job_id, report.fraction, report.message)
            if task.cancel_at is not None and not task.forced and now - task.cancel_at > self.cancel_grace_s:
                task.forced = True
                ray.cancel(task.ref, force=True)
        for ref in ready:
            self._finish(refs[ref], tasks[refs[ref]])
        return True

    def _started(self, job_id: str, task: _Task) -> None:
        if not task.started:
            task.started = True
            self.store.start(job_id)  # False when it was cancelled while queued: the record stays cancelled

    def _finish(self, job_id: str, task: _Task) -> None:
        self._started(job_id, task)
        with self._lock:
            fraction = self._live.get(job_id, (0.0, ""))[0]
            stopping = self._stopping
        try:
            artifacts = _ARTIFACTS.validate_python(ray.get(task.ref))
        except Exception as exc:  # noqa: BLE001 (the job boundary: any error becomes the job's final state)
            state, message, error = outcome(exc, stopping)
            self.store.finish(job_id, state, message=message, progress=fraction, error=error)
        else:
            self.store.finish(job_id, "succeeded", message="done", progress=1.0, artifacts=artifacts)
        finally:
            self.board.forget.remote(job_id)
            with self._lock:
                self._tasks.pop(job_id, None)
                self._live.pop(job_id, None)


def outcome(exc: Exception, stopping: bool) -> tuple[str, str, JobError | None]:
    """(state, message, error) of a job whose task ended with ``exc``, mapped as the local worker maps a job
    function's errors; ``stopping``: the backend is shutting down (a cancelled job is then ``interrupted``)."""
    if isinstance(exc, ray.exceptions.TaskCancelledError):
        exc = JobCancelled("cancelled by the user (its Ray task was stopped)")
    remote_tb = ""
    if isinstance(exc, ray.exceptions.RayTaskError):
        remote_tb = str(exc)  # "ray::run_job() (pid=..., ip=...)" and the task's traceback
        exc = exc.cause if isinstance(exc.cause, BaseException) else exc
    if isinstance(exc, JobCancelled):
        return ("interrupted", INTERRUPTED_MESSAGE, None) if stopping else ("cancelled", str(exc), None)
    if isinstance(exc, LWError):
        error = JobError.of(exc)
        return "failed", error.message, error
    if isinstance(exc, ray.exceptions.RayError):  # the worker or its node died, and retries (if any) ran out
        return "failed", f"the Ray worker running this job died: {exc}", JobError(type=type(exc).__name__,
                                                                                 message=str(exc))
    lines = [line for line in remote_tb.strip().splitlines() if line.strip()][-2 * TRACEBACK_FRAMES:]
    error = JobError.of(exc, "\n".join(lines) or None)
    return "failed", error.summary, error
