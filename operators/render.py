"""``lw.render_splats(animation=False)``: render the active Gaussians with the backend rasterizer.

A still goes to the Image "LW Render"; an animation to a PNG sequence + MP4 added as a movie strip.
"""

import bpy

from ..lw_blender.connection.client import BackendError
from ..lw_blender.splats import data, render


class LW_OT_render_splats(bpy.types.Operator):
    """Render the active Gaussians object from the scene camera with the LivingWorld backend"""

    bl_idname = "lw.render_splats"
    bl_label = "Render Splats"

    animation: bpy.props.BoolProperty(name="Animation", description="Render the scene's frame range", default=False)

    @classmethod
    def poll(cls, context):
        return data.is_carrier(context.active_object)

    def execute(self, context):
        try:
            out = render.render_splats(context, context.active_object, self.animation)
        except (data.GaussianDataError, BackendError, OSError) as exc:
            self.report({"ERROR"}, f"Render failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Rendered into {out.name!r}")
        return {"FINISHED"}


classes = (LW_OT_render_splats,)
