"""Operators (``bpy.ops.lw.*``): thin wrappers that parse properties, call one function in lw_blender, report.

Each module in ``_MODULES`` lists its operator classes in ``classes`` and may add ``menu_funcs`` (File menus).
"""

from ..lw_blender.modules import import_listed

_MODULES = [
    "backend",
    "gaussians",
    "render",
    "world",
    "motion",
    "moe",
]


def _modules():
    return import_listed(__package__, _MODULES)


def register():
    import bpy

    for mod in _modules():
        for cls in getattr(mod, "classes", ()):
            bpy.utils.register_class(cls)
        if hasattr(mod, "register"):
            mod.register()


def unregister():
    import bpy

    for mod in reversed(_modules()):
        if hasattr(mod, "unregister"):
            mod.unregister()
        for cls in reversed(getattr(mod, "classes", ())):
            bpy.utils.unregister_class(cls)
