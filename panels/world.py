"""Sidebar panel "LivingWorld > World": image, New / Expand / Undo, the steps so far and the current preview."""

import textwrap

import bpy

from ..lw_blender import world


class VIEW3D_PT_lw_world(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LivingWorld"
    bl_label = "World"

    def draw(self, context):
        layout = self.layout
        s = world.settings(context.scene)
        running = world.busy()
        col = layout.column(align=True)
        col.prop(s, "image")
        col.prop(s, "depth")
        col.prop(s, "prompt")
        col.prop(s, "resolution")
        layout.operator("lw.world_new", icon="IMAGE_DATA")
        if running:
            layout.label(text=f"{running}... (progress and cancel: Backend panel)", icon="SORTTIME")
        if not s.directory:
            return
        box = layout.box()
        box.label(text=bpy.path.basename(s.directory.rstrip("/\\")) or s.directory, icon="WORLD")
        box.prop(s, "expand_prompt", text="Prompt")
        row = box.row(align=True)
        row.operator("lw.world_expand", text="Expand", icon="FULLSCREEN_ENTER")
        row.operator("lw.world_undo", text="Undo", icon="LOOP_BACK")
        row.operator("lw.world_view_camera", text="", icon="CAMERA_DATA")
        box.label(text=f"{len(s.steps)} step(s)")
        col = box.column(align=True)
        for step in s.steps:
            text = f"{step.index}: {step.kind}, {step.gaussians:,} Gaussians"
            if step.kind == "expand":
                text += f" (+{step.new_gaussians:,})"
            col.label(text=text, icon="DOT" if step != s.steps[-1] else "RIGHTARROW")
        image = bpy.data.images.get(world.PREVIEW_IMAGE)
        if image is not None and image.preview is not None:
            box.template_icon(icon_value=image.preview.icon_id, scale=8.0)
        if s.fallbacks:
            warn = layout.box()
            warn.label(text="Built-in fallbacks ran instead of models:", icon="ERROR")
            col = warn.column(align=True)
            for note in s.fallbacks.splitlines():
                for line in textwrap.wrap(note, 64):
                    col.label(text=line)


classes = (VIEW3D_PT_lw_world,)
