"""lw_blender.connection.process: the logs that carry the backend's token are readable by this user only."""

from __future__ import annotations

import os
import stat
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def test_backend_logs_holding_the_token_are_private(lw, backend_python, tmp_path):
    bp = lw.lw_blender.connection.process
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("backend.out", "backend.err"):  # left world-readable by an older version, with an old token in it
        (logs / name).write_text('{"token": "old"}\n')
        os.chmod(logs / name, 0o644)
    proc = bp.launch(str(backend_python), tmp_path, timeout=60)
    try:
        out = logs / "backend.out"
        assert proc.info.token in out.read_text()  # the ready line is there...
        for name in ("backend.out", "backend.err"):
            assert stat.S_IMODE((logs / name).stat().st_mode) == 0o600  # ...and no one else can read it
        assert '"old"' not in out.read_text()
    finally:
        proc.stop()


def test_a_symlink_planted_as_the_log_is_refused(lw, backend_python, tmp_path):
    bp = lw.lw_blender.connection.process
    (tmp_path / "logs").mkdir()
    elsewhere = tmp_path / "public.txt"
    elsewhere.write_text("")
    os.chmod(elsewhere, 0o644)
    (tmp_path / "logs" / "backend.out").symlink_to(elsewhere)
    with pytest.raises(bp.BackendStartError, match="cannot write the backend's log"):
        bp.launch(str(backend_python), tmp_path, timeout=60)
    assert elsewhere.read_text() == ""


def test_a_refused_second_log_closes_the_first(lw, backend_python, tmp_path, monkeypatch):
    bp = lw.lw_blender.connection.process
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "backend.err").symlink_to(tmp_path / "public.txt")  # the second log is refused
    opened = []
    real = bp._open_private
    monkeypatch.setattr(bp, "_open_private", lambda path: opened.append(real(path)) or opened[-1])
    with pytest.raises(bp.BackendStartError, match="cannot write the backend's log"):
        bp.launch(str(backend_python), tmp_path, timeout=60)
    assert len(opened) == 1 and opened[0].closed  # backend.out was opened, and closed again
