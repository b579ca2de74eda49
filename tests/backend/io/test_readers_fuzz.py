"""Property-based runs (hypothesis) over every reader of user files: whatever bytes or values a file holds, the
reader either returns finite Gaussians / cameras or raises ``InvalidInput`` / ``NotFound`` with a one-line message
naming the file. Never another exception (a traceback), never a non-finite decoded value, never a hang.

Readers: the 3DGS PLY (mutated headers and bodies), the ``.lw4d`` manifest (any JSON value per field) and its arrays
(any shape and dtype), the decoded Gaussians folder, and N3V ``poses_bounds.npy``. The default run is small
(``EXAMPLES`` per reader); ``pytest -m slow`` runs ``SLOW_EXAMPLES``; ``pytest -s`` prints how many cases ran.
"""

from __future__ import annotations

import json

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from backend.errors import InvalidInput, NotFound
from backend.io.decoded import decode_opacity, decode_scale, read_decoded, write_decoded
from backend.io.lw4d import read_sequence, write_sequence
from backend.io.ply import read_ply, write_ply
from backend.moe.data import read_poses_bounds

EXAMPLES = 60
SLOW_EXAMPLES = 2000
BASE = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _refused_in_one_line(exc: BaseException, path) -> None:
    assert isinstance(exc, (InvalidInput, NotFound)), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc) and str(path) in str(exc), str(exc)


def _assert_finite_decoded(g) -> None:
    assert np.isfinite(g.means).all() and np.isfinite(g.sh).all() and np.isfinite(g.quats).all()
    assert np.isfinite(decode_scale(g.log_scales)).all() and np.isfinite(decode_opacity(g.opacity_logits)).all()


def _gaussians(n, degree=1, seed=0):
    from backend.gaussians import Gaussians

    rng = np.random.default_rng(seed)
    return Gaussians(means=rng.normal(size=(n, 3)).astype(np.float32), quats=rng.normal(size=(n, 4)).astype(np.float32),
                     log_scales=rng.uniform(-5, 0, (n, 3)).astype(np.float32),
                     opacity_logits=rng.normal(size=n).astype(np.float32),
                     sh=rng.normal(size=(n, (degree + 1) ** 2, 3)).astype(np.float32))


# ------------------------------------------------------------------------------------------------------------ PLY
HEADER_LINES = st.sampled_from([
    b"element vertex -1", b"element vertex 0", b"element vertex 99999999999", b"element vertex x",
    b"property float x", b"property double scale_0", b"property uchar opacity", b"property list uchar int f_rest_0",
    b"property float f_rest_7", b"element face 2", b"property list uchar int vertex_indices", b"comment \xff\xfe",
    b"format ascii 1.0", b"format binary_big_endian 1.0", b"end_header", b"", b"obj_info x",
])


@st.composite
def mutated_ply(draw):
    """Bytes of a valid PLY with header lines replaced / inserted / dropped and body bytes flipped or cut."""
    lines, body = list(_PLY[0]), _PLY[1]
    for _ in range(draw(st.integers(0, 3))):
        op, i = draw(st.sampled_from(["set", "insert", "drop"])), draw(st.integers(1, len(lines) - 1))
        if op == "set":
            lines[i] = draw(HEADER_LINES)
        elif op == "insert":
            lines.insert(i, draw(HEADER_LINES))
        elif len(lines) > 2:
            del lines[i]
    body = bytearray(body)
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(body) - 1))
        body[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return b"\n".join(lines) + b"\n" + bytes(body)


def _reference_ply():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        raw = write_ply(Path(d) / "g.ply", _gaussians(4)).read_bytes()
    end = raw.index(b"end_header\n")
    return raw[:end + len(b"end_header")].split(b"\n"), raw[end + len(b"end_header\n"):]


_PLY = _reference_ply()


def _check_ply(tmp_path, data):
    path = tmp_path / "fuzz.ply"
    path.write_bytes(data)
    try:
        g = read_ply(path)
    except Exception as exc:  # noqa: BLE001 (the property: only our one-line errors)
        _refused_in_one_line(exc, path)
    else:
        _assert_finite_decoded(g)




# ------------------------------------------------------------------------------------------------------------ .lw4d
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=6)
MANIFEST_FIELDS = ("format", "version", "frame_count", "fps", "loop", "coordinate_frame", "count", "dynamic_count",
                   "channels")
DTYPES = st.sampled_from(["<f4", ">f4", "<f8", "<i8", "<i4", "|u1", "|b1", "<c8"])


