"""Sidebar panel "LivingWorld > Motion": presets, annotation hints, Update Motion, Bake Loop."""

import bpy

from ..lw_blender import world


class VIEW3D_PT_lw_motion(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LivingWorld"
    bl_label = "Motion"

    @classmethod
    def poll(cls, context):
        return bool(world.settings(context.scene).directory)

    def draw(self, context):
        layout = self.layout
        s = world.settings(context.scene)
        col = layout.column(align=True)
        col.prop(s, "preset")
        col.prop(s, "region")
        col.prop(s, "direction")
        col.prop(s, "speed")
        col.prop(s, "mask")
        op = layout.operator("lw.motion_region", text="Add Region", icon="ADD")
        op.preset, op.region, op.direction, op.speed, op.filepath = s.preset, s.region, s.direction, s.speed, s.mask
        layout.operator("lw.motion_from_annotations", icon="GREASEPENCIL").speed = s.speed
        if s.regions or s.hints:
            box = layout.box()
            box.label(text="Queued for the current view:")
            for r in s.regions:
                where = bpy.path.basename(r.mask) if r.mask else r.region.lower()
                box.label(text=f"{r.preset.title()} on {where}, ({r.direction[0]:.2f}, {r.direction[1]:.2f}) "
                          f"at {r.speed:g} px/frame")
            for h in s.hints:
                box.label(text=f"Annotation hints in view {h.view} at {h.speed:g} px/frame")
            box.operator("lw.motion_clear", icon="X")
        layout.operator("lw.motion_update", icon="FORCE_WIND")
        if s.motion_status:
            layout.label(text=s.motion_status)
        sub = layout.column(align=True)
        sub.use_property_split = True
        sub.label(text="Motion field (0: the device's default)")
        sub.prop(s, "field_levels")
        sub.prop(s, "field_table_log2")
        sub.prop(s, "fit_steps")
        sub.prop(s, "update_steps")
        box = layout.box()
        row = box.row(align=True)
        row.prop(s, "bake_frames")
        row.prop(s, "bake_loop")
        row.prop(s, "measure_loop")
        op = box.operator("lw.world_bake", icon="RENDER_ANIMATION")
        op.frames, op.loop = s.bake_frames, s.bake_loop
        if s.sequence:
            box.label(text=bpy.path.basename(s.sequence.rstrip("/\\")), icon="SEQUENCE")
        lines = world.metrics_lines(s)
        if lines:
            col = box.column(align=True)
            col.label(text="Loop quality:", icon="GRAPH")
            for line in lines:
                col.label(text=line)
        elif s.sequence and s.measure_loop and world.busy() == world.BAKE_LABEL:
            box.label(text="Measuring the loop...", icon="SORTTIME")


classes = (VIEW3D_PT_lw_motion,)
