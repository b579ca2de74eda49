"""backend/io/decoded.py: the decoded Gaussians folder and its inverse (Blender export -> PLY)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.errors import InvalidInput, NotFound
from backend.gaussians import SH_C0
from backend.io.decoded import ARRAY_FILES, read_decoded, write_decoded
from backend.io.ply import read_ply, write_ply


def test_decoded_folder_matches_the_contract(tmp_path, make_gaussians):
    g = make_gaussians(20, 2, seed=4)
    g.quats[3] = 0.0  # a degenerate quaternion becomes the identity
    folder = write_decoded(tmp_path / "decoded", g, source="/data/scene.ply", sequence=tmp_path / "s.lw4d")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == {"version": 1, "count": 20, "sh_degree": 2, "source": "/data/scene.ply",
                        "sequence": str((tmp_path / "s.lw4d").absolute())}
    shapes = {"position.npy": (20, 3), "scale.npy": (20, 3), "rotation.npy": (20, 4), "opacity.npy": (20,),
              "color.npy": (20, 3), "sh.npy": (20, 9, 3)}
    arrays = {}
    for name in ARRAY_FILES:
        a = arrays[name] = np.load(folder / name)
        assert a.shape == shapes[name] and a.dtype == np.dtype("<f4") and a.flags.c_contiguous, name
    assert np.array_equal(arrays["position.npy"], g.means)
    np.testing.assert_allclose(arrays["scale.npy"], np.exp(g.log_scales.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(arrays["opacity.npy"], 1 / (1 + np.exp(-g.opacity_logits.astype(np.float64))),
                               rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(arrays["rotation.npy"], axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(arrays["rotation.npy"][3], [1, 0, 0, 0])
    np.testing.assert_allclose(arrays["rotation.npy"][0], g.quats[0] / np.linalg.norm(g.quats[0]), rtol=1e-6)
    np.testing.assert_allclose(arrays["color.npy"], np.clip(0.5 + SH_C0 * g.sh[:, 0], 0, 1), rtol=1e-6)
    assert np.array_equal(arrays["sh.npy"], g.sh)
    assert manifest["sequence"] is not None and sorted(p.name for p in tmp_path.iterdir()) == ["decoded"]


@pytest.mark.parametrize("degree", [0, 3])
def test_export_round_trip_ply_decoded_ply(tmp_path, make_gaussians, degree):
    """import (PLY -> decoded) then export (decoded -> PLY) keeps every attribute within float tolerance."""
    g = make_gaussians(200, degree, seed=5)
    write_ply(tmp_path / "in.ply", g)
    write_decoded(tmp_path / "decoded", read_ply(tmp_path / "in.ply"), source=tmp_path / "in.ply")
    write_ply(tmp_path / "out.ply", read_decoded(tmp_path / "decoded"))
    back = read_ply(tmp_path / "out.ply")
    assert np.array_equal(back.means, g.means) and np.array_equal(back.sh, g.sh)
    np.testing.assert_allclose(back.log_scales, g.log_scales, atol=1e-5)
    np.testing.assert_allclose(back.opacity_logits, g.opacity_logits, atol=1e-3)  # |logit| <= 4
    np.testing.assert_allclose(back.opacities(), g.opacities(), atol=1e-6)
    np.testing.assert_allclose(back.quats, g.unit_quats(), atol=1e-6)


def test_fully_opaque_and_zero_scale_stay_finite(tmp_path, make_gaussians):
    g = make_gaussians(3, 0)
    write_decoded(tmp_path / "d", g)
    np.save(tmp_path / "d" / "opacity.npy", np.array([0.0, 1.0, 0.5], np.float32))
    np.save(tmp_path / "d" / "scale.npy", np.zeros((3, 3), np.float32))
    back = read_decoded(tmp_path / "d")
    assert np.isfinite(back.opacity_logits).all() and np.isfinite(back.log_scales).all()
    np.testing.assert_allclose(back.opacities(), [0, 1, 0.5], atol=1e-6)


def test_folder_without_sh_reads_colour_as_degree_zero(tmp_path, make_gaussians):
    g = make_gaussians(4, 1)
    g.sh[:, 0] = 0.3  # colour 0.5 + 0.3 SH_C0, inside 0..1
    write_decoded(tmp_path / "d", g)
    (tmp_path / "d" / "sh.npy").unlink()
    back = read_decoded(tmp_path / "d")
    assert back.sh.shape == (4, 1, 3)
    np.testing.assert_allclose(back.sh[:, 0], 0.3, atol=1e-6)


def test_rewriting_replaces_the_folder_only_when_told(tmp_path, make_gaussians):
    write_decoded(tmp_path / "d", make_gaussians(5, 3))
    with pytest.raises(InvalidInput, match="already holds a decoded Gaussians folder; pass replace=true"):
        write_decoded(tmp_path / "d", make_gaussians(2, 0))
    assert len(read_decoded(tmp_path / "d")) == 5
    write_decoded(tmp_path / "d", make_gaussians(2, 0), replace=True)
    assert len(read_decoded(tmp_path / "d")) == 2 and np.load(tmp_path / "d" / "sh.npy").shape == (2, 1, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_folder_with_other_files_is_never_replaced(tmp_path, make_gaussians):
    write_decoded(tmp_path / "d", make_gaussians(5, 3))
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="is not a decoded Gaussians folder LivingWorld wrote"):
        write_decoded(tmp_path / "d", make_gaussians(2, 0), replace=True)
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine" and len(read_decoded(tmp_path / "d")) == 5


def test_bad_decoded_folders(tmp_path, make_gaussians):
    with pytest.raises(NotFound, match="no manifest.json"):
        read_decoded(tmp_path)
    write_decoded(tmp_path / "d", make_gaussians(5, 0))
    np.save(tmp_path / "d" / "position.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(InvalidInput, match=r"position.npy: shape \(4, 3\), expected \(5, 3\)"):
        read_decoded(tmp_path / "d")
    pos = np.zeros((5, 3), np.float32)
    pos[1, 2] = np.nan
    np.save(tmp_path / "d" / "position.npy", pos)
    with pytest.raises(InvalidInput, match="1 of 5 rows hold NaN"):
        read_decoded(tmp_path / "d")
    np.save(tmp_path / "d" / "position.npy", np.zeros((5, 3), np.int32))
    with pytest.raises(InvalidInput, match="dtype int32, expected float32"):
        read_decoded(tmp_path / "d")
    np.save(tmp_path / "d" / "position.npy", np.zeros((5, 3), np.float32))
    np.save(tmp_path / "d" / "opacity.npy", np.full(5, 1.5, np.float32))
    with pytest.raises(InvalidInput, match="5 opacities outside 0..1"):
        read_decoded(tmp_path / "d")
    (tmp_path / "d" / "rotation.npy").unlink()
    with pytest.raises(InvalidInput, match="lacks rotation.npy"):
        read_decoded(tmp_path / "d")
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({**m, "version": 7}))
    with pytest.raises(InvalidInput, match="version 7 is not supported"):
        read_decoded(tmp_path / "d")
