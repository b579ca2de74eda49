"""Properties the add-on adds to Blender types: ``Scene.lw`` (saved settings) and ``WindowManager.lw_runtime``
(unsaved state of the backend connection and the current job). Nothing else is added to Blender types.

Extending ``Scene.lw`` (other modules do this in their ``register()``; lw_blender modules register after this one
and unregister before it)::

    class LW_GaussianSettings(bpy.types.PropertyGroup):
        point_size: bpy.props.FloatProperty(default=1.0)

    def register():
        bpy.utils.register_class(LW_GaussianSettings)
        state.add_scene_settings("gaussians", LW_GaussianSettings)     # -> scene.lw.gaussians.point_size

    def unregister():
        state.remove_scene_settings("gaussians")
        bpy.utils.unregister_class(LW_GaussianSettings)
"""

import bpy

CONNECTION_ITEMS = [
    ("DISCONNECTED", "Disconnected", "No backend connected"),
    ("STARTING", "Starting", "The backend is starting (or being connected to)"),
    ("CONNECTED", "Connected", "A backend answers"),
    ("ERROR", "Error", "The backend could not be started or stopped unexpectedly (see last error)"),
]


class LW_RuntimeState(bpy.types.PropertyGroup):
    """Unsaved: what the sidebar shows about the backend and the current job (written on the main thread only)."""

    connection: bpy.props.EnumProperty(name="Connection", items=CONNECTION_ITEMS, default="DISCONNECTED")
    url: bpy.props.StringProperty(name="URL")
    remote: bpy.props.BoolProperty(name="Remote", description="Connected to a backend this Blender did not start")
    backend_pid: bpy.props.IntProperty(name="Backend PID")
    job_id: bpy.props.StringProperty(name="Job")
    job_kind: bpy.props.StringProperty(name="Kind")
    job_state: bpy.props.StringProperty(name="State", description="queued, running, succeeded, failed, cancelled, "
                                        "interrupted")
    progress: bpy.props.FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    message: bpy.props.StringProperty(name="Message")
    last_error: bpy.props.StringProperty(name="Last error")


class LW_SceneSettings(bpy.types.PropertyGroup):
    """Saved with the .blend; capability modules add their own groups with ``add_scene_settings``."""


def add_scene_settings(name: str, group: type) -> None:
    """Add ``scene.lw.<name>`` as a pointer to the registered PropertyGroup class ``group``."""
    setattr(LW_SceneSettings, name, bpy.props.PointerProperty(type=group))


def remove_scene_settings(name: str) -> None:
    delattr(LW_SceneSettings, name)


def runtime(context=None) -> LW_RuntimeState:
    return (context or bpy.context).window_manager.lw_runtime


def register():
    bpy.utils.register_class(LW_RuntimeState)
    bpy.utils.register_class(LW_SceneSettings)
    bpy.types.WindowManager.lw_runtime = bpy.props.PointerProperty(type=LW_RuntimeState)
    bpy.types.Scene.lw = bpy.props.PointerProperty(type=LW_SceneSettings)


def unregister():
    del bpy.types.Scene.lw
    del bpy.types.WindowManager.lw_runtime
    bpy.utils.unregister_class(LW_SceneSettings)
    bpy.utils.unregister_class(LW_RuntimeState)
