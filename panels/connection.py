"""Sidebar panel "LivingWorld > Backend": connection state, current job with progress and cancel, last error."""

import bpy

RUNNING = ("queued", "running")


class VIEW3D_PT_lw_connection(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LivingWorld"
    bl_label = "Backend"

    def draw(self, context):
        layout = self.layout
        rt = context.window_manager.lw_runtime
        row = layout.row(align=True)
        icon = {"CONNECTED": "LINKED", "ERROR": "ERROR", "STARTING": "SORTTIME"}.get(rt.connection, "UNLINKED")
        row.label(text=rt.url if rt.connection == "CONNECTED" else rt.connection.title(), icon=icon)
        if rt.connection == "CONNECTED":
            row.operator("lw.backend_restart", text="", icon="FILE_REFRESH")
            row.operator("lw.backend_stop", text="", icon="PAUSE")
        elif rt.connection != "STARTING":
            row.operator("lw.backend_start", text="Start", icon="PLAY")
        if rt.job_id:
            box = layout.box()
            box.label(text=f"{rt.job_kind}: {rt.job_state}", icon="SORTTIME" if rt.job_state in RUNNING else "INFO")
            if rt.job_state in RUNNING:
                text = rt.message or f"{rt.progress:.0%}"
                if hasattr(box, "progress"):  # UILayout.progress exists since Blender 4.0
                    box.progress(factor=rt.progress, type="BAR", text=text)
                else:
                    box.prop(rt, "progress", text=text, slider=True)
                box.operator("lw.job_cancel", icon="CANCEL")
            elif rt.message:
                box.label(text=rt.message)
        if rt.last_error:
            col = layout.column()
            col.alert = True
            col.label(text=rt.last_error, icon="ERROR")


classes = (VIEW3D_PT_lw_connection,)
