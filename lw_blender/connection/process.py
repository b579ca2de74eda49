"""The local backend process: start, stop, restart (stdlib only; no bpy).

``start(python, workspace)`` runs ``<python> -m backend.cli serve --port 0 --workspace <ws> --parent-pid <blender>``
and waits for the one JSON line ``{"url", "token", "pid", "workspace"}`` it prints when it is listening. Its stdout
and stderr go to ``<workspace>/logs/backend.out|.err`` (files, not pipes, so a chatty backend never blocks; mode
0600, since the ready line holds the token); the tail of stderr is quoted in every start error. ``--parent-pid`` makes the backend exit by itself if Blender dies
without running ``atexit`` (crash, SIGKILL); on a normal exit and on unregister ``stop()`` terminates it.

Only one backend process is managed at a time (module state ``_current``).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .client import BackendError

SET_PYTHON_HINT = ("Set the backend Python in Preferences > Add-ons > LivingWorld to the .venv/bin/python of the "
                   "backend (created by `make envs` in the LivingWorld repository).")


class BackendStartError(BackendError):
    """The backend process could not be started; the message says why and what to change."""

    def __init__(self, message: str):
        super().__init__("BackendStartError", message)


@dataclass(frozen=True)
class BackendInfo:
    """What a started backend reported: base URL, bearer token, process id and workspace folder."""

    url: str
    token: str
    pid: int
    workspace: Path


class BackendProcess:
    """One running ``lw serve`` child process."""

    def __init__(self, popen: subprocess.Popen, info: BackendInfo, log_dir: Path):
        self.popen = popen
        self.info = info
        self.log_dir = log_dir

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (SIGTERM), wait up to ``timeout`` s, then kill."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except FileNotFoundError:
        return ""


def _explain_exit(python: str, code: int, err: str) -> str:
    if "No module named backend" in err or "No module named 'backend'" in err:
        return (f"the Python {python} has no LivingWorld `backend` package installed. {SET_PYTHON_HINT}\n"
                f"stderr: {err}")
    return f"the backend exited early with status {code}. stderr:\n{err or '(empty)'}"


def _open_private(path: Path):
    """Open ``path`` for writing, emptied, readable and writable by this user only (0600, also when an older
    version left it 0644): its first line carries the bearer token. A symlink planted there is refused."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def launch(python: str, workspace: Path, timeout: float = 60.0, extra_args: tuple[str, ...] = ()) -> BackendProcess:
    """Start ``python -m backend.cli serve`` on a free local port and wait for its ready line.

    Raises ``BackendStartError`` when the Python path is wrong, the ``backend`` package is missing there, the
    process exits early (its stderr tail is quoted) or does not report ready within ``timeout`` seconds.
    """
    if not python:
        raise BackendStartError(f"no backend Python is set. {SET_PYTHON_HINT}")
    py = Path(python).expanduser()
    if not py.is_file() or not os.access(py, os.X_OK):
        raise BackendStartError(f"the backend Python {str(py)!r} does not exist or is not executable. {SET_PYTHON_HINT}")
    workspace = Path(workspace).expanduser().resolve()
    log_dir = workspace / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "backend.out", log_dir / "backend.err"
    cmd = [str(py), "-m", "backend.cli", "serve", "--port", "0", "--workspace", str(workspace),
           "--parent-pid", str(os.getpid()), *extra_args]
    env = dict(os.environ)
    # Blender's own Python settings must not leak into the backend's interpreter.
    for var in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
        env.pop(var, None)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        out = _open_private(out_path)
        try:
            err = _open_private(err_path)
        except BaseException:
            out.close()  # the first log's descriptor is not left open
            raise
    except OSError as exc:
        raise BackendStartError(f"cannot write the backend's log {exc.filename}: {exc.strerror}; check the "
                                "workspace folder in the preferences") from None
    with out, err:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workspace, env=env,
                                 start_new_session=sys.platform != "win32")
    deadline = time.monotonic() + timeout
    while True:
        text = out_path.read_text(errors="replace")
        if "\n" in text:
            line = text.split("\n", 1)[0].strip()
            try:
                d = json.loads(line)
                info = BackendInfo(url=str(d["url"]), token=str(d["token"]), pid=int(d["pid"]),
                                   workspace=Path(d.get("workspace") or workspace))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                popen.kill()
                popen.wait()
                raise BackendStartError(f"the backend printed {line[:300]!r} instead of its JSON ready line "
                                        f"{{url, token, pid}}. stderr:\n{_tail(err_path)}") from None
            return BackendProcess(popen, info, log_dir)
        code = popen.poll()
        if code is not None:
            raise BackendStartError(_explain_exit(str(py), code, _tail(err_path)))
        if time.monotonic() > deadline:
            popen.kill()
            popen.wait()
            raise BackendStartError(f"the backend did not report ready within {timeout:.0f} s. "
                                    f"stderr:\n{_tail(err_path)}")
        time.sleep(0.05)


_current: BackendProcess | None = None
_lock = threading.RLock()  # start() may run on the add-on's start-up thread while the main thread stops/starts


def current() -> BackendProcess | None:
    """The backend process this Blender started, if any (alive or not)."""
    return _current


def start(python: str, workspace: Path, timeout: float = 60.0) -> BackendInfo:
    """Start the local backend unless ours is already running; returns its info (idempotent)."""
    global _current
    with _lock:
        if _current is not None and _current.is_alive():
            return _current.info
        _current = launch(python, workspace, timeout)
        return _current.info


def stop() -> None:
    """Stop the local backend this Blender started (no-op when none)."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
            _current = None


def restart(python: str, workspace: Path, timeout: float = 60.0) -> BackendInfo:
    stop()
    return start(python, workspace, timeout)


def is_alive() -> bool:
    return _current is not None and _current.is_alive()


def register():
    atexit.register(stop)


def unregister():
    stop()
    atexit.unregister(stop)
