"""Backend and job operators: ``lw.backend_start``, ``lw.backend_stop``, ``lw.backend_restart``, ``lw.job_cancel``,
``lw.job_run`` (any job kind with JSON parameters). All work in ``blender -b``, where they block until done; in the
UI, starting the backend and running a job happen in the background (progress in the sidebar)."""

import json

import bpy

from ..lw_blender.connection import jobs
from ..lw_blender.connection.client import BackendError


class LW_OT_backend_start(bpy.types.Operator):
    """Start the local LivingWorld backend (or connect to the remote one set in the preferences)"""

    bl_idname = "lw.backend_start"
    bl_label = "Start Backend"

    def execute(self, context):
        try:
            client = jobs.start_backend(context)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"LivingWorld backend at {client.url}" if client else "LivingWorld backend starting")
        return {"FINISHED"}


class LW_OT_backend_stop(bpy.types.Operator):
    """Stop the local LivingWorld backend (a remote one is only disconnected)"""

    bl_idname = "lw.backend_stop"
    bl_label = "Stop Backend"

    def execute(self, context):
        jobs.stop_backend(context)
        self.report({"INFO"}, "LivingWorld backend stopped")
        return {"FINISHED"}


class LW_OT_backend_restart(bpy.types.Operator):
    """Stop and start the LivingWorld backend again"""

    bl_idname = "lw.backend_restart"
    bl_label = "Restart Backend"

    def execute(self, context):
        try:
            client = jobs.restart_backend(context)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"LivingWorld backend restarted at {client.url}" if client
                    else "LivingWorld backend restarting")
        return {"FINISHED"}


class LW_OT_job_cancel(bpy.types.Operator):
    """Ask the backend to cancel the current job (it stops at its next progress step)"""

    bl_idname = "lw.job_cancel"
    bl_label = "Cancel Job"

    def execute(self, context):
        try:
            jobs.cancel_current(context)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"cancel requested for job {context.window_manager.lw_runtime.job_id}")
        return {"FINISHED"}


class LW_OT_job_run(bpy.types.Operator):
    """Run a backend job of any kind with JSON parameters (blocking in background mode)"""

    bl_idname = "lw.job_run"
    bl_label = "Run Backend Job"

    kind: bpy.props.StringProperty(name="Kind", description="Job kind (GET /kinds lists them)")
    params: bpy.props.StringProperty(name="Parameters", description="JSON object of job parameters", default="{}")

    def execute(self, context):
        try:
            params = json.loads(self.params or "{}")
        except json.JSONDecodeError as exc:
            self.report({"ERROR"}, f"parameters are not valid JSON: {exc}")
            return {"CANCELLED"}
        if not isinstance(params, dict):
            self.report({"ERROR"}, "parameters must be a JSON object")
            return {"CANCELLED"}
        try:
            result = jobs.run_job(context, self.kind, params)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if result is None:
            self.report({"INFO"}, f"job {self.kind} submitted")
        else:
            self.report({"INFO"}, f"job {self.kind} {result.id} {result.state}: {len(result.artifacts)} artifact(s)")
        return {"FINISHED"}


classes = (LW_OT_backend_start, LW_OT_backend_stop, LW_OT_backend_restart, LW_OT_job_cancel, LW_OT_job_run)
