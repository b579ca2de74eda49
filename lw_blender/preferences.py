"""Add-on preferences: how to reach the backend and where its workspace is.

Local mode (``backend_url`` empty): the add-on starts ``<backend_python> -m backend.cli serve`` itself on
127.0.0.1 with a random port and token; Blender and the backend share ``workspace``.
Remote mode (``backend_url`` set): the add-on connects to that URL with ``backend_token`` and downloads
artifacts into the extension's cache folder.
"""

from pathlib import Path

import bpy

# The extension root package: ``bl_ext.<repo>.livingworld`` when installed (this module is ``<root>.lw_blender...``).
ROOT_PACKAGE = __package__.rpartition(".")[0]


class LW_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ROOT_PACKAGE

    backend_python: bpy.props.StringProperty(
        name="Backend Python",
        description="Python of the backend environment (the .venv/bin/python made by `make envs`)",
        subtype="FILE_PATH",
    )
    backend_url: bpy.props.StringProperty(
        name="Remote URL",
        description="URL of a running backend (e.g. a GPU server); when set, connect instead of starting one",
    )
    backend_token: bpy.props.StringProperty(
        name="Remote token", description="Bearer token of the remote backend", subtype="PASSWORD",
    )
    workspace: bpy.props.StringProperty(
        name="Workspace",
        description="Folder shared with a local backend (jobs, artifacts, logs); empty: the extension's user folder",
        subtype="DIR_PATH",
    )

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "backend_python")
        col.prop(self, "workspace", placeholder=str(default_workspace()))
        box = layout.box()
        box.label(text="Remote backend (leave the URL empty to start a local one)")
        box.prop(self, "backend_url")
        box.prop(self, "backend_token")
        rt = context.window_manager.lw_runtime
        row = layout.row()
        row.label(text=f"Backend: {rt.connection.lower()} {rt.url}")
        row.operator("lw.backend_start", text="Start", icon="PLAY")
        row.operator("lw.backend_restart", text="Restart", icon="FILE_REFRESH")
        row.operator("lw.backend_stop", text="Stop", icon="PAUSE")
        if rt.last_error:
            layout.label(text=rt.last_error, icon="ERROR")


def get(context=None) -> LW_AddonPreferences:
    """This extension's preferences."""
    context = context or bpy.context
    return context.preferences.addons[ROOT_PACKAGE].preferences


def default_workspace() -> Path:
    return Path(bpy.utils.extension_path_user(ROOT_PACKAGE, path="workspace", create=True))


def workspace_dir(prefs: LW_AddonPreferences) -> Path:
    """The workspace folder (created if missing): the preference, or the extension's user folder."""
    ws = Path(bpy.path.abspath(prefs.workspace)).expanduser() if prefs.workspace else default_workspace()
    ws.mkdir(parents=True, exist_ok=True)
    return ws


def cache_dir() -> Path:
    """Download cache for artifacts of a remote backend."""
    return Path(bpy.utils.extension_path_user(ROOT_PACKAGE, path="cache", create=True))


def register():
    bpy.utils.register_class(LW_AddonPreferences)


def unregister():
    bpy.utils.unregister_class(LW_AddonPreferences)
