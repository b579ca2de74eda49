"""The job store: one SQLite file (``<workspace>/jobs.sqlite3``, WAL) that outlives the backend process.

A backend that starts on a workspace marks every job a previous process left ``queued`` or ``running`` as
``interrupted``, so a crash or a kill never leaves a job that looks alive. That is only right when no other
backend is using the workspace, so the store holds an exclusive OS file lock (``jobs.sqlite3.lock``) while open;
the OS drops it when the process dies, however it dies. State changes that race (a cancel arriving while the
worker picks a job up) are single conditional UPDATEs, so exactly one of them wins.

A job's end that SQLite refuses to write (the disk is full: "database or disk is full") is never lost and never
leaves the job looking alive: ``finish`` keeps it in memory (a ``succeeded`` end becomes ``failed``, since its
record is not safe), ``get`` and ``recent`` show it, cancel finds the job finished, and it is written with the next
write that succeeds; a backend started later on the workspace marks the job ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import LWError
from .models import JobError, JobRecord

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    artifacts TEXT NOT NULL DEFAULT '[]',
    params TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
)
"""

INTERRUPTED_MESSAGE = "the backend stopped before this job finished; submit it again"


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class WorkspaceBusy(LWError):
    """Another backend process is using this workspace."""


class _ProcessLock:
    """An exclusive, non-blocking lock on ``path`` held until ``release`` or process exit (flock / msvcrt)."""

    def __init__(self, path: Path):
        self._file = open(path, "a+")  # noqa: SIM115 (held open for the store's life: the lock lives on it)
        try:
            if sys.platform == "win32":
                import msvcrt

                self._file.seek(0)
                msvcrt.locking(self._file.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._holder()
            self._file.close()
            raise WorkspaceBusy(f"another backend (pid {holder}) is using the workspace {path.parent}; stop it or "
                                f"choose another --workspace") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def _holder(self) -> str:
        try:
            self._file.seek(0)
            return self._file.read().strip() or "unknown"
        except OSError:  # Windows refuses to read a locked byte range
            return "unknown"

    def release(self) -> None:
        self._file.close()  # closing the descriptor drops the lock


class JobStore:
    """Thread-safe access to the jobs table (one connection, serialised by a lock). Raises ``WorkspaceBusy``
    when another process has the store open."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._process_lock = _ProcessLock(self.path.with_name(self.path.name + ".lock"))
        self._lock = threading.RLock()  # the connection and ``_pending`` (re-entered: pending ends are written inside)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._pending: dict[str, tuple[dict[str, Any], float]] = {}  # job id -> (end fields, time) not yet written

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._process_lock.release()

    def _execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _fetch(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _record(self, row: sqlite3.Row) -> JobRecord:
        record = JobRecord(
            id=row["id"], kind=row["kind"], state=row["state"], progress=row["progress"], message=row["message"],
            error=None if row["error"] is None else JobError.model_validate_json(row["error"]),
            artifacts=json.loads(row["artifacts"]), params=json.loads(row["params"]),
            cancel_requested=bool(row["cancel_requested"]), created_at=_time(row["created_at"]),
            started_at=_time(row["started_at"]), finished_at=_time(row["finished_at"]),
        )
        with self._lock:
            pending = self._pending.get(record.id)
        if pending is None or record.state not in ("queued", "running"):
            return record
        end, when = pending
        return record.model_copy(update={**{k: v for k, v in end.items() if v is not None}, "finished_at": _time(when)})

    def _record_pending(self) -> None:
        """Write the ends SQLite refused before; they stay pending while it still refuses."""
        with self._lock:
            for job_id, (end, when) in list(self._pending.items()):
                try:
                    self._write_end(job_id, end, when)
                except sqlite3.Error:
                    return
                self._pending.pop(job_id, None)

    def create(self, kind: str, params: dict[str, Any]) -> JobRecord:
        """A new ``queued`` job."""
        self._record_pending()
        job_id = uuid.uuid4().hex
        self._execute("INSERT INTO jobs (id, kind, state, params, created_at) VALUES (?, ?, 'queued', ?, ?)",
                      (job_id, kind, json.dumps(params), time.time()))
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._fetch("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._record(rows[0]) if rows else None

    def recent(self, limit: int) -> list[JobRecord]:
        """The ``limit`` most recent jobs, newest first."""
        return [self._record(r) for r in self._fetch("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))]

    def interrupt_unfinished(self) -> int:
        """Mark every ``queued``/``running`` job ``interrupted``; returns how many."""
        cur = self._execute(
            "UPDATE jobs SET state = 'interrupted', message = ?, finished_at = ? "
            "WHERE state IN ('queued', 'running')", (INTERRUPTED_MESSAGE, time.time()))
        return cur.rowcount

    def start(self, job_id: str) -> bool:
        """``queued`` -> ``running``; False when the job is no longer queued (it was cancelled)."""
        self._record_pending()
        cur = self._execute("UPDATE jobs SET state = 'running', started_at = ? WHERE id = ? AND state = 'queued'",
                            (time.time(), job_id))
        return cur.rowcount == 1

    def cancel_queued(self, job_id: str) -> bool:
        """``queued`` -> ``cancelled``; False when the job is not queued (an end kept in memory counts as finished)."""
        with self._lock:
            self._record_pending()
            if job_id in self._pending:
                return False
            cur = self._execute(
                "UPDATE jobs SET state = 'cancelled', message = 'cancelled before it started', finished_at = ? "
                "WHERE id = ? AND state = 'queued'", (time.time(), job_id))
            return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._pending:
                return
            self._execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,))

    def set_progress(self, job_id: str, progress: float, message: str) -> None:
        self._execute("UPDATE jobs SET progress = ?, message = ? WHERE id = ? AND state = 'running'",
                      (progress, message, job_id))

    def finish(self, job_id: str, state: str, *, message: str, progress: float | None = None,
               error: JobError | None = None, artifacts: list[str] | None = None) -> None:
        """``running`` (or ``queued``, for a job that could not start) -> a finished state
        (``succeeded|failed|cancelled|interrupted``). Never raises for a write SQLite refuses: the end is then kept
        in memory (see the module docstring)."""
        end = {"state": state, "message": message, "progress": progress, "error": error, "artifacts": artifacts or []}
        with self._lock:
            self._record_pending()
            try:
                self._write_end(job_id, end, time.time())
            except sqlite3.Error as exc:
                log.warning("cannot record the end of job %s (%s): %s", job_id, state, exc)
                if state == "succeeded":  # its record is not safe: the user sees why, and runs it again
                    error = JobError.of(exc)
                    end = {**end, "state": "failed", "error": error,
                           "message": f"the job finished but its record could not be written: {error.message}"}
                self._pending[job_id] = (end, time.time())

    def _write_end(self, job_id: str, end: dict[str, Any], when: float) -> None:
        error = end["error"]
        self._execute(
            "UPDATE jobs SET state = ?, message = ?, progress = COALESCE(?, progress), error = ?, "
            "artifacts = ?, finished_at = ? WHERE id = ? AND state IN ('queued', 'running')",
            (end["state"], end["message"], end["progress"], None if error is None else error.model_dump_json(),
             json.dumps(end["artifacts"]), when, job_id))
