"""The extension as a package: Blender's validator, zip contents, registration after install from the zip."""

import subprocess
import sys
import zipfile
from pathlib import Path

import bpy
import build_extension  # scripts/, put on sys.path by conftest
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_manifest_passes_blenders_validator():
    build_extension.validate(REPO)  # raises BuildError with Blender's message otherwise


def test_manifest_with_an_invalid_id_fails_validation(tmp_path):
    text = (REPO / "blender_manifest.toml").read_text()
    assert 'id = "livingworld"' in text
    (tmp_path / "blender_manifest.toml").write_text(text.replace('id = "livingworld"', 'id = "living-world"'))
    (tmp_path / "__init__.py").write_text("def register(): pass\ndef unregister(): pass\n")
    with pytest.raises(build_extension.BuildError, match="id"):
        build_extension.validate(tmp_path)


def test_zip_holds_the_addon_and_nothing_of_backend_tests_or_tooling(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    for required in ("blender_manifest.toml", "__init__.py", "lw_blender/connection/jobs.py", "lw_blender/connection/client.py",
                     "lw_blender/splats/carrier.py",
                     "operators/backend.py", "panels/connection.py"):
        assert required in names
    excluded = ("backend/", "tests/", "bench/", "scripts/", "docs/", ".venv", ".git", "dist/", "out/", ".whl/")
    assert not [n for n in names if n.startswith(excluded)]
    assert not [n for n in names if n.endswith((".pyc", ".whl", ".zip"))]
    assert not [n for n in names if n.startswith(".")]  # no local caches (.ruff_cache, .hypothesis, ...)


def test_installed_extension_registers_operators_panel_and_properties(addon, prefs):
    assert addon in bpy.context.preferences.addons
    for op in ("backend_start", "backend_stop", "backend_restart", "job_cancel", "job_run"):
        assert getattr(bpy.ops.lw, op).idname() == f"LW_OT_{op}"
    panel = bpy.types.VIEW3D_PT_lw_connection
    assert panel.bl_category == "LivingWorld" and panel.bl_region_type == "UI"
    assert panel.__module__.startswith(addon)  # the installed copy, not the source tree
    for name in ("backend_python", "backend_url", "backend_token", "workspace"):
        assert hasattr(prefs, name)
    assert bpy.context.window_manager.lw_runtime.connection in ("DISCONNECTED", "CONNECTED", "ERROR")
    assert bpy.context.scene.lw is not None


def test_scene_settings_accept_a_capability_group(lw, clean_scene):
    state = lw.lw_blender.state

    class LW_TestSettings(bpy.types.PropertyGroup):
        strength: bpy.props.FloatProperty(default=0.5)

    bpy.utils.register_class(LW_TestSettings)
    state.add_scene_settings("test_group", LW_TestSettings)
    try:
        assert clean_scene.lw.test_group.strength == pytest.approx(0.5)
        clean_scene.lw.test_group.strength = 2.0
        assert clean_scene.lw.test_group.strength == pytest.approx(2.0)
    finally:
        state.remove_scene_settings("test_group")
        bpy.utils.unregister_class(LW_TestSettings)
    assert not hasattr(clean_scene.lw, "test_group")


def test_disabling_the_extension_stops_its_backend(lw, backend):
    proc = lw.lw_blender.connection.process.current()
    assert proc.is_alive()
    bpy.ops.preferences.addon_disable(module=lw.__name__)
    try:
        assert proc.popen.poll() is not None
        assert not hasattr(bpy.types.WindowManager, "lw_runtime")
    finally:
        bpy.ops.preferences.addon_enable(module=lw.__name__)


_BOUNDARY = r'''
import importlib, importlib.abc, importlib.util, pathlib, sys
root, blocked = pathlib.Path(sys.argv[1]), set(sys.argv[2].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"import of {name} is not allowed here")
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location("livingworld", root / "__init__.py",
                                              submodule_search_locations=[str(root)])
pkg = importlib.util.module_from_spec(spec); sys.modules["livingworld"] = pkg; spec.loader.exec_module(pkg)
for name in sys.argv[3].split(","):
    importlib.import_module("livingworld." + name)
print("imported", len(sys.argv[3].split(",")), "modules; blocked", sorted(blocked & set(sys.modules)))
'''


def _import_with_blocked(modules, blocked):
    proc = subprocess.run([sys.executable, "-c", _BOUNDARY, str(REPO), ",".join(blocked), ",".join(modules)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "blocked []" in proc.stdout


def test_addon_modules_import_without_torch_or_the_backend():
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts) for folder in ("lw_blender", "operators", "panels")
               for p in sorted((REPO / folder).rglob("*.py")) if p.stem != "__init__"]
    assert "lw_blender.connection.jobs" in modules and "operators.backend" in modules
    _import_with_blocked(modules, ["torch", "backend"])


def test_client_process_and_splat_arrays_import_without_bpy():
    _import_with_blocked(["lw_blender.connection.client", "lw_blender.connection.process", "lw_blender.splats.data",
                          "lw_blender.splats.sh"], ["bpy", "torch", "backend"])