@st.composite
def broken_sequence(draw):
    """(manifest changes, {file: array or None (deleted)}) for a valid 3-frame sequence of 5 Gaussians."""
    changes = draw(st.dictionaries(st.sampled_from(MANIFEST_FIELDS), json_values, max_size=2))
    files = {}
    for name in draw(st.lists(st.sampled_from(["dynamic_index.npy", "position.npy", "opacity.npy"]), max_size=2,
                              unique=True)):
        if draw(st.booleans()):
            files[name] = None
        else:
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
            files[name] = draw(hnp.arrays(draw(DTYPES), shape))
    return changes, files


def _check_sequence(tmp_path, case):
    import shutil

    changes, files = case
    path = tmp_path / "s.lw4d"
    shutil.rmtree(path, ignore_errors=True)
    write_sequence(path, _gaussians(5), [1, 3], {"position": np.zeros((3, 2, 3), np.float32),
                                                 "opacity": np.full((3, 2), 0.5, np.float32)})
    m = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**m, **changes}))
    for name, array in files.items():
        if array is None:
            (path / name).unlink()
        else:
            np.save(path / name, array)
    try:
        seq = read_sequence(path, check_values=True)
    except Exception as exc:  # noqa: BLE001
        _refused_in_one_line(exc, path)
    else:
        _assert_finite_decoded(seq.base)
        for a in seq.channels.values():
            assert a.dtype == np.float32 and np.isfinite(a).all()




# --------------------------------------------------------------------------------------------------- decoded folder
@st.composite
def broken_decoded(draw):
    changes = draw(st.dictionaries(st.sampled_from(["version", "count", "sh_degree", "source", "sequence"]),
                                   json_values, max_size=2))
    files = {}
    for name in draw(st.lists(st.sampled_from(["position.npy", "scale.npy", "rotation.npy", "opacity.npy",
                                               "sh.npy", "color.npy"]), max_size=2, unique=True)):
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        files[name] = None if draw(st.booleans()) else draw(hnp.arrays(draw(DTYPES), shape))
    return changes, files


def _check_decoded(tmp_path, case):
    import shutil

    changes, files = case
    folder = tmp_path / "decoded"
    shutil.rmtree(folder, ignore_errors=True)
    write_decoded(folder, _gaussians(4))
    m = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**m, **changes}))
    for name, array in files.items():
        if array is None:
            (folder / name).unlink(missing_ok=True)
        else:
            np.save(folder / name, array)
    try:
        g = read_decoded(folder)
    except Exception as exc:  # noqa: BLE001
        _refused_in_one_line(exc, folder)
    else:
        _assert_finite_decoded(g)




# ------------------------------------------------------------------------------------------------- poses_bounds
@st.composite
def poses_arrays(draw):
    """Arrays near a valid (2, 17) poses_bounds: other shapes and dtypes, NaN/inf/huge values, scaled rotations."""
    base = np.tile(np.concatenate([np.hstack([np.eye(3), [[0.0], [0.0], [-4.0]], [[72.0], [96.0], [80.0]]]).ravel(),
                                   [1.0, 6.0]]), (2, 1))
    kind = draw(st.sampled_from(["values", "shape", "dtype"]))
    if kind == "shape":
        return draw(hnp.arrays(np.float64, tuple(draw(st.lists(st.integers(0, 18), max_size=3)))))
    if kind == "dtype":
        return base.astype(draw(st.sampled_from(["<f4", "<i8", "|u1", "<c16", "|b1", "<U4"])))
    for _ in range(draw(st.integers(1, 4))):
        base[draw(st.integers(0, 1)), draw(st.integers(0, 16))] = draw(st.floats())
    return base


def _check_poses(tmp_path, array):
    path = tmp_path / "poses_bounds.npy"
    np.save(path, array)
    try:
        pb = read_poses_bounds(path)
    except Exception as exc:  # noqa: BLE001
        _refused_in_one_line(exc, path)
    else:
        assert pb.shape[1:] == (17,) and np.isfinite(pb).all()


READERS = {"ply": (mutated_ply(), _check_ply), "lw4d": (broken_sequence(), _check_sequence),
           "decoded": (broken_decoded(), _check_decoded), "poses_bounds": (poses_arrays(), _check_poses)}


@pytest.mark.parametrize("examples", [EXAMPLES, pytest.param(SLOW_EXAMPLES, marks=pytest.mark.slow)])
@pytest.mark.parametrize("reader", list(READERS))
def test_reader_refuses_in_one_line_or_returns_finite_values(tmp_path, reader, examples):
    strategy, check = READERS[reader]
    ran = []

    @settings(BASE, max_examples=examples)
    @given(case=strategy)
    def run(case):
        check(tmp_path, case)
        ran.append(1)

    run()
    print(f"{reader}: {len(ran)} cases, 0 failing")
