"""backend/io jobs (import_gaussians, export_gaussians) run inline, and the ``lw io`` commands."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from backend.errors import InvalidInput, JobCancelled, NotFound
from backend.io.cli import add_parser
from backend.io.decoded import read_decoded
from backend.io.jobs import ImportGaussiansParams, import_gaussians
from backend.io.lw4d import write_sequence
from backend.io.ply import read_ply, write_ply
from backend.jobs import JobContext, registry, run_inline


def test_io_job_kinds_are_registered():
    kinds = registry()
    assert {"import_gaussians", "export_gaussians"} <= set(kinds)
    assert "path" in kinds["import_gaussians"].params.model_json_schema()["properties"]


def test_import_ply_writes_decoded_folder_and_reports_progress(tmp_path, make_gaussians):
    g = make_gaussians(30, 2)
    write_ply(tmp_path / "scene.ply", g)
    seen = []
    artifacts = run_inline("import_gaussians", {"path": str(tmp_path / "scene.ply")}, tmp_path / "ws",
                           job_id="j1", on_progress=lambda f, m: seen.append((f, m)))
    assert artifacts == [f"jobs/j1/decoded/{n}" for n in ("manifest.json", "position.npy", "scale.npy",
                                                           "rotation.npy", "opacity.npy", "color.npy", "sh.npy")]
    folder = tmp_path / "ws" / "jobs" / "j1" / "decoded"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["count"] == 30 and manifest["sh_degree"] == 2 and manifest["sequence"] is None
    assert manifest["source"] == str(tmp_path / "scene.ply")
    assert np.array_equal(np.load(folder / "position.npy"), g.means)
    assert seen[0][0] == 0.0 and seen[-1] == (1.0, "decoded 30 Gaussians")


def test_import_lw4d_decodes_base_and_names_the_sequence(tmp_path, make_gaussians):
    base = make_gaussians(10, 0)
    pos = np.random.default_rng(0).normal(size=(3, 2, 3)).astype(np.float32)
    seq = write_sequence(tmp_path / "loop.lw4d", base, [2, 7], {"position": pos}, fps=8, loop=True)
    seen = []
    run_inline("import_gaussians", {"path": str(seq)}, tmp_path / "ws", job_id="j2",
               on_progress=lambda f, m: seen.append((f, m)))
    assert (0.1 + 0.6, "checking frames") in seen  # every frame scanned, with progress
    folder = tmp_path / "ws" / "jobs" / "j2" / "decoded"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sequence"] == str(seq.absolute()) and manifest["count"] == 10
    assert np.array_equal(np.load(folder / "position.npy"), base.means)


def test_import_of_a_sequence_can_be_cancelled_while_checking_frames(tmp_path, make_gaussians):
    seq = write_sequence(tmp_path / "s.lw4d", make_gaussians(4, 0), [1], {"position": np.zeros((3, 1, 3), np.float32)})
    ctx = JobContext(workspace=tmp_path, job_dir=tmp_path / "jobs" / "c",
                     on_progress=lambda f, m: ctx.cancel_event.set() if m == "checking frames" else None)
    with pytest.raises(JobCancelled):
        import_gaussians(ctx, ImportGaussiansParams(path=str(seq)))
    assert not (tmp_path / "jobs" / "c" / "decoded").exists()


def test_import_rejects_bad_input_with_the_reason(tmp_path, make_gaussians):
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    with pytest.raises(InvalidInput, match="ASCII PLY is not supported"):
        run_inline("import_gaussians", {"path": str(tmp_path / "bad.ply")}, tmp_path / "ws")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match="expected a .ply file or a .lw4d"):
        run_inline("import_gaussians", {"path": str(tmp_path / "notes.txt")}, tmp_path / "ws")
    with pytest.raises(InvalidInput, match="leaves the workspace"):
        run_inline("import_gaussians", {"path": "../outside.ply"}, tmp_path / "ws")
    pos = np.zeros((2, 1, 3), np.float32)
    seq = write_sequence(tmp_path / "s.lw4d", make_gaussians(3, 0), [0], {"position": pos})
    np.save(seq / "position.npy", np.full((2, 1, 3), np.nan, np.float32))
    with pytest.raises(InvalidInput, match="position.npy frame 0: channel position holds 3 NaN"):
        run_inline("import_gaussians", {"path": str(seq)}, tmp_path / "ws")


def test_export_inside_and_outside_the_workspace(tmp_path, make_gaussians):
    g = make_gaussians(12, 1)
    write_ply(tmp_path / "in.ply", g)
    ws = tmp_path / "ws"
    run_inline("import_gaussians", {"path": str(tmp_path / "in.ply")}, ws, job_id="imp")
    artifacts = run_inline("export_gaussians", {"decoded": "jobs/imp/decoded", "path": "exports/out.ply"}, ws)
    assert artifacts == ["exports/out.ply"]
    back = read_ply(ws / "exports" / "out.ply")
    assert np.array_equal(back.means, g.means) and np.array_equal(back.sh, g.sh)
    np.testing.assert_allclose(back.opacities(), g.opacities(), atol=1e-6)
    messages = []
    outside = tmp_path / "elsewhere" / "out.ply"
    assert run_inline("export_gaussians", {"decoded": str(ws / "jobs/imp/decoded"), "path": str(outside)}, ws,
                      on_progress=lambda f, m: messages.append(m)) == []
    assert str(outside) in messages[-1] and len(read_ply(outside)) == 12
    with pytest.raises(InvalidInput, match="must end in .ply"):
        run_inline("export_gaussians", {"decoded": "jobs/imp/decoded", "path": "out.obj"}, ws)
    assert len(read_decoded(ws / "jobs/imp/decoded")) == 12


def main(argv: list[str]) -> int:
    """``lw`` with only the io commands (the same wiring backend.cli uses: add_parser + set_defaults(func))."""
    parser = argparse.ArgumentParser(prog="lw")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_info_and_convert(tmp_path, make_gaussians, capsys):
    g = make_gaussians(9, 3)
    g.means[:] = np.linspace(-1, 2, 27, dtype=np.float32).reshape(9, 3)
    write_ply(tmp_path / "a.ply", g)
    assert main(["io", "info", str(tmp_path / "a.ply")]) == 0
    out = capsys.readouterr().out
    assert "gaussians: 9, SH degree 3" in out and "bounds: min (-1, -0.8846, -0.7692) max (1.769, 1.885, 2)" in out
    assert main(["io", "convert", str(tmp_path / "a.ply"), str(tmp_path / "b.ply"), "--sh-degree", "1"]) == 0
    b = read_ply(tmp_path / "b.ply")
    assert b.sh_degree == 1 and np.array_equal(b.sh, g.sh[:, :4])
    seq = write_sequence(tmp_path / "s.lw4d", g, [0, 3], {"position": np.zeros((4, 2, 3), np.float32)}, fps=24)
    capsys.readouterr()
    assert main(["io", "info", str(seq)]) == 0
    out = capsys.readouterr().out
    assert "sequence: 4 frames at 24 fps" in out and "animated: 2 of 9 Gaussians" in out
    with pytest.raises(NotFound, match="does not exist"):  # backend.cli.main prints LWErrors and exits 2
        main(["io", "info", str(tmp_path / "missing.ply")])
