"""HTTP client of the LivingWorld backend (stdlib only: no bpy, no requests, no torch).

The protocol is the backend's JSON API (``docs/ARCHITECTURE.md``): ``GET /health`` (no token), ``GET /kinds``,
``POST /jobs {"kind", "params"}``, ``GET /jobs``, ``GET /jobs/{id}``, ``POST /jobs/{id}/cancel``,
``GET /artifacts/{name}``; every other route needs ``Authorization: Bearer <token>``.

Errors: an HTTP error with a JSON body becomes ``BackendError(type, message)`` carrying the backend's reason;
a refused/reset connection or a timeout becomes ``BackendUnavailable``. Both derive from ``BackendError``, the
one exception family of the add-on.

Artifacts: when Blender started the backend itself the workspace folder is shared and an artifact name resolves
to ``<workspace>/<name>`` directly; for a remote backend (``local_workspace=None``) it is downloaded once from
``/artifacts/<name>`` into ``cache_dir`` and reused from there.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
JOB_STATES = ("queued", "running", *sorted(TERMINAL_STATES))


class BackendError(Exception):
    """An error reported by (or about) the backend. ``type`` is the backend's error class name
    (e.g. ``InvalidInput``, ``NotFound``, ``Unauthorized``) or a client-side category; ``message`` is its reason."""

    def __init__(self, type: str, message: str, status: int | None = None):
        super().__init__(f"{type}: {message}" if type else message)
        self.type = type
        self.message = message
        self.status = status


class BackendUnavailable(BackendError):
    """The backend cannot be reached (not started, killed, wrong URL, network down)."""

    def __init__(self, message: str):
        super().__init__("BackendUnavailable", message)


@dataclass(frozen=True)
class JobError:
    """Why a job failed: the backend's exception class name, its message and a traceback summary."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class JobRecord:
    """One job as the backend reports it.

    state: one of ``queued|running|succeeded|failed|cancelled|interrupted``; progress in [0, 1];
    artifacts: names relative to the backend workspace (only meaningful once ``succeeded``).
    """

    id: str
    kind: str
    state: str
    progress: float = 0.0
    message: str = ""
    error: JobError | None = None
    artifacts: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_json(cls, d: dict) -> JobRecord:
        err = d.get("error")
        return cls(
            id=str(d["id"]),
            kind=str(d.get("kind", "")),
            state=str(d["state"]),
            progress=float(d.get("progress") or 0.0),
            message=str(d.get("message") or ""),
            error=JobError(str(err.get("type", "")), str(err.get("message", "")), str(err.get("traceback") or ""))
            if isinstance(err, dict) else None,
            artifacts=tuple(str(a) for a in d.get("artifacts") or ()),
        )


def _reason(status: int, body: bytes) -> tuple[str, str]:
    """(type, message) from an error response body: ``{"error": {"type", "message"}}``, FastAPI's
    ``{"detail": ...}`` or plain text."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"HTTP{status}", body.decode("utf-8", "replace").strip()[:500] or f"HTTP status {status}"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("type") or f"HTTP{status}"), str(err.get("message") or err)
        if isinstance(err, str):
            return str(data.get("type") or f"HTTP{status}"), err
        if "detail" in data:
            detail = data["detail"]
            if isinstance(detail, list):  # pydantic validation errors
                detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in detail)
            return str(data.get("type") or f"HTTP{status}"), str(detail)
        if "message" in data:
            return str(data.get("type") or f"HTTP{status}"), str(data["message"])
    return f"HTTP{status}", json.dumps(data)[:500]


def safe_relative(name: str) -> PurePosixPath:
    """An artifact name as a relative POSIX path that cannot leave its root (no absolute path, no ``..``)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or not p.parts or ".." in p.parts or ":" in p.parts[0]:
        raise BackendError("InvalidArtifact", f"artifact name {name!r} is not a relative path inside the workspace")
    return p


class Client:
    """A connection to one backend.

    url: base URL (``http://127.0.0.1:PORT``); token: bearer token; timeout: seconds per request;
    local_workspace: the backend's workspace when it is on this machine (shared files), else None;
    cache_dir: where artifacts of a remote backend are downloaded.
    """

    def __init__(self, url: str, token: str = "", timeout: float = 10.0,
                 local_workspace: Path | None = None, cache_dir: Path | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.local_workspace = Path(local_workspace) if local_workspace else None
        self.cache_dir = Path(cache_dir) if cache_dir else None

    # --- transport -----------------------------------------------------------------------------------------
    def _open(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout if timeout is None else timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                typ, msg = _reason(exc.code, exc.read())
            raise BackendError(typ, msg, status=exc.code) from None
        except urllib.error.URLError as exc:
            raise BackendUnavailable(f"cannot reach the backend at {self.url}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # reset, refused, timeout, closed mid-response
            raise BackendUnavailable(f"cannot reach the backend at {self.url}: {type(exc).__name__}: {exc}") from None

    def _json(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        resp = self._open(method, path, body, timeout)
        try:
            with resp:
                raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise BackendUnavailable(f"connection to {self.url} lost: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BackendError("BadResponse", f"{method} {path} did not return JSON: {raw[:200]!r}") from None

    # --- API -----------------------------------------------------------------------------------------------
    def health(self, timeout: float | None = None) -> dict:
        """``GET /health`` (no token); raises ``BackendUnavailable`` when nothing answers."""
        return self._json("GET", "/health", timeout=timeout)

    def kinds(self) -> dict:
        """``GET /kinds``: the job kinds the backend knows, with their parameter schemas."""
        return self._json("GET", "/kinds")

    def submit(self, kind: str, params: dict) -> JobRecord:
        """``POST /jobs``: queue a job of ``kind`` with JSON ``params``; returns its first record."""
        return JobRecord.from_json(self._json("POST", "/jobs", {"kind": kind, "params": params}))

    def job(self, job_id: str) -> JobRecord:
        """``GET /jobs/{id}``."""
        return JobRecord.from_json(self._json("GET", f"/jobs/{urllib.parse.quote(job_id, safe='')}"))

    def jobs(self) -> list[JobRecord]:
        """``GET /jobs``: every job the backend knows (also those of earlier runs)."""
        data = self._json("GET", "/jobs")
        items = data.get("jobs", data) if isinstance(data, dict) else data
        return [JobRecord.from_json(d) for d in items]

    def cancel(self, job_id: str) -> JobRecord:
        """``POST /jobs/{id}/cancel``: request cooperative cancel; the job ends ``cancelled`` at its next step."""
        return JobRecord.from_json(self._json("POST", f"/jobs/{urllib.parse.quote(job_id, safe='')}/cancel"))

    def download(self, name: str, dest: Path) -> Path:
        """``GET /artifacts/{name}`` streamed to ``dest`` (written to a temp file, then renamed)."""
        rel = safe_relative(name)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        resp = self._open("GET", "/artifacts/" + urllib.parse.quote(rel.as_posix()), timeout=max(self.timeout, 60.0))
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
        try:
            with resp, os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(resp, f, length=1 << 20)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def artifact_root(self) -> Path:
        """Local folder that mirrors the backend workspace: the shared workspace, or the download cache."""
        if self.local_workspace is not None:
            return self.local_workspace
        if self.cache_dir is None:
            raise BackendError("NoCache", "a remote backend needs a cache folder to download artifacts into")
        return self.cache_dir

    def artifact_path(self, name: str) -> Path:
        """Local path of artifact ``name``: directly in the shared workspace, or downloaded once into the cache."""
        local = self.artifact_root() / safe_relative(name)
        if self.local_workspace is None and not local.exists():
            self.download(name, local)
        return local
