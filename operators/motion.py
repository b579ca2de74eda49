"""Motion operators: ``lw.motion_region(preset, direction, speed, filepath="", region="AUTO")``,
``lw.motion_from_annotations(speed)``, ``lw.motion_update(view=-1)``, ``lw.motion_clear()``,
``lw.world_bake(frames=60, loop=True)``.

``motion_region`` and ``motion_from_annotations`` queue cues for the current view (nothing is sent yet);
``motion_update`` sends them to the world's motion field (none queued: the backend's sky/water fallback);
``world_bake`` bakes the field to a ``.lw4d`` loop that plays on the "LW World" object.
"""

import json

import bpy

from ..lw_blender import world
from .world import ERRORS, idle, report_outcome


def _has_world(context) -> bool:
    return bool(world.settings(context.scene).directory)


class LW_OT_motion_region(bpy.types.Operator):
    """Queue a motion preset on a region of the current view (default: the preset's usual region)"""

    bl_idname = "lw.motion_region"
    bl_label = "Add Motion Region"
    bl_options = {"REGISTER", "UNDO"}

    preset: bpy.props.EnumProperty(name="Preset", items=world.PRESET_ITEMS, default="CLOUDS")
    direction: bpy.props.FloatVectorProperty(name="Direction", size=2, default=(1.0, 0.0),
                                             description="On screen: x right, y up")
    speed: bpy.props.FloatProperty(name="Speed", default=1.0, min=0.0, description="Pixels per frame")
    filepath: bpy.props.StringProperty(name="Mask", subtype="FILE_PATH",
                                       description="Optional mask image of the region (non-zero = inside)")
    region: bpy.props.EnumProperty(name="Region", items=world.REGION_ITEMS, default="AUTO")

    @classmethod
    def poll(cls, context):
        return _has_world(context)

    def execute(self, context):
        try:
            item = world.add_region(context.scene, self.preset, tuple(self.direction), self.speed, self.filepath,
                                    self.region)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Motion region: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{item.preset.title()} queued for the next motion update")
        return {"FINISHED"}


class LW_OT_motion_from_annotations(bpy.types.Operator):
    """Queue the scene's annotation strokes (drawn in the camera view, in the direction of motion) as hints"""

    bl_idname = "lw.motion_from_annotations"
    bl_label = "Hints From Annotations"
    bl_options = {"REGISTER", "UNDO"}

    speed: bpy.props.FloatProperty(name="Speed", default=1.0, min=0.0, description="Pixels per frame")

    @classmethod
    def poll(cls, context):
        return _has_world(context)

    def execute(self, context):
        try:
            item = world.add_annotation_hints(context, self.speed)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Annotation hints: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{len(json.loads(item.strokes))} stroke(s) queued as hints for view {item.view}")
        return {"FINISHED"}


class LW_OT_motion_clear(bpy.types.Operator):
    """Forget the queued motion regions and hints"""

    bl_idname = "lw.motion_clear"
    bl_label = "Clear Motion Cues"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = world.settings(context.scene)
        s.regions.clear()
        s.hints.clear()
        return {"FINISHED"}


class LW_OT_motion_update(bpy.types.Operator):
    """Send the queued motion cues to the world's motion field (none queued: sky and water move by default)"""

    bl_idname = "lw.motion_update"
    bl_label = "Update Motion"

    view: bpy.props.IntProperty(name="View", default=-1, min=-1,
                                description="World step whose view the cues belong to; -1: the current one")

    @classmethod
    def poll(cls, context):
        return idle(context) and _has_world(context)

    def execute(self, context):
        try:
            world.update_motion(context, self.view)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Motion update failed: {exc}")
            return {"CANCELLED"}
        return report_outcome(self, context, lambda s: f"Motion updated ({s.motion_status})",
                              "Updating the motion in the background")


class LW_OT_world_bake(bpy.types.Operator):
    """Bake the world's motion to a seamless loop that plays on the timeline"""

    bl_idname = "lw.world_bake"
    bl_label = "Bake Loop"

    frames: bpy.props.IntProperty(name="Frames", default=60, min=2, max=100000)
    loop: bpy.props.BoolProperty(name="Loop", default=True)

    @classmethod
    def poll(cls, context):
        return idle(context) and _has_world(context)

    def execute(self, context):
        try:
            world.bake_world(context, self.frames, self.loop)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Bake failed: {exc}")
            return {"CANCELLED"}
        return report_outcome(self, context, lambda s: "; ".join([f"Baked {s.sequence}", *world.metrics_lines(s)]),
                              "Baking the loop in the background")


classes = (LW_OT_motion_region, LW_OT_motion_from_annotations, LW_OT_motion_clear, LW_OT_motion_update,
           LW_OT_world_bake)
