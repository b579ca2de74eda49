"""``lw doctor`` names what would run, and why: on this CPU machine, and on a faked CUDA machine with and without
gsplat. Its provider answers agree with what ``make_*`` really builds."""

import json
import sys

import pytest
import torch

from backend import cli, doctor
from backend.models.config import ModelConfig, describe, make_depth, make_outpaint, make_segmentation
from backend.render import gsplat_backend


@pytest.fixture
def empty_hf_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine whose torch sees a GPU (only the availability check is faked) and has no real gsplat."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in [m for m in sys.modules if m == "gsplat" or m.startswith("gsplat.")]:
        monkeypatch.delitem(sys.modules, name)
    gsplat_backend.status.cache_clear()
    yield monkeypatch
    for name in [m for m in sys.modules if m == "gsplat" or m.startswith("gsplat.")]:
        del sys.modules[name]
    gsplat_backend.status.cache_clear()


def test_cpu_machine_report_names_the_reference_renderer_and_the_builtin_fallbacks(empty_hf_cache, capsys):
    assert cli.main(["doctor", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    if torch.cuda.is_available():
        pytest.skip("this test describes a machine without CUDA")
    assert rep["renderer"]["provider"] == "reference (torch, CPU)"
    assert "CUDA build of torch" in rep["renderer"]["reason"]
    assert rep["hash_grid"]["provider"] == "torch"
    p = rep["providers"]
    assert p["depth"]["provider"] == "builtin:landscape"
    # the README's command, the same one a world's fallback note gives
    from backend.models.config import ModelConfig
    from backend.world.pipeline import fallback_notes

    command = "`.venv/bin/hf download depth-anything/Depth-Anything-V2-Small-hf`"
    assert command in p["depth"]["reason"]
    assert command in fallback_notes(ModelConfig(), {"depth": "builtin:landscape"})[0]
    assert p["segmentation"]["provider"] == "heuristic"
    assert p["outpaint"]["provider"] == "builtin:pyramid" and p["outpaint"]["device"] == "cpu"


def test_text_report_has_one_line_per_component(empty_hf_cache, capsys):
    assert cli.main(["doctor", "--depth", "builtin"]) == 0
    out = capsys.readouterr().out
    for label in ("renderer:", "hash grid:", "segmentation:", "depth:", "outpaint:"):
        assert sum(line.startswith(label) for line in out.splitlines()) == 1, (label, out)
    assert "depth:         builtin:landscape [" in out and "the setting is 'builtin'" in out


def test_cuda_without_gsplat_says_the_reference_runs_on_cuda_and_how_to_install(fake_cuda):
    fake_cuda.setitem(sys.modules, "gsplat", None)
    fake_cuda.setattr(doctor.importlib.util, "find_spec", lambda name, *a: None if name == "gsplat" else object())
    r = doctor.renderer(build=False)
    assert r["provider"] == "reference (torch, CUDA)" and "make gpu" in r["reason"]


def _fake_gsplat(root, backend_body):
    (root / "gsplat" / "cuda").mkdir(parents=True)
    (root / "gsplat" / "__init__.py").write_text("__version__ = '1.5.3'\n")
    (root / "gsplat" / "cuda" / "__init__.py").write_text("")
    (root / "gsplat" / "cuda" / "_backend.py").write_text(backend_body)


def test_cuda_with_gsplat_not_built_yet_says_the_first_render_builds_it(fake_cuda, tmp_path):
    _fake_gsplat(tmp_path / "site", "raise RuntimeError('a doctor without --build must not build')\n")
    fake_cuda.syspath_prepend(str(tmp_path / "site"))
    fake_cuda.setattr(doctor, "gsplat_build_folder", lambda: tmp_path / "ext" / "gsplat_cuda")
    r = doctor.renderer(build=False)
    assert r["provider"] == "gsplat (kernels not built yet)"
    assert "lw doctor --build" in r["reason"] and "TORCH_CUDA_ARCH_LIST" in r["reason"]


def test_cuda_with_a_prebuilt_gsplat_wheel_reports_gsplat_not_kernels_to_build(fake_cuda, tmp_path):
    """A gsplat wheel with compiled kernels (the module ``gsplat.csrc``) needs no JIT build: no build folder, and
    the renderer is gsplat."""
    _fake_gsplat(tmp_path / "wheel", "from gsplat import csrc as _C\n")
    (tmp_path / "wheel" / "gsplat" / "csrc.py").write_text("")
    fake_cuda.syspath_prepend(str(tmp_path / "wheel"))
    fake_cuda.setattr(doctor, "gsplat_build_folder", lambda: tmp_path / "ext" / "gsplat_cuda")
    r = doctor.renderer(build=False)
    assert r["provider"] == "gsplat" and r["reason"] == "gsplat 1.5.3; kernels in the gsplat wheel (prebuilt)"


def test_cuda_with_built_gsplat_reports_gsplat_and_a_failed_build_reports_why(fake_cuda, tmp_path):
    _fake_gsplat(tmp_path / "ok", "_C = object()\n")
    fake_cuda.syspath_prepend(str(tmp_path / "ok"))
    built = tmp_path / "ext" / "gsplat_cuda"
    built.mkdir(parents=True)
    (built / "gsplat_cuda.so").write_bytes(b"")
    fake_cuda.setattr(doctor, "gsplat_build_folder", lambda: built)
    r = doctor.renderer(build=False)
    assert r["provider"] == "gsplat" and r["reason"].startswith("gsplat 1.5.3; kernels in ")

    for name in [m for m in sys.modules if m.startswith("gsplat")]:
        del sys.modules[name]
    gsplat_backend.status.cache_clear()
    _fake_gsplat(tmp_path / "broken", "raise RuntimeError(\"Error building extension 'gsplat_cuda'\")\n")
    fake_cuda.syspath_prepend(str(tmp_path / "broken"))
    fake_cuda.setattr(doctor, "gsplat_build_folder", lambda: tmp_path / "none")
    r = doctor.renderer(build=True)
    assert r["provider"] == "reference (torch, CUDA)" and "Error building extension" in r["reason"]


def test_describe_agrees_with_what_make_builds(tiny_depth_anything, tiny_segformer, tiny_sd2_inpainting,
                                               empty_hf_cache, tmp_path):
    named = ModelConfig(depth=str(tiny_depth_anything), segmentation=str(tiny_segformer),
                        outpaint=str(tiny_sd2_inpainting), device="cpu")
    d = describe(named)
    assert d["depth"][0] == make_depth(named).name and "weights at" in d["depth"][1]
    assert d["segmentation"][0] == make_segmentation(named).name
    assert d["outpaint"][0] == make_outpaint(named).name
    auto = ModelConfig(device="cpu")
    d = describe(auto)
    assert d["depth"][0] == make_depth(auto).name == "builtin:landscape"
    assert d["outpaint"][0] == make_outpaint(auto).name == "builtin:pyramid"
    missing = describe(ModelConfig(depth=str(tmp_path / "nowhere")))
    assert missing["depth"][1].startswith("NOT USABLE: the weights of")
