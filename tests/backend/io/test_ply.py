"""backend/io/ply.py: INRIA 3DGS PLY read/write, layouts other tools write, and every bad input."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings
from plyfile import PlyData

from backend.errors import InvalidInput, NotFound
from backend.gaussians import Gaussians
from backend.io.decoded import decode_scale, write_decoded
from backend.io.ply import MAX_LOG_SCALE, gaussians_to_records, read_ply, set_sh_degree, write_ply, write_ply_records

FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")


def assert_same(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == np.float32 and x.flags.c_contiguous, f
        assert np.array_equal(x, y), f


@pytest.mark.parametrize("degree", [0, 3])
def test_records_written_in_parts_make_the_file_of_the_whole(tmp_path, make_gaussians, degree):
    g = make_gaussians(50, degree, seed=7)
    g = g.with_(extra={"region": np.arange(50, dtype=np.float32), "step": np.ones(50, np.float32)})
    parts = [gaussians_to_records(g.subset(np.arange(a, b))) for a, b in ((0, 20), (20, 21), (21, 21), (21, 50))]
    write_ply_records(tmp_path / "parts.ply", parts)
    write_ply(tmp_path / "whole.ply", g)
    assert (tmp_path / "parts.ply").read_bytes() == (tmp_path / "whole.ply").read_bytes()
    assert_same(read_ply(tmp_path / "parts.ply"), g)
    other = gaussians_to_records(make_gaussians(5, 1 if degree == 0 else 0, seed=1))
    with pytest.raises(ValueError, match="layouts differ"):
        write_ply_records(tmp_path / "bad.ply", [parts[0], other])
    assert not (tmp_path / "bad.ply").exists()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_bit_exact_for_every_sh_degree(tmp_path, make_gaussians, degree):
    g = make_gaussians(40, degree, seed=degree)
    write_ply(tmp_path / "a.ply", g)
    back = read_ply(tmp_path / "a.ply")
    assert back.sh_degree == degree
    assert_same(back, g)
    assert back.extra == {}


def test_written_file_has_inria_property_order_and_channel_major_rest(tmp_path, make_gaussians, columns_of):
    g = make_gaussians(10, 2, seed=1)
    write_ply(tmp_path / "a.ply", g)
    ply = PlyData.read(str(tmp_path / "a.ply"))
    assert not ply.text and ply.byte_order == "<"
    expected = columns_of(g)
    assert [p.name for p in ply["vertex"].properties] == list(expected)
    for name, values in expected.items():
        assert np.array_equal(ply["vertex"][name], values), name
    # f_rest_i = sh[:, 1 + i % (K-1), i // (K-1)]: f_rest_8 is the 2nd channel's first rest coefficient (K=9)
    assert np.array_equal(ply["vertex"]["f_rest_8"], g.sh[:, 1, 1])


def test_reads_other_property_order_extra_properties_and_no_normals(tmp_path, make_gaussians, columns_of,
                                                                     other_tool_ply):
    g = make_gaussians(30, 3, seed=2)
    cols = columns_of(g, normals=False)
    names = list(cols)[::-1]  # reversed order
    shuffled = {name: cols[name] for name in names}
    shuffled["red"] = np.arange(30, dtype=np.uint8)
    shuffled["semantic_id"] = np.linspace(0, 1, 30, dtype=np.float32)
    other_tool_ply(tmp_path / "o.ply", shuffled, dtypes={"red": "u1"})
    back = read_ply(tmp_path / "o.ply")
    assert_same(back, g)
    assert back.extra["red"].dtype == np.uint8 and np.array_equal(back.extra["red"], np.arange(30))
    assert np.array_equal(back.extra["semantic_id"], shuffled["semantic_id"])
    # extra properties survive a write and a second read
    write_ply(tmp_path / "again.ply", back)
    again = read_ply(tmp_path / "again.ply")
    assert_same(again, g)
    assert set(again.extra) == {"red", "semantic_id"} and again.extra["red"].dtype == np.uint8


def test_reads_big_endian_and_double_properties(tmp_path, make_gaussians, columns_of, other_tool_ply):
    g = make_gaussians(25, 1, seed=3)
    cols = columns_of(g)
    other_tool_ply(tmp_path / "be.ply", cols, byte_order=">")
    assert_same(read_ply(tmp_path / "be.ply"), g)
    other_tool_ply(tmp_path / "f8.ply", cols, dtypes={name: "f8" for name in cols})
    assert_same(read_ply(tmp_path / "f8.ply"), g)
    other_tool_ply(tmp_path / "mixed.ply", cols, byte_order=">", dtypes={"x": "f8", "opacity": "f8"})
    assert_same(read_ply(tmp_path / "mixed.ply"), g)


def test_degree_zero_only_file(tmp_path, make_gaussians, columns_of, other_tool_ply):
    g = make_gaussians(5, 0)
    other_tool_ply(tmp_path / "d0.ply", columns_of(g, normals=False))
    back = read_ply(tmp_path / "d0.ply")
    assert back.sh.shape == (5, 1, 3)
    assert_same(back, g)


def test_non_zero_normals_are_kept_and_written_back(tmp_path, make_gaussians, columns_of, other_tool_ply):
    g = make_gaussians(6, 0)
    cols = columns_of(g)
    cols["nz"] = np.ones(6, np.float32)
    other_tool_ply(tmp_path / "n.ply", cols)
    back = read_ply(tmp_path / "n.ply")
    assert np.array_equal(back.extra["nz"], np.ones(6))
    write_ply(tmp_path / "n2.ply", back)
    assert np.array_equal(PlyData.read(str(tmp_path / "n2.ply"))["vertex"]["nz"], np.ones(6))


def test_writes_torch_gaussians(tmp_path, make_gaussians):
    g = make_gaussians(8, 1)
    write_ply(tmp_path / "t.ply", g.to_torch())
    assert_same(read_ply(tmp_path / "t.ply"), g)


def test_write_is_atomic_and_replaces(tmp_path, make_gaussians):
    path = tmp_path / "a.ply"
    write_ply(path, make_gaussians(5, 0, seed=1))
    bad = make_gaussians(5, 0, seed=2)
    bad.means[2, 1] = np.nan
    with pytest.raises(InvalidInput, match=r"NaN or infinite values: y \(1\)"):
        write_ply(path, bad)
    assert_same(read_ply(path), make_gaussians(5, 0, seed=1))  # previous file intact
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]  # no temp file left
    write_ply(path, make_gaussians(7, 2, seed=3))
    assert len(read_ply(path)) == 7


def test_set_sh_degree_truncates_and_pads(make_gaussians):
    g = make_gaussians(4, 2)
    assert np.array_equal(set_sh_degree(g, 0).sh, g.sh[:, :1])
    up = set_sh_degree(g, 3)
    assert up.sh.shape == (4, 16, 3) and np.array_equal(up.sh[:, :9], g.sh) and not up.sh[:, 9:].any()
    with pytest.raises(InvalidInput, match="0..3"):
        set_sh_degree(g, 4)


# Bad inputs: each rejected with a message naming the problem ------------------------------------------------

def test_rejects_ascii_ply(tmp_path, make_gaussians, columns_of, other_tool_ply):
    other_tool_ply(tmp_path / "a.ply", columns_of(make_gaussians(3, 0)), text=True)
    with pytest.raises(InvalidInput, match="ASCII PLY is not supported; save as binary"):
        read_ply(tmp_path / "a.ply")


def test_rejects_truncated_body(tmp_path, make_gaussians):
    path = tmp_path / "t.ply"
    write_ply(path, make_gaussians(10, 0))
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # degree 0: 17 float properties = 68 bytes per vertex
    with pytest.raises(InvalidInput, match=r"truncated: the header promises 10 vertices x 68 bytes = 680 bytes, "
                                           r"the file has 650 bytes \(9 whole vertices\)"):
        read_ply(path)


def test_rejects_missing_properties_listing_them(tmp_path, make_gaussians, columns_of, other_tool_ply):
    cols = columns_of(make_gaussians(3, 0))
    del cols["opacity"], cols["rot_3"]
    other_tool_ply(tmp_path / "m.ply", cols)
    with pytest.raises(InvalidInput, match="missing properties opacity, rot_3"):
        read_ply(tmp_path / "m.ply")


def test_rejects_plain_point_cloud(tmp_path, other_tool_ply):
    other_tool_ply(tmp_path / "pc.ply", {"x": np.zeros(3), "y": np.zeros(3), "z": np.zeros(3)})
    with pytest.raises(InvalidInput, match="not a 3DGS PLY: missing properties f_dc_0"):
        read_ply(tmp_path / "pc.ply")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_nan_and_inf_naming_property_and_count(tmp_path, make_gaussians, columns_of, other_tool_ply, bad):
    cols = columns_of(make_gaussians(10, 1))
    cols["scale_1"][[2, 5, 7]] = bad
    cols["f_rest_4"][0] = bad
    other_tool_ply(tmp_path / "n.ply", cols)
    with pytest.raises(InvalidInput, match=r"NaN or infinite values in scale_1 \(3 vertices\)"):
        read_ply(tmp_path / "n.ply")
    cols["scale_1"][:] = 0
    other_tool_ply(tmp_path / "n.ply", cols)
    with pytest.raises(InvalidInput, match=r"f_rest_4 \(1 vertices\)"):
        read_ply(tmp_path / "n.ply")


def test_rejects_zero_vertices(tmp_path, make_gaussians, columns_of, other_tool_ply):
    cols = {k: v[:0] for k, v in columns_of(make_gaussians(2, 0)).items()}
    other_tool_ply(tmp_path / "z.ply", cols)
    with pytest.raises(InvalidInput, match="0 vertices"):
        read_ply(tmp_path / "z.ply")


def test_rejects_files_that_are_not_ply(tmp_path):
    (tmp_path / "x.ply").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(InvalidInput, match="not a PLY file"):
        read_ply(tmp_path / "x.ply")
    (tmp_path / "h.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty floot x\n")
    with pytest.raises(InvalidInput, match="bad PLY header"):
        read_ply(tmp_path / "h.ply")
    with pytest.raises(NotFound, match="does not exist"):
        read_ply(tmp_path / "missing.ply")


def test_rejects_odd_number_of_sh_rest_properties(tmp_path, make_gaussians, columns_of, other_tool_ply):
    cols = columns_of(make_gaussians(3, 1))
    del cols["f_rest_8"]
    other_tool_ply(tmp_path / "r.ply", cols)
    with pytest.raises(InvalidInput, match="8 f_rest_"):
        read_ply(tmp_path / "r.ply")


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), degree=st.integers(0, 3), data=st.data())
def test_round_trip_holds_for_any_finite_values(tmp_path_factory, n, degree, data):
    k = (degree + 1) ** 2
    arr = lambda shape: data.draw(hnp.arrays(np.float32, shape, elements=finite32))
    log_scales = data.draw(hnp.arrays(np.float32, (n, 3), elements=st.floats(max_value=MAX_LOG_SCALE, width=32,
                                                                             allow_nan=False, allow_infinity=False)))
    g = Gaussians(arr((n, 3)), arr((n, 4)), log_scales, arr((n,)), arr((n, k, 3)))
    path = tmp_path_factory.mktemp("h") / "g.ply"
    write_ply(path, g)
    back = read_ply(path)
    for f in FIELDS:  # bit-exact, including -0.0 and subnormals
        assert getattr(back, f).tobytes() == getattr(g, f).tobytes(), f


def _raw_ply(path, header_edit, make_gaussians):
    """A PLY written by write_ply whose header text is changed by ``header_edit(bytes) -> bytes``."""
    write_ply(path, make_gaussians(3, 0))
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    path.write_bytes(header_edit(raw[:end]) + raw[end:])
    return path


@pytest.mark.parametrize("edit,expect", [
    (lambda h: h.replace(b"element vertex 3", b"element vertex -1"), "header says -1 vertices"),
    (lambda h: h.replace(b"element vertex 3", b"element vertex 99999999999999"), "truncated"),
    (lambda h: h.replace(b"element vertex 3", b"element vertex 3.5"), "bad PLY header"),
    (lambda h: h.replace(b"property float y\n", b"property float x\n"), "two properties with same name"),
    (lambda h: h.replace(b"comment", b"comment \xff\xfe"), "bad PLY header"),
    (lambda h: h.replace(b"property float x\n", b"property list uchar float x\n"), "list properties"),
    (lambda h: h.replace(b"end_header\n", b""), "bad PLY header"),
    (lambda h: h.replace(b"format binary_little_endian", b"format binary_middle_endian"), "bad PLY header"),
])
def test_malformed_headers_are_one_line_errors_naming_the_file(tmp_path, make_gaussians, edit, expect):
    path = _raw_ply(tmp_path / "bad.ply", edit, make_gaussians)
    with pytest.raises(InvalidInput, match=expect) as err:
        read_ply(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_log_scales_that_decode_to_infinity_are_refused(tmp_path, make_gaussians, columns_of, other_tool_ply):
    cols = columns_of(make_gaussians(3000, 0))
    cols["scale_1"] = np.full(3000, 200.0, np.float32)  # exp(200) is inf in float32
    path = other_tool_ply(tmp_path / "huge.ply", cols)
    with pytest.raises(InvalidInput, match=r"scale_1 \(3000 vertices\) decode to infinite sizes"):
        read_ply(path)
    cols["scale_1"] = np.full(3000, MAX_LOG_SCALE, np.float32)  # the largest that stays finite
    assert np.isfinite(decode_scale(read_ply(other_tool_ply(tmp_path / "big.ply", cols)).log_scales)).all()


def test_decoded_gaussians_are_finite_or_refused(tmp_path, make_gaussians):
    g = make_gaussians(4, 0)
    g.quats[1] = 3e19  # finite, but its squared norm overflows float32
    folder = write_decoded(tmp_path / "d", g)
    rot = np.load(folder / "rotation.npy")
    assert np.isfinite(rot).all() and np.allclose(np.linalg.norm(rot, axis=1), 1.0, atol=1e-6)
    g.log_scales[2, 0] = 100.0  # decodes to inf: never handed to Blender
    with pytest.raises(InvalidInput, match="1 of 4 Gaussians decode to NaN or infinite scale values"):
        write_decoded(tmp_path / "e", g)
    assert not (tmp_path / "e").exists()
