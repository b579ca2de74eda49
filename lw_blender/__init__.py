"""Blender-side library of the extension: preferences, backend client, jobs, Gaussians import/playback.

Each submodule listed in ``_MODULES`` may define ``register()`` / ``unregister()``; they are called in order
(and in reverse on unregister). Pure-numpy helpers here never import bpy at module level where avoidable.
"""

from .modules import import_listed

_MODULES = [
    "preferences",
    "state",
    "backend_process",
    "jobs",
    "gaussians",
    "playback",
    "world",
    "moe",
]


def _modules():
    return import_listed(__package__, _MODULES)


def register():
    for mod in _modules():
        if hasattr(mod, "register"):
            mod.register()


def unregister():
    for mod in reversed(_modules()):
        if hasattr(mod, "unregister"):
            mod.unregister()
