"""Which rasterizer runs: gsplat on CUDA when its kernels can run, else the torch reference with one warning.

The CUDA machine is faked: ``resolve_backend`` only reads the device type, and gsplat's availability comes from
fake ``gsplat`` packages put on ``sys.path`` (a working one, one whose kernel build fails, one without a toolkit).
"""

import sys
import warnings

import pytest
import torch

from backend.errors import InvalidInput
from backend.render import gsplat_backend, rasterize

CUDA = torch.device("cuda")  # a device object needs no GPU


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not checked gsplat yet, with no real gsplat importable."""
    for name in [m for m in sys.modules if m == "gsplat" or m.startswith("gsplat.")]:
        monkeypatch.delitem(sys.modules, name)
    gsplat_backend.status.cache_clear()
    rasterize._warned.clear()
    yield monkeypatch
    for name in [m for m in sys.modules if m == "gsplat" or m.startswith("gsplat.")]:
        del sys.modules[name]  # the fakes; monkeypatch then puts back a real gsplat it removed
    gsplat_backend.status.cache_clear()
    rasterize._warned.clear()


def fake_gsplat(root, backend_body: str, version: str = "1.5.3"):
    pkg = root / "gsplat"
    (pkg / "cuda").mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"__version__ = {version!r}\n")
    (pkg / "cuda" / "__init__.py").write_text("")
    (pkg / "cuda" / "_backend.py").write_text(backend_body)
    return root


def test_cuda_without_gsplat_falls_back_to_the_reference_with_one_warning(fresh):
    fresh.setitem(sys.modules, "gsplat", None)  # "not installed"
    with pytest.warns(RuntimeWarning, match=r"torch reference on CUDA.*gsplat is not installed.*make gpu") as rec:
        choices = [rasterize.resolve_backend("auto", CUDA) for _ in range(3)]
    assert choices == ["reference"] * 3
    assert len([w for w in rec if issubclass(w.category, RuntimeWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a later job in the same process stays quiet
        assert rasterize.resolve_backend("auto", CUDA) == "reference"


def test_a_failed_kernel_build_falls_back_and_says_why(fresh, tmp_path):
    fresh.syspath_prepend(str(fake_gsplat(tmp_path, "raise RuntimeError(\"Error building extension 'gsplat_cuda'\")\n")))
    with pytest.warns(RuntimeWarning, match=r"could not build its CUDA kernels \(Error building extension"):
        assert rasterize.resolve_backend("auto", CUDA) == "reference"
    ok, why = gsplat_backend.status()
    assert not ok and "lw doctor --build" in why


def test_no_cuda_toolkit_falls_back_and_says_so(fresh, tmp_path):
    fresh.syspath_prepend(str(fake_gsplat(tmp_path, "_C = None\n")))
    with pytest.warns(RuntimeWarning, match="no CUDA toolkit"):
        assert rasterize.resolve_backend("auto", CUDA) == "reference"


def test_working_gsplat_is_chosen_on_cuda_only(fresh, tmp_path):
    fresh.syspath_prepend(str(fake_gsplat(tmp_path, "_C = object()\n")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rasterize.resolve_backend("auto", CUDA) == "gsplat"
        assert rasterize.resolve_backend("gsplat", CUDA) == "gsplat"
        assert rasterize.resolve_backend("auto", torch.device("cpu")) == "reference"
        assert rasterize.resolve_backend("reference", CUDA) == "reference"
    assert gsplat_backend.status() == (True, "gsplat 1.5.3")


def test_other_gsplat_version_runs_but_is_named(fresh, tmp_path):
    fresh.syspath_prepend(str(fake_gsplat(tmp_path, "_C = object()\n", version="1.4.0")))
    assert rasterize.resolve_backend("auto", CUDA) == "gsplat"
    assert gsplat_backend.status() == (True, "gsplat 1.4.0 (the backend is tested with 1.5.3)")


def test_asking_for_gsplat_where_it_cannot_run_is_one_clear_error(fresh):
    fresh.setitem(sys.modules, "gsplat", None)
    with pytest.raises(InvalidInput, match=r"backend 'gsplat' cannot run: gsplat is not installed") as info:
        rasterize.resolve_backend("gsplat", CUDA)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidInput, match="needs CUDA tensors"):
        rasterize.resolve_backend("gsplat", torch.device("cpu"))
    with pytest.raises(InvalidInput, match="unknown rasterizer backend 'vulkan'"):
        rasterize.resolve_backend("vulkan", CUDA)
