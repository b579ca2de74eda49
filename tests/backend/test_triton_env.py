"""The one switch the Triton users (hash grid, frame renderer) share."""

from backend.triton_env import interpreting


def test_interpreting_follows_triton_interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert interpreting()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not interpreting()
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not interpreting()
