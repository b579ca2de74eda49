"""Sidebar panels (tab "LivingWorld"): they only draw.

Each module in ``_MODULES`` lists its panel classes in ``classes``; order is drawing order.
"""

from ..lw_blender.modules import import_listed

_MODULES = [
    "connection",
    "gaussians",
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
