"""Blender-side library of the extension.

    preferences, state     add-on preferences; Scene.lw / WindowManager.lw_runtime
    connection/            the backend connection: HTTP client, local backend process, jobs (the job API)
    splats/                carriers and their display: data, import/export, playback, backend render, quads
    world, moe, annotations   the LivingWorld and MoE-GS flows

Each submodule listed in ``_MODULES`` may define ``register()`` / ``unregister()``; they are called in order
(and in reverse on unregister). Pure-numpy helpers here never import bpy at module level where avoidable.
"""

from .modules import import_listed

_MODULES = [
    "preferences",
    "state",
    "connection.process",
    "connection.jobs",
    "splats.playback",
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
