"""Sidebar panel "LivingWorld > Gaussians": import/export/render buttons and the active carrier's playback."""

import bpy

from ..lw_blender.splats import data, display


class VIEW3D_PT_lw_gaussians(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LivingWorld"
    bl_label = "Gaussians"

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.operator("lw.import_gaussians", text="Import", icon="IMPORT")
        row.operator("lw.export_gaussians", text="Export", icon="EXPORT")
        row = layout.row(align=True)
        row.operator("lw.render_splats", text="Render", icon="RENDER_STILL").animation = False
        row.operator("lw.render_splats", text="Animation", icon="RENDER_ANIMATION").animation = True
        obj = context.active_object
        if not data.is_carrier(obj):
            return
        layout.label(text=f"{data.point_count(obj.data):,} Gaussians, SH degree {display.of(obj).sh_degree(obj)}")
        view = context.scene.view_settings.view_transform
        if view != "Standard":
            row = layout.row()
            row.label(text=f"{view} tone-maps the splats' colours", icon="INFO")
            row.operator("lw.splat_colors", text="Standard")
        seq = obj.lw_seq
        if not seq.path:
            return
        box = layout.box()
        box.label(text=f"Sequence: {bpy.path.basename(seq.path.rstrip('/'))} ({seq.frame_count} frames)")
        box.prop(seq, "time")
        box.prop(seq, "use_scene_time")
        col = box.column(align=True)
        col.active = seq.use_scene_time
        col.prop(seq, "speed")
        col.prop(seq, "offset")
        box.prop(seq, "loop_mode")


classes = (VIEW3D_PT_lw_gaussians,)
