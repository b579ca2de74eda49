"""backend/io/lw4d.py: .lw4d sequences — round trip, interpolation, streaming, atomic replace, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.errors import InvalidInput, NotFound
from backend.io.lw4d import SequenceWriter, frame_gaussians, frame_weights, gaussians_at, read_sequence, write_sequence

T, N = 5, 12
INDEX = np.array([1, 4, 5, 9], dtype=np.int64)
M = len(INDEX)


def channels(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(T, M, 4)).astype(np.float32)
    return {
        "position": rng.normal(size=(T, M, 3)).astype(np.float32),
        "opacity": rng.uniform(0, 1, size=(T, M)).astype(np.float32),
        "rotation": q / np.linalg.norm(q, axis=-1, keepdims=True),
        "scale": rng.uniform(0.01, 0.1, size=(T, M, 3)).astype(np.float32),
        "color": rng.uniform(0, 1, size=(T, M, 3)).astype(np.float32),
    }


@pytest.fixture
def seq_path(tmp_path, make_gaussians):
    return write_sequence(tmp_path / "a.lw4d", make_gaussians(N, 1), INDEX, channels(), fps=12.0, loop=True)


def test_round_trip_memory_mapped(seq_path, make_gaussians):
    seq = read_sequence(seq_path, check_values=True)
    manifest = json.loads((seq_path / "manifest.json").read_text())
    assert manifest == {"format": "lw4d", "version": 1, "frame_count": T, "fps": 12.0, "loop": True,
                        "coordinate_frame": "blender_z_up_m", "count": N, "dynamic_count": M,
                        "channels": {c: "float32" for c in ("position", "opacity", "rotation", "scale", "color")}}
    assert (seq.frame_count, seq.fps, seq.loop, seq.count, seq.dynamic_count) == (T, 12.0, True, N, M)
    assert np.array_equal(seq.dynamic_index, INDEX) and seq.dynamic_index.dtype == np.int64
    assert np.array_equal(seq.base.means, make_gaussians(N, 1).means)
    for name, values in channels().items():
        assert isinstance(seq.channels[name], np.memmap)
        np.testing.assert_allclose(seq.channels[name], values, rtol=1e-6, atol=0)
    assert not isinstance(read_sequence(seq_path, mmap=False).channels["position"], np.memmap)
    assert seq.duration == pytest.approx(T / 12.0)


def test_interpolation_between_frames(seq_path):
    seq = read_sequence(seq_path)
    ch = channels()
    f = frame_gaussians(seq, 1.25)
    np.testing.assert_allclose(f.position, 0.75 * ch["position"][1] + 0.25 * ch["position"][2], rtol=1e-6)
    np.testing.assert_allclose(f.opacity, 0.75 * ch["opacity"][1] + 0.25 * ch["opacity"][2], rtol=1e-6)
    np.testing.assert_allclose(f.color, 0.75 * ch["color"][1] + 0.25 * ch["color"][2], rtol=1e-6)
    # nlerp along the shorter arc
    qa, qb = ch["rotation"][1], ch["rotation"][2]
    qb = np.where(np.sum(qa * qb, -1, keepdims=True) < 0, -qb, qb)
    q = 0.75 * qa + 0.25 * qb
    np.testing.assert_allclose(f.rotation, q / np.linalg.norm(q, axis=-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(f.rotation, axis=-1), 1.0, atol=1e-6)
    # integer times are the stored frames exactly
    assert np.array_equal(frame_gaussians(seq, 3).position, seq.channels["position"][3])


def test_nlerp_takes_the_short_way_for_opposite_sign_quaternions(tmp_path, make_gaussians):
    ch = {"position": np.zeros((2, 1, 3), np.float32),
          "rotation": np.array([[[1, 0, 0, 0]], [[-np.cos(0.1), -np.sin(0.1), 0, 0]]], np.float32)}
    seq = read_sequence(write_sequence(tmp_path / "q.lw4d", make_gaussians(2, 0), [0], ch))
    q = frame_gaussians(seq, 0.5).rotation[0]
    assert q[0] > 0.99 and q[1] > 0  # halfway between 0 and 0.2 rad about x, not through the far side


def test_loop_wraps_and_non_loop_clamps(seq_path, tmp_path, make_gaussians):
    seq = read_sequence(seq_path)
    assert frame_weights(seq, T - 0.5) == (T - 1, 0, 0.5)  # last frame blends into the first
    assert frame_weights(seq, T + 2.0) == (2, 3, 0.0)
    assert frame_weights(seq, -1.0) == (T - 1, 0, 0.0)
    once = read_sequence(write_sequence(tmp_path / "once.lw4d", make_gaussians(N, 1), INDEX, channels(), loop=False))
    assert frame_weights(once, T + 3.0) == (T - 1, T - 1, 0.0)
    assert frame_weights(once, -2.0) == (0, 1, 0.0)
    np.testing.assert_allclose(frame_gaussians(seq, T - 0.5).position,
                               0.5 * channels()["position"][T - 1] + 0.5 * channels()["position"][0], rtol=1e-6)


def test_gaussians_at_replaces_only_the_dynamic_subset(seq_path, make_gaussians):
    seq = read_sequence(seq_path)
    g = gaussians_at(seq, 2)
    base = make_gaussians(N, 1)
    static = np.setdiff1d(np.arange(N), INDEX)
    assert np.array_equal(g.means[static], base.means[static])
    assert np.array_equal(g.means[INDEX], channels()["position"][2])
    np.testing.assert_allclose(g.opacities()[INDEX], channels()["opacity"][2], atol=1e-5)
    np.testing.assert_allclose(g.scales()[INDEX], channels()["scale"][2], rtol=1e-5)
    np.testing.assert_allclose(0.5 + 0.28209479177387814 * g.sh[INDEX, 0], channels()["color"][2], atol=1e-6)
    assert np.array_equal(g.sh[INDEX, 1:], base.sh[INDEX, 1:])


def test_streaming_writer_frame_by_frame(tmp_path, make_gaussians):
    ch = channels(1)
    with SequenceWriter(tmp_path / "s.lw4d", make_gaussians(N, 0), INDEX, frame_count=T,
                        channels=("position", "opacity"), fps=30) as w:
        for t in range(T):
            assert not (tmp_path / "s.lw4d").exists()  # nothing visible until the last frame is in
            w.append(position=ch["position"][t], opacity=ch["opacity"][t])
    seq = read_sequence(tmp_path / "s.lw4d")
    assert set(seq.channels) == {"position", "opacity"} and seq.fps == 30.0 and not seq.loop
    assert np.array_equal(seq.channels["position"], ch["position"])
    assert frame_gaussians(seq, 0).rotation is None


def test_crash_mid_write_keeps_the_previous_sequence(seq_path, make_gaussians):
    before = np.array(read_sequence(seq_path).channels["position"])
    with (pytest.raises(RuntimeError, match="simulated crash"),
          SequenceWriter(seq_path, make_gaussians(N, 1), INDEX, frame_count=T, replace=True) as w):
        w.append(position=np.ones((M, 3), np.float32))
        raise RuntimeError("simulated crash")
    assert np.array_equal(read_sequence(seq_path).channels["position"], before)
    assert sorted(p.name for p in seq_path.parent.iterdir()) == ["a.lw4d"]  # no temp folder left


def test_incomplete_writer_is_refused_and_replacing_works(seq_path, make_gaussians):
    with (pytest.raises(InvalidInput, match="2 of 5 frames written"),
          SequenceWriter(seq_path, make_gaussians(N, 1), INDEX, frame_count=T, replace=True) as w):
        w.append(position=np.zeros((M, 3), np.float32))
        w.append(position=np.zeros((M, 3), np.float32))
    assert sorted(p.name for p in seq_path.parent.iterdir()) == ["a.lw4d"]
    ch = {"position": np.full((2, M, 3), 7.0, np.float32)}
    write_sequence(seq_path, make_gaussians(N, 1), INDEX, ch, replace=True)
    assert read_sequence(seq_path).frame_count == 2
    assert sorted(p.name for p in seq_path.parent.iterdir()) == ["a.lw4d"]


def test_write_validation(tmp_path, make_gaussians):
    base = make_gaussians(N, 0)
    ch = channels()
    with pytest.raises(InvalidInput, match="out of range 0..11"):
        write_sequence(tmp_path / "x.lw4d", base, [0, 12], {"position": ch["position"][:, :2]})
    with pytest.raises(InvalidInput, match="lists 1 Gaussians twice"):
        write_sequence(tmp_path / "x.lw4d", base, [3, 3], {"position": ch["position"][:, :2]})
    with pytest.raises(InvalidInput, match=r"channel position has shape \(3, 3\), expected \(4, 3\)"):
        write_sequence(tmp_path / "x.lw4d", base, INDEX, {"position": ch["position"][:, :3]})
    with pytest.raises(InvalidInput, match="channel opacity has 2 frames, position has 5"):
        write_sequence(tmp_path / "x.lw4d", base, INDEX, {"position": ch["position"], "opacity": ch["opacity"][:2]})
    bad = ch["position"].copy()
    bad[3, 1, 0] = np.nan
    with pytest.raises(InvalidInput, match="frame 3: channel position holds 1 NaN"):
        write_sequence(tmp_path / "x.lw4d", base, INDEX, {"position": bad})
    with pytest.raises(InvalidInput, match="outside 0..1"):
        write_sequence(tmp_path / "x.lw4d", base, INDEX, {"position": ch["position"], "opacity": ch["opacity"] + 1})
    with pytest.raises(InvalidInput, match="needs the position channel"):
        write_sequence(tmp_path / "x.lw4d", base, INDEX, {"opacity": ch["opacity"]})
    with pytest.raises(InvalidInput, match="unknown .lw4d channels"):
        write_sequence(tmp_path / "x.lw4d", base, INDEX, {"position": ch["position"], "velocity": ch["position"]})
    assert list(tmp_path.iterdir()) == []


def _edit_manifest(path, **changes):
    m = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**m, **changes}))


def test_read_validation(seq_path, tmp_path):
    with pytest.raises(NotFound):
        read_sequence(tmp_path / "none.lw4d")
    _edit_manifest(seq_path, version=2)
    with pytest.raises(InvalidInput, match="version 2 is not supported"):
        read_sequence(seq_path)
    _edit_manifest(seq_path, version=1, dynamic_count=5)
    with pytest.raises(InvalidInput, match=r"dynamic_index.npy: shape \(4,\), expected \(5,\)"):
        read_sequence(seq_path)
    _edit_manifest(seq_path, dynamic_count=4, frame_count=6)
    with pytest.raises(InvalidInput, match=r"shape \(5, 4, 3\), expected \(6, 4, 3\)"):
        read_sequence(seq_path)
    _edit_manifest(seq_path, frame_count=5)
    np.save(seq_path / "dynamic_index.npy", INDEX.astype(np.int32))
    with pytest.raises(InvalidInput, match="dtype int32, expected int64"):
        read_sequence(seq_path)
    np.save(seq_path / "dynamic_index.npy", np.array([1, 4, 5, 99]))
    with pytest.raises(InvalidInput, match="1 dynamic_index values out of range"):
        read_sequence(seq_path)
    np.save(seq_path / "dynamic_index.npy", INDEX)
    np.save(seq_path / "scale.npy", np.zeros((T, M, 3), np.float64))
    with pytest.raises(InvalidInput, match="scale.npy: dtype float64, expected float32"):
        read_sequence(seq_path)
    opacity = channels()["opacity"]
    opacity[2, 3] = np.inf
    np.save(seq_path / "scale.npy", channels()["scale"])
    np.save(seq_path / "opacity.npy", opacity)
    read_sequence(seq_path)  # structure is fine; values are only scanned on request
    with pytest.raises(InvalidInput, match="opacity.npy frame 2: channel opacity holds 1 NaN or infinite"):
        read_sequence(seq_path, check_values=True)
    (seq_path / "color.npy").unlink()
    (seq_path / "base.ply").unlink()
    with pytest.raises(InvalidInput, match="missing files base.ply, color.npy"):
        read_sequence(seq_path)
    (seq_path / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        read_sequence(seq_path)


@pytest.mark.parametrize("field,value,expect", [
    ("channels", ["position"], "channels: Input should be a valid dictionary"),
    ("channels", {"position": "float64"}, "channels.position: Input should be 'float32'"),
    ("channels", {"velocity": "float32"}, "position is required"),
    ("frame_count", "abc", "frame_count: Input should be a valid integer"),
    ("frame_count", "5", "frame_count: Input should be a valid integer"),
    ("frame_count", 0, "frame_count: Input should be greater than or equal to 1"),
    ("frame_count", True, "frame_count: Input should be a valid integer"),
    ("frame_count", 5.5, "frame_count: Input should be a valid integer"),
    ("fps", "24", "fps: Input should be a valid number"),
    ("fps", 0, "fps: Input should be greater than 0"),
    ("fps", float("nan"), "fps: Input should be a finite number"),
    ("fps", float("inf"), "fps: Input should be a finite number"),
    ("loop", "yes", "loop: Input should be a valid boolean"),
    ("count", -1, "count: Input should be greater than or equal to 1"),
    ("dynamic_count", 99, "dynamic_count 99 is more than count 12"),
    ("dynamic_count", None, "dynamic_count: Input should be a valid integer"),
    ("coordinate_frame", 5, "coordinate_frame: Input should be a valid string"),
])
def test_every_malformed_manifest_field_is_a_one_line_error(seq_path, field, value, expect):
    _edit_manifest(seq_path, **{field: value})
    with pytest.raises(InvalidInput) as err:
        read_sequence(seq_path)
    msg = str(err.value)
    assert expect in msg and str(seq_path / "manifest.json") in msg and "\n" not in msg


def test_missing_manifest_fields_are_named(seq_path):
    m = json.loads((seq_path / "manifest.json").read_text())
    del m["fps"], m["channels"]
    (seq_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InvalidInput, match="fps: Field required; channels: Field required"):
        read_sequence(seq_path)
    (seq_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(InvalidInput, match="not a .lw4d manifest"):
        read_sequence(seq_path)
    (seq_path / "manifest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        read_sequence(seq_path)


class _Planted:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("name", ["dynamic_index.npy", "position.npy"])
def test_array_files_are_never_unpickled_and_bad_ones_are_one_line_errors(seq_path, tmp_path, name):
    marker = tmp_path / "ran"
    np.save(seq_path / name, np.array([_Planted(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match=f"{name}: not a readable numpy array file"):
        read_sequence(seq_path, mmap=False)
    assert not marker.exists()
    (seq_path / name).write_bytes((seq_path / name).read_bytes()[:40])  # truncated header
    with pytest.raises(InvalidInput, match=f"{name}: not a readable numpy array file"):
        read_sequence(seq_path)


@pytest.mark.parametrize("index,expect", [
    (np.zeros((2, 2), np.int64), r"shape \(2, 2\), expected \(4,\)"),
    (INDEX.astype(np.float32), "dtype float32, expected int64"),
    (np.array([1, 1, 5, 9]), "lists 1 Gaussians twice"),
    (np.array([1, 4, 5, -1]), "1 dynamic_index values out of range"),
])
def test_a_dynamic_index_of_the_wrong_shape_dtype_or_values_is_refused(seq_path, index, expect):
    np.save(seq_path / "dynamic_index.npy", index)
    with pytest.raises(InvalidInput, match=expect):
        read_sequence(seq_path)


@pytest.mark.parametrize("array,expect", [
    (np.zeros((T, M, 4), np.float32), r"position.npy: shape \(5, 4, 4\), expected \(5, 4, 3\)"),
    (np.zeros((T, M, 3), ">f4"), "position.npy: dtype >f4, expected float32"),
    (np.zeros((T, M, 3), np.int32), "position.npy: dtype int32, expected float32"),
    (np.zeros(()), r"position.npy: dtype float64, expected float32"),
])
def test_channel_arrays_of_the_wrong_shape_or_dtype_are_refused(seq_path, array, expect):
    np.save(seq_path / "position.npy", array)
    with pytest.raises(InvalidInput, match=expect):
        read_sequence(seq_path)


def test_the_writer_refuses_a_user_folder_at_once_and_never_deletes_it(tmp_path, make_gaussians):
    mine = tmp_path / "mine.lw4d"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"format": "lw4d"}')  # looks like a sequence...
    (mine / "notes.txt").write_text("keep me")  # ...but holds a file no sequence has
    for replace in (False, True):
        with pytest.raises(InvalidInput, match="is not a .lw4d sequence LivingWorld wrote"):
            SequenceWriter(mine, make_gaussians(N, 0), INDEX, frame_count=T, replace=replace)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.lw4d"]  # refused before a temporary folder was made
    (tmp_path / "file.lw4d").write_text("a file")
    with pytest.raises(InvalidInput, match="already exists"):
        write_sequence(tmp_path / "file.lw4d", make_gaussians(N, 0), INDEX, channels(), replace=True)
    assert (tmp_path / "file.lw4d").read_text() == "a file"


def test_a_path_created_while_the_writer_ran_is_not_replaced(tmp_path, make_gaussians):
    path = tmp_path / "late.lw4d"
    with (pytest.raises(InvalidInput, match="already exists and is not a .lw4d sequence"),
          SequenceWriter(path, make_gaussians(N, 0), INDEX, frame_count=1) as w):
        w.append(position=np.zeros((M, 3), np.float32))
        path.mkdir()
        (path / "theirs.txt").write_text("x")  # someone else's folder appears before the rename
    assert (path / "theirs.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.lw4d"]
