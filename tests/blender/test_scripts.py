"""The scripts under scripts/ that run in this Blender (bpy), imported as modules: the demo's Cycles settings and the
sky set's scene seeds and output folder (nothing is rendered here)."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"lw_test_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_still_after_the_fast_loop_frames_denoises_with_albedo_and_normal(clean_scene):
    demo = _script("demo")

    def denoising():  # read afresh: use_cycles enables the Cycles add-on, which registers its settings again
        c = clean_scene.cycles
        return c.denoising_quality, c.denoising_input_passes, c.denoising_prefilter

    demo.use_cycles(clean_scene, 1, 50, denoise="FAST")  # the loop's frames
    assert denoising() == ("FAST", "RGB", "NONE")
    demo.use_cycles(clean_scene, 1, 50)  # then the still, in the same scene
    assert denoising() == ("HIGH", "RGB_ALBEDO_NORMAL", "ACCURATE")


def _sky_main(monkeypatch, *argv) -> list:
    """render_sky_set.main() with ``argv``; returns the (scene, seed) pairs it would render."""
    sky = _script("render_sky_set")
    calls = []
    monkeypatch.setattr(sky, "render", lambda name, out, size, samples, seed: calls.append((name, seed)))
    monkeypatch.setattr(sys, "argv", ["render_sky_set.py", *argv])
    sky.main()
    return calls, sky.SCENES


def test_sky_set_scene_seeds_do_not_depend_on_which_scenes_are_asked_for(monkeypatch, tmp_path):
    full, scenes = _sky_main(monkeypatch, "--out", str(tmp_path / "all"))
    assert full == [(name, i) for i, name in enumerate(scenes)]
    one, _ = _sky_main(monkeypatch, "--out", str(tmp_path / "one"), "--scenes", f"{scenes[3]},{scenes[1]}")
    assert one == [(scenes[3], 3), (scenes[1], 1)]  # as in the full set


def test_sky_set_refuses_to_overwrite_files_in_out_without_replace(monkeypatch, tmp_path, capsys):
    (tmp_path / "city.jpg").write_bytes(b"theirs")
    with pytest.raises(SystemExit) as exc:
        _sky_main(monkeypatch, "--out", str(tmp_path), "--scenes", "forest,city")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "city.jpg exists" in err and "--replace" in err
    assert (tmp_path / "city.jpg").read_bytes() == b"theirs"
    calls, _ = _sky_main(monkeypatch, "--out", str(tmp_path), "--scenes", "forest,city", "--replace")
    assert [name for name, _ in calls] == ["forest", "city"]
    with pytest.raises(SystemExit):
        _sky_main(monkeypatch, "--out", str(tmp_path), "--scenes", "atlantis")
    assert "unknown scene(s) atlantis" in capsys.readouterr().err
