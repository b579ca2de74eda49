"""LivingWorld Blender extension: entry point (register/unregister only).

``operators`` and ``panels`` are imported inside ``register()`` so that this root imports without bpy.
"""


def register():
    from . import lw_blender, operators, panels

    lw_blender.register()
    operators.register()
    panels.register()


def unregister():
    from . import lw_blender, operators, panels

    panels.unregister()
    operators.unregister()
    lw_blender.unregister()
