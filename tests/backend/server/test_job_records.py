"""A job whose record cannot be written never stays ``running`` (issue 21, point 5), and a full disk during a job is a
one-line error that leaves nothing half-written.

ENOSPC is simulated where it happens: SQLite's "database or disk is full" on the store's writes (the store's one
statement entry point is patched, so every UPDATE/INSERT fails while the disk is "full"), and ``os.fsync`` failing
with ENOSPC inside the job (the world store fsyncs every file it commits).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.jobs import registry
from backend.server.store import JobStore


def stored_state(workspace: Path, job_id: str) -> str:
    """What SQLite itself holds for the job (not the store's view with ends kept in memory)."""
    with sqlite3.connect(workspace / "jobs.sqlite3") as db:
        return db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk.on = True``: every write of every JobStore fails as SQLite fails on a full disk."""

    class Switch:
        on = False

    real = JobStore._execute

    def execute(self, sql, args=()):
        if Switch.on and sql.lstrip().split()[0] in ("UPDATE", "INSERT"):
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, sql, args)

    monkeypatch.setattr(JobStore, "_execute", execute)
    return Switch


def test_a_job_whose_end_cannot_be_recorded_ends_failed_and_cancel_finds_it_finished(make_client, workspace,
                                                                                       wait_job, full_disk):
    with make_client(workspace) as c:
        job = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0.3, "steps": 3}}).json()
        wait_job(c, job["id"], until=lambda j: j["state"] == "running")
        full_disk.on = True  # the disk fills while it runs: progress and the final record cannot be written
        done = wait_job(c, job["id"])
        assert done["state"] == "failed" and "could not be written" in done["message"]
        assert done["error"]["type"] == "DiskFull" and "\n" not in done["error"]["message"]
        cancelled = c.post(f"/jobs/{job['id']}/cancel").json()
        assert cancelled["state"] == "failed"  # finished: cancel leaves it as it is, it does not hang
        assert stored_state(workspace, job["id"]) == "running"  # what SQLite still says...
        assert c.post("/jobs", json={"kind": "sleep", "params": {}}).status_code == 507  # (the store is full)
        full_disk.on = False  # ...until the disk has room again: the next write (a cancel, a job) records it
        c.post(f"/jobs/{job['id']}/cancel")
        assert stored_state(workspace, job["id"]) == "failed"


def test_a_job_left_running_by_a_full_disk_is_interrupted_at_the_next_start(make_client, workspace, wait_job,
                                                                           full_disk):
    with make_client(workspace) as c:
        job = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0.2, "steps": 2}}).json()
        wait_job(c, job["id"], until=lambda j: j["state"] == "running")
        full_disk.on = True
        assert wait_job(c, job["id"])["state"] == "failed"
    assert stored_state(workspace, job["id"]) == "running"  # the stop could not write either
    full_disk.on = False
    with make_client(workspace) as c:
        again = c.get(f"/jobs/{job['id']}").json()
    assert again["state"] == "interrupted"


def test_a_job_that_cannot_be_marked_running_is_failed_not_left_queued(make_client, workspace, wait_job,
                                                                      monkeypatch):
    def start(self, job_id):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(JobStore, "start", start)
    with make_client(workspace) as c:
        job = c.post("/jobs", json={"kind": "sleep", "params": {"seconds": 0.0}}).json()
        done = wait_job(c, job["id"])
        assert done["state"] == "failed" and done["error"]["type"] == "DiskFull"
        assert done["message"].startswith("the job could not start: no space left on the device")
        assert c.post(f"/jobs/{job['id']}/cancel").json()["state"] == "failed"


def _photo(path):
    img = np.zeros((24, 32, 3), np.uint8)
    img[:12], img[12:] = (235, 180, 120), (40, 110, 60)
    cv2.imwrite(str(path), img)


def test_disk_full_during_world_new_is_one_line_and_leaves_no_world_or_job_folder(make_client, workspace, wait_job,
                                                                                  monkeypatch):
    workspace.mkdir(parents=True)
    _photo(workspace / "photo.png")
    real_fsync = os.fsync

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    builtin = {"depth": "builtin", "segmentation": "builtin", "outpaint": "builtin", "device": "cpu"}
    with make_client(workspace, kinds={k: v for k, v in registry().items() if k == "world_new"}) as c:
        monkeypatch.setattr(os, "fsync", fsync)
        jobs = [c.post("/jobs", json={"kind": "world_new", "params": {"image": "photo.png", "resolution": 32,
                                                                        "models": builtin, **extra}}).json()
                for extra in ({}, {"out": "worlds/mine"})]
        done = [wait_job(c, j["id"], timeout=120) for j in jobs]
        monkeypatch.setattr(os, "fsync", real_fsync)
    for job in done:
        assert job["state"] == "failed" and job["error"]["type"] == "DiskFull", job
        assert job["error"]["traceback"] is None and "\n" not in job["message"]
        assert job["message"].startswith("no space left on the device")
        assert not (workspace / "jobs" / job["id"]).exists()
    assert not (workspace / "worlds").exists() or not any((workspace / "worlds").iterdir())


def test_the_ends_kept_in_memory_are_read_and_written_only_under_the_store_lock(tmp_path, full_disk):
    """The worker thread finishes jobs while request threads read, cancel and create: every use of the ends kept in
    memory happens under the store's lock (a dict that checks it on every access)."""
    store = JobStore(tmp_path / "jobs.sqlite3")
    lock = store._lock

    class Guarded(dict):
        def _check(self):
            # one thread here: the lock held at all is held by this thread
            held = lock._is_owned() if hasattr(lock, "_is_owned") else lock.locked()
            assert held, "_pending used without the store's lock"

        def get(self, *a):
            self._check()
            return super().get(*a)

        def __contains__(self, k):
            self._check()
            return super().__contains__(k)

        def __setitem__(self, k, v):
            self._check()
            super().__setitem__(k, v)

        def items(self):
            self._check()
            return super().items()

        def pop(self, *a):
            self._check()
            return super().pop(*a)

    store._pending = Guarded()
    try:
        job = store.create("sleep", {})
        assert store.start(job.id)
        full_disk.on = True
        store.finish(job.id, "succeeded", message="done")  # kept in memory
        assert store.get(job.id).state == "failed" and [r.state for r in store.recent(5)] == ["failed"]
        assert not store.cancel_queued(job.id)
        store.request_cancel(job.id)
        full_disk.on = False
        other = store.create("sleep", {})  # writes the kept end
        assert store.get(job.id).state == "failed" and not store._pending and store.cancel_queued(other.id)
    finally:
        store.close()
