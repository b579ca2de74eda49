"""The progress and cancel channel between the backend and its Ray tasks: one actor, ``JobBoard``.

Tasks write to it (fire-and-forget actor calls, at most every ``REPORT_INTERVAL_S``); the backend reads the
reports of every running job in one call per poll. Reports are grouped by ``scope`` (a job id, or one ``lw moe
train`` run) and ``key`` (``"job"`` for a job's own task, ``"expert:<name>"``, ``"router"``). Cancel is a flag per
scope: each task polls it from a daemon thread and sets its ``threading.Event``, the cooperative cancel every job
kind already honours (training writes a checkpoint, then raises ``JobCancelled``).

A task that is retried after its worker died starts a new ``Attempt`` in its report; ``from_step`` says where the
attempt resumed (the step of the checkpoint it found), so a caller can see that nothing restarted from scratch.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Self

import ray

from . import ClusterUnavailable

REPORT_INTERVAL_S = 0.1
CANCEL_POLL_S = 0.2
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Attempt:
    """One run of a task: the worker process that ran it, and the steps it covered (training tasks)."""

    pid: int
    node: str
    from_step: int = 0  # the step it resumed from (0: from scratch)
    to_step: int = 0  # the last step it reported


@dataclass(frozen=True)
class TaskReport:
    """The latest progress of one task: fraction in [0, 1], message, and every attempt so far."""

    fraction: float = 0.0
    message: str = ""
    attempts: tuple[Attempt, ...] = ()

    @property
    def steps_trained(self) -> int:
        """Steps actually run over all attempts (as reported; a killed attempt may have run a few more)."""
        return sum(max(a.to_step - a.from_step, 0) for a in self.attempts)


@ray.remote(num_cpus=0)
class JobBoard:
    """Progress reports and cancel flags of the tasks of one backend (or one ``lw moe train`` run)."""

    def __init__(self):
        self._reports: dict[str, dict[str, TaskReport]] = {}
        self._cancelled: set[str] = set()

    def started(self, scope: str, key: str, pid: int, node: str, from_step: int = 0) -> None:
        report = self._reports.setdefault(scope, {}).get(key, TaskReport())
        self._reports[scope][key] = replace(report, attempts=(*report.attempts,
                                                              Attempt(pid, node, from_step, from_step)))

    def progress(self, scope: str, key: str, fraction: float, message: str, step: int | None = None) -> None:
        report = self._reports.setdefault(scope, {}).get(key, TaskReport())
        attempts = report.attempts
        if step is not None and attempts:
            attempts = (*attempts[:-1], replace(attempts[-1], to_step=step))
        self._reports[scope][key] = TaskReport(fraction, message, attempts)

    def cancel(self, scope: str) -> None:
        self._cancelled.add(scope)

    def is_cancelled(self, scope: str) -> bool:
        return scope in self._cancelled

    def reports(self, scopes: list[str]) -> dict[str, dict[str, TaskReport]]:
        return {s: dict(self._reports.get(s, {})) for s in scopes}

    def forget(self, scope: str) -> None:
        self._reports.pop(scope, None)
        self._cancelled.discard(scope)


class TaskChannel:
    """The task side of the board, used inside a Ray task as a context manager.

    ``progress(fraction, message)`` is the ``on_progress`` / ``progress`` callback to hand to a job or trainer;
    ``cancel`` is the ``threading.Event`` to hand to it. ``steps`` (training tasks): the total number of steps,
    so that ``fraction * steps`` is recorded as the attempt's last step.
    """

    def __init__(self, board, scope: str, key: str, from_step: int = 0, steps: int | None = None):
        self.board, self.scope, self.key, self.steps = board, scope, key, steps
        self.cancel = threading.Event()
        self._done = threading.Event()
        self._last_sent = 0.0
        self._pending: tuple[float, str] | None = None
        board.started.remote(scope, key, os.getpid(), ray.get_runtime_context().get_node_id(), from_step)
        self._poller = threading.Thread(target=self._poll_cancel, name="lw-cancel-poll", daemon=True)

    def __enter__(self) -> Self:
        self._poller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._pending is not None:
            self._send(*self._pending)

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last_sent >= REPORT_INTERVAL_S or fraction >= 1.0:
            self._last_sent = now
            self._send(fraction, message)
        else:
            self._pending = (fraction, message)

    def _send(self, fraction: float, message: str) -> None:
        self._pending = None
        step = None if self.steps is None else round(fraction * self.steps)
        self.board.progress.remote(self.scope, self.key, fraction, message, step)

    def _poll_cancel(self) -> None:
        while True:
            if ray.get(self.board.is_cancelled.remote(self.scope)):
                self.cancel.set()
                return
            if self._done.wait(CANCEL_POLL_S):
                return


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address``: ``"auto"`` (the cluster ``ray start`` runs on this machine),
    ``"local"`` (start a private one-machine cluster in this process), or ``HOST:PORT`` / ``ray://HOST:PORT``.
    Returns True when this call started Ray (the caller then shuts it down); False when Ray was already
    initialised in this process (a test's cluster, say), which is used as it is."""
    if ray.is_initialized():
        return False
    _check_reachable(address)
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnavailable(f"cannot join the Ray cluster at {address!r}: {exc}; start one with "
                                 f"`ray start --head` and pass its address (or 'auto' on its head node)") from exc
    return True


def _check_reachable(address: str) -> None:
    """Fail at once when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" / "local": Ray finds (or starts) the cluster itself and fails fast when it cannot
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterUnavailable(f"nothing answers at the Ray address {address!r} ({exc.strerror or exc}); start "
                                 f"the head node with `ray start --head` and pass the address it prints") from exc
