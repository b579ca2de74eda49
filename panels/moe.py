"""Sidebar panel "LivingWorld > MoE-GS": dataset, experts and options, Train, the held-out metrics table, the
preview grid (ground truth | each expert), Import (the best importable model by default) and Render True Mixture.
Progress and cancel are in the Backend panel."""

import bpy

from ..lw_blender import moe


class VIEW3D_PT_lw_moe(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LivingWorld"
    bl_label = "MoE-GS"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = moe.settings(context.scene)
        layout.prop(s, "directory")
        layout.label(text="Experts")
        layout.grid_flow(columns=2, even_columns=True, align=True).prop(s, "experts", expand=True)  # 4 families
        col = layout.column(align=True)
        col.prop(s, "iterations")
        col.prop(s, "downsample")
        row = col.row(align=True)
        row.prop(s, "frame_start", text="Frames")
        row.prop(s, "frame_end", text="to")
        box = layout.box()
        box.prop(s, "router")
        col = box.column(align=True)
        col.active = s.router
        col.prop(s, "router_iterations", text="Iterations")
        col.prop(s, "router_views", text="Views Kept Back")
        col.prop(s, "router_kind", text="Kind")
        sub = col.column(align=True)
        sub.active = s.router_kind == "VOLUME"  # options of the volume-only router
        sub.prop(s, "gate")
        sub.prop(s, "expert_bias")
        col.prop(s, "joint")
        row = col.row(align=True)
        row.prop(s, "prune")
        sub = row.row(align=True)
        sub.active = s.prune
        sub.prop(s, "prune_threshold", text="Threshold")
        sub.prop(s, "prune_fraction", text="At Least")
        col.prop(s, "distill")
        sub = col.row(align=True)
        sub.active = s.distill != "NONE"
        sub.prop(s, "distill_iterations", text="Distil Iterations")
        layout.operator("lw.moe_train", icon="PLAY")
        running = moe.busy()
        if running:
            layout.label(text=f"{running}... (progress and cancel: Backend panel)", icon="SORTTIME")
        if not s.run:
            return
        box = layout.box()
        box.label(text=bpy.path.basename(s.run.rstrip("/\\")) or s.run, icon="FILE_FOLDER")
        box.label(text=f"Held-out camera: {s.held_out or '-'}")
        self.draw_metrics(box, s)
        if s.best:
            box.label(text=s.best, icon="SOLO_ON")
        image = bpy.data.images.get(moe.PREVIEW_IMAGE)
        if image is not None and image.preview is not None:
            box.template_icon(icon_value=image.preview.icon_id, scale=10.0)
        row = box.row(align=True)
        row.prop(s, "import_expert", text="")
        row.prop(s, "import_frames")
        box.operator("lw.moe_import", icon="IMPORT").use_panel = True
        if s.import_note:
            box.label(text=s.import_note, icon="CAMERA_DATA")
        if s.has_mixture:  # the true per-pixel blend is not a cloud: a backend render of the camera's path
            box.operator("lw.moe_render", icon="RENDER_ANIMATION")
            if s.render_note:
                box.label(text=s.render_note, icon="SEQUENCE")

    @staticmethod
    def draw_metrics(layout, s):
        grid = layout.grid_flow(row_major=True, columns=5, even_columns=False, align=True)
        for title in ("", "PSNR", "SSIM", "FPS", "MB"):
            grid.label(text=title)
        for m in s.metrics:
            icon = "IMPORT" if m.kind in moe.IMPORTABLE else "RENDER_STILL" if m.kind in ("moe", "pruned") else "NONE"
            grid.label(text=m.name, icon=icon)  # importable models, render-only mixtures, baselines
            grid.label(text=f"{m.psnr:.2f}")
            grid.label(text=f"{m.ssim:.3f}")
            grid.label(text=f"{m.fps:.0f}")
            grid.label(text=f"{m.size_mb:.1f}")


classes = (VIEW3D_PT_lw_moe,)
