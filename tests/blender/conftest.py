"""Fixtures for every add-on test: headless Blender (the bpy wheel) with the extension installed from its zip.

One Blender per process: all tests of tests/blender run in one pytest process, sharing one installed extension
and (where they ask for it) one backend process.

Fixtures:
    extension_zip  (session)  the zip built by scripts/build_extension.py (Blender's blender_ext.py) from this tree
    workspace      (session)  the temp workspace folder the preferences point at
    addon          (function) installed + enabled module name ``bl_ext.user_default.livingworld``, preferences
                              set to this repository's ``.venv/bin/python`` and a per-session temp workspace
    prefs          (function) the extension's AddonPreferences, set up as in ``addon``
    backend_python (session)  this repository's ``.venv/bin/python``
    lw             (function) the installed extension package (``lw.lw_blender.connection.jobs`` etc.), enabled as ``addon``
    backend        (function) a running local backend started through ``bpy.ops.lw.backend_start()`` (reused
                              between tests, restarted if a test stopped or killed it; stopped at session end);
                              returns the ``client.Client``
    drain          (function) ``drain(job_id, timeout, on_each=None)``: drives the UI path by hand (timers never
                              fire headless), calling ``jobs.drain_updates()`` until the job's on_done ran
    clean_scene    (function) an empty scene (``wm.read_homefile(use_empty=True, use_factory_startup=True)``),
                              add-on still enabled; returns ``bpy.context.scene``
    front_camera   (function) ``front_camera(scene, size=32)``: a new scene camera at (0, -4, 0.2) looking along +Y,
                              a square image of ``size`` px; returns the camera object

Blender's user config and shader caches are sandboxed in temp dirs (set before bpy is imported).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

_SANDBOX = Path(tempfile.mkdtemp(prefix="lw-blender-tests-"))
os.environ["BLENDER_USER_RESOURCES"] = str(_SANDBOX / "user")
os.environ["XDG_CACHE_HOME"] = str(_SANDBOX / "cache")

import bpy
import pytest

REPO = Path(__file__).resolve().parents[2]
ADDON_MODULE = "bl_ext.user_default.livingworld"
BACKEND_PYTHON = REPO / ".venv" / "bin" / "python"

sys.path.insert(0, str(REPO / "scripts"))
import build_extension


@pytest.fixture(scope="session")
def extension_zip() -> Path:
    return build_extension.build(REPO, _SANDBOX / "dist")


@pytest.fixture(scope="session")
def workspace() -> Path:
    ws = _SANDBOX / "workspace"
    ws.mkdir(exist_ok=True)
    return ws


@pytest.fixture(scope="session")
def _installed(extension_zip) -> str:
    result = bpy.ops.extensions.package_install_files(filepath=str(extension_zip), repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}, result
    yield ADDON_MODULE
    # Stops the backend (unregister kills it) before the process exits.
    bpy.ops.preferences.addon_disable(module=ADDON_MODULE)


def _enabled() -> bool:
    return ADDON_MODULE in bpy.context.preferences.addons


@pytest.fixture
def addon(_installed, workspace) -> str:
    if not _enabled():  # read_factory_settings (or a test) disabled it
        bpy.ops.preferences.addon_enable(module=ADDON_MODULE)
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    if not BACKEND_PYTHON.exists():
        pytest.fail(f"{BACKEND_PYTHON} is missing: run `make envs` first")
    prefs.backend_python = str(BACKEND_PYTHON)
    prefs.backend_url = ""
    prefs.backend_token = ""
    prefs.workspace = str(workspace)
    return ADDON_MODULE


@pytest.fixture
def prefs(addon):
    """The extension's AddonPreferences (already set up as in ``addon``)."""
    return bpy.context.preferences.addons[addon].preferences


@pytest.fixture(scope="session")
def backend_python() -> Path:
    """This repository's backend Python (``.venv/bin/python``), for tests that start a backend themselves."""
    return BACKEND_PYTHON


@pytest.fixture
def lw(addon):
    return importlib.import_module(addon)


@pytest.fixture(scope="session")
def _backend_session(_installed):
    yield
    if _enabled():
        bpy.ops.lw.backend_stop()


@pytest.fixture
def backend(lw, _backend_session):
    assert bpy.ops.lw.backend_start() == {"FINISHED"}
    client = lw.lw_blender.connection.jobs.ensure_backend(bpy.context)
    bpy.context.window_manager.lw_runtime.last_error = ""
    return client


@pytest.fixture
def clean_scene(addon):
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    if not _enabled():
        bpy.ops.preferences.addon_enable(module=ADDON_MODULE)
    return bpy.context.scene


@pytest.fixture
def drain(lw):
    import time

    jobs = lw.lw_blender.connection.jobs

    def run(job_id: str, timeout: float = 30.0, on_each=None) -> None:
        deadline = time.monotonic() + timeout
        while job_id in jobs.pending_jobs():
            assert time.monotonic() < deadline, f"job {job_id} did not end within {timeout} s"
            jobs.drain_updates()
            if on_each is not None:
                on_each()
            time.sleep(0.02)

    return run


@pytest.fixture
def front_camera():
    from mathutils import Euler

    def make(scene, size: int = 32):
        cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
        scene.collection.objects.link(cam)
        cam.location = (0.0, -4.0, 0.2)
        cam.rotation_euler = Euler((3.141592653589793 / 2, 0.0, 0.0))
        scene.camera = cam
        scene.render.resolution_x = scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        bpy.context.view_layer.update()
        return cam

    return make
