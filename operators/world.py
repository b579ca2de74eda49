"""World operators: ``lw.world_new(filepath, depth_filepath="", prompt="")``, ``lw.world_expand(prompt="")``,
``lw.world_undo()``, ``lw.world_view_camera()``.

In ``blender -b`` (scripts, tests) each one blocks until its backend jobs are done; with a UI the jobs run in the
background (progress and cancel in the sidebar) and the scene changes once, when the last job succeeded.
"""

import bpy

from ..lw_blender import world
from ..lw_blender.connection.client import BackendError
from ..lw_blender.splats.data import GaussianDataError

ERRORS = (world.WorldError, GaussianDataError, BackendError, OSError)


def report_outcome(op, context, done, started: str):
    """Report what happened: ``done(scene settings) -> str`` (blocking) or ``started`` (the jobs continue in the
    background)."""
    op.report({"INFO"}, started if world.busy() else done(world.settings(context.scene)))
    return {"FINISHED"}


def idle(context) -> bool:
    return not world.busy()


class LW_OT_world_new(bpy.types.Operator):
    """Build a 3D Gaussian world from one image, with a camera matching the photo"""

    bl_idname = "lw.world_new"
    bl_label = "New World"

    filepath: bpy.props.StringProperty(name="Image", subtype="FILE_PATH",
                                       description="The photo (PNG/JPEG); empty: the image set in the World panel")
    depth_filepath: bpy.props.StringProperty(name="Depth", subtype="FILE_PATH",
                                             description="Optional depth map (.npy metres, 16-bit .png mm)")
    prompt: bpy.props.StringProperty(name="Prompt", description="Text describing the scene")
    resolution: bpy.props.IntProperty(name="Resolution", default=0, min=0, max=2048,
                                      description="Long side of the working image; 0: the World panel's setting")
    filter_glob: bpy.props.StringProperty(default="*.png;*.jpg;*.jpeg", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return idle(context)

    def invoke(self, context, event):
        s = world.settings(context.scene)
        if not self.filepath and not s.image:
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return self.execute(context)

    def execute(self, context):
        s = world.settings(context.scene)
        if self.filepath:  # called with an image: only the operator's own properties count
            image, depth, prompt = self.filepath, self.depth_filepath, self.prompt
        else:  # the panel's button
            image, depth, prompt = s.image, s.depth, s.prompt
        if not image:
            self.report({"ERROR"}, "New World: choose an image first")
            return {"CANCELLED"}
        try:
            world.new_world(context, image, depth, prompt, self.resolution or s.resolution)
        except ERRORS as exc:
            self.report({"ERROR"}, f"New World failed: {exc}")
            return {"CANCELLED"}
        def done(s):
            return "; ".join([f"World with {s.steps[0].gaussians} Gaussians in {s.directory}", *s.fallbacks.splitlines()])

        return report_outcome(self, context, done, "Building the world in the background")


class LW_OT_world_expand(bpy.types.Operator):
    """Expand the world with what the active camera sees: move or turn the camera first"""

    bl_idname = "lw.world_expand"
    bl_label = "Expand World"

    prompt: bpy.props.StringProperty(name="Prompt", description="Text for the new content; empty: the panel's")

    @classmethod
    def poll(cls, context):
        return idle(context) and bool(world.settings(context.scene).directory)

    def execute(self, context):
        try:
            world.expand_world(context, self.prompt or world.settings(context.scene).expand_prompt)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Expand failed: {exc}")
            return {"CANCELLED"}
        return report_outcome(self, context,
                              lambda s: f"Expanded: {s.steps[-1].new_gaussians} new Gaussians, {s.steps[-1].gaussians} in all",
                              "Expanding the world in the background")


class LW_OT_world_undo(bpy.types.Operator):
    """Step the world back to its previous version"""

    bl_idname = "lw.world_undo"
    bl_label = "Undo World Step"

    @classmethod
    def poll(cls, context):
        return idle(context) and len(world.settings(context.scene).steps) > 1

    def execute(self, context):
        try:
            world.undo_world(context)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Undo failed: {exc}")
            return {"CANCELLED"}
        return report_outcome(self, context,
                              lambda s: f"World back at step {s.steps[-1].index} ({s.steps[-1].gaussians} Gaussians)",
                              "Stepping the world back in the background")


class LW_OT_world_view_camera(bpy.types.Operator):
    """Put the world camera back at the current step's view"""

    bl_idname = "lw.world_view_camera"
    bl_label = "View Camera"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return bool(world.settings(context.scene).steps)

    def execute(self, context):
        try:
            world.view_camera(context)
        except ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


classes = (LW_OT_world_new, LW_OT_world_expand, LW_OT_world_undo, LW_OT_world_view_camera)
