"""backend/io/arrays.py: .npy files are read header first: never unpickled, never allocated beyond what they hold."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import InvalidInput
from backend.io.arrays import load_array


def _header_only(path, shape, dtype="<f4"):
    """A .npy file whose header claims ``shape`` and that holds 16 bytes of data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(bytes(16))
    return path


def test_a_header_promising_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    path = _header_only(tmp_path / "bomb.npy", (10**12, 3))  # 12 TB of float32 on paper
    with pytest.raises(InvalidInput, match=r"header promises shape \(1000000000000, 3\)") as err:
        load_array(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InvalidInput, match="header promises"):
        load_array(path, mmap=True)


@pytest.mark.parametrize("content,expect", [
    (b"", "not a readable numpy array file"),
    (b"\x93NUMPY\x09\x00", "not a readable numpy array file"),
    (b"not numpy at all", "not a readable numpy array file"),
    (b"\x93NUMPY\x01\x00\xff\xff{'descr': '<f4'", "not a readable numpy array file"),
])
def test_broken_files_are_one_line_errors(tmp_path, content, expect):
    (tmp_path / "x.npy").write_bytes(content)
    with pytest.raises(InvalidInput, match=expect):
        load_array(tmp_path / "x.npy")


def test_object_arrays_are_never_unpickled_and_plain_arrays_load(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match="a pickle"):
        load_array(tmp_path / "o.npy")
    np.save(tmp_path / "ok.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(load_array(tmp_path / "ok.npy"), np.arange(6).reshape(2, 3))
    assert load_array(tmp_path / "ok.npy", mmap=True).shape == (2, 3)
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.float32))
    assert load_array(tmp_path / "empty.npy").shape == (0, 3)
