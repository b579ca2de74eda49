"""backend.io.checkpoint: plain data loads with weights_only; anything else is a one-line InvalidInput."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.errors import InvalidInput, NotFound
from backend.io.checkpoint import load_checkpoint_file, plain


@dataclass
class _Cfg:
    lr: float = 0.1
    size: tuple[int, int] = (2, 3)


def test_plain_payload_round_trips_through_weights_only(tmp_path):
    payload = {"config": _Cfg(), "step": np.int64(7), "scale": np.float32(0.5), "points": np.arange(6.0).reshape(2, 3),
               "where": Path("/x/y"), "log": {"loss": [0.1], "events": [{"step": np.int32(3)}]}, "w": torch.ones(2)}
    torch.save(payload, tmp_path / "raw.pt")  # a dataclass, numpy values, a Path: refused by the safe loader
    with pytest.raises(InvalidInput, match="never unpickled"):
        load_checkpoint_file(tmp_path / "raw.pt")
    torch.save(plain(payload), tmp_path / "c.pt")
    back = load_checkpoint_file(tmp_path / "c.pt")
    assert back["config"] == {"lr": 0.1, "size": (2, 3)} and back["step"] == 7 and type(back["step"]) is int
    assert back["where"] == "/x/y" and back["log"]["events"][0]["step"] == 3
    assert torch.equal(back["points"], torch.arange(6.0, dtype=torch.float64).reshape(2, 3))


@pytest.mark.parametrize("content,expect", [
    (b"", "truncated or not a torch file"),
    (b"PK\x03\x04 not really a zip", "truncated or not a torch file"),
    (b"hello world", "truncated or not a torch file"),
])
def test_unreadable_files_give_one_line(tmp_path, content, expect):
    p = tmp_path / "checkpoint.pt"
    p.write_bytes(content)
    with pytest.raises(InvalidInput) as err:
        load_checkpoint_file(p)
    assert expect in str(err.value) and str(p) in str(err.value) and "\n" not in str(err.value)


def test_truncated_checkpoint_and_non_dict(tmp_path):
    p = tmp_path / "checkpoint.pt"
    torch.save({"w": torch.zeros(1000)}, p)
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(InvalidInput, match="truncated"):
        load_checkpoint_file(p)
    torch.save([1, 2], p)
    with pytest.raises(InvalidInput, match="holds a list"):
        load_checkpoint_file(p)
    with pytest.raises(NotFound):
        load_checkpoint_file(tmp_path / "missing.pt")
