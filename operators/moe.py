"""MoE-GS operators: ``lw.moe_train(directory, experts, iterations, downsample, frame_start, frame_end, router,
router_iterations, router_kind, gate, joint, prune, prune_threshold, prune_fraction, distill, router_views)``,
``lw.moe_import(directory, expert, frames)`` and ``lw.moe_render(directory, pruned)`` (the true per-pixel mixture,
rendered by the backend).

Called with a ``directory`` only the operator's own properties count; without one (the panel's buttons) the MoE
panel's settings (``Scene.lw.moe``) are used. In ``blender -b`` the backend jobs block; with a UI they run in the
background (progress and cancel: Backend panel) and the scene changes once, when the last job succeeded.
"""

import bpy

from ..lw_blender import moe
from ..lw_blender.connection.client import BackendError
from ..lw_blender.splats.data import GaussianDataError, point_count

ERRORS = (moe.MoeError, GaussianDataError, BackendError, OSError, ValueError)


def _idle(context) -> bool:
    return not moe.busy()


class LW_OT_moe_train(bpy.types.Operator):
    """Train dynamic Gaussian experts (and the pixel router that blends them) on a multi-view video, then score them
    on the held-out camera"""

    bl_idname = "lw.moe_train"
    bl_label = "Train MoE"

    directory: bpy.props.StringProperty(name="Dataset", subtype="DIR_PATH",
                                        description="N3V or Technicolor folder; empty: the MoE panel's settings")
    experts: bpy.props.EnumProperty(name="Experts", items=moe.EXPERT_ITEMS, options={"ENUM_FLAG"},
                                    default=set(moe.DEFAULT_EXPERTS))
    iterations: bpy.props.IntProperty(name="Iterations", default=3000, min=1, max=1_000_000,
                                      description="Training steps per expert")
    downsample: bpy.props.FloatProperty(name="Downsample", default=2.0, min=1.0, max=64.0)
    frame_start: bpy.props.IntProperty(name="Frame Start", default=0, min=0)
    frame_end: bpy.props.IntProperty(name="Frame End", default=0, min=0, description="0: to the end of the video")
    router: bpy.props.BoolProperty(name="Router", default=True, description="Train the pixel router")
    router_iterations: bpy.props.IntProperty(name="Router Iterations", default=2000, min=1, max=1_000_000)
    router_kind: bpy.props.EnumProperty(name="Router Kind", items=moe.ROUTER_ITEMS, default=moe.ROUTER_ITEMS[0][0])
    gate: bpy.props.EnumProperty(name="Gate", items=moe.GATE_ITEMS, default=moe.GATE_ITEMS[0][0],
                                 description="The volume-only router's gate")
    joint: bpy.props.BoolProperty(name="Fine-tune Experts", description="Train the experts with the router")
    expert_bias: bpy.props.BoolProperty(name="Expert Bias", default=moe.EXPERT_BIAS,
                                        description="Learn one weight per expert for regions no Gaussian argues about")
    router_views: bpy.props.IntProperty(name="Router Views", default=0, min=0, max=64,
                                        description="Training cameras kept from the experts for the router")
    prune: bpy.props.BoolProperty(name="Prune", description="Gate-aware pruning after the router")
    prune_threshold: bpy.props.FloatProperty(name="Prune Threshold", default=0.05, min=0.0)
    prune_fraction: bpy.props.FloatProperty(name="Prune Fraction", default=0.5, min=0.0, max=0.95,
                                            description="Share of the Gaussians removed at least")
    distill: bpy.props.EnumProperty(name="Distil Into", items=moe.DISTILL_ITEMS, default="NONE")
    distill_iterations: bpy.props.IntProperty(name="Distil Iterations", default=1000, min=1, max=1_000_000)

    @classmethod
    def poll(cls, context):
        return _idle(context)

    def execute(self, context):
        source = self if self.directory else moe.settings(context.scene)
        try:
            moe.train(context, source.directory, set(source.experts), source.iterations, source.downsample,
                      source.router, source.router_iterations, source.prune, source.prune_threshold, source.distill,
                      source.distill_iterations, source.router_views, source.gate, source.joint,
                      (source.frame_start, source.frame_end), source.expert_bias, source.router_kind,
                      prune_fraction=source.prune_fraction)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Train MoE failed: {exc}")
            return {"CANCELLED"}
        if moe.busy():
            self.report({"INFO"}, "Training the experts in the background")
        else:
            best = max(moe.settings(context.scene).metrics, key=lambda m: m.psnr)
            self.report({"INFO"}, f"Trained {moe.settings(context.scene).run}: best {best.name} "
                                  f"{best.psnr:.2f} dB on the held-out camera")
        return {"FINISHED"}


class LW_OT_moe_import(bpy.types.Operator):
    """Bake the mixture (or one expert) of a trained run to a 4D sequence and play it on the timeline, with the
    dataset's held-out camera"""

    bl_idname = "lw.moe_import"
    bl_label = "Import MoE"
    bl_options = {"REGISTER", "UNDO"}

    directory: bpy.props.StringProperty(name="Run", subtype="DIR_PATH",
                                        description="Run folder (holds run.json); empty: the scene's last run")
    expert: bpy.props.EnumProperty(name="Model", items=moe.IMPORT_ITEMS, default="BEST")
    frames: bpy.props.IntProperty(name="Frames", default=0, min=0, max=100_000,
                                  description="Frames to bake for an expert; 0: the dataset's")
    camera: bpy.props.BoolProperty(name="Held-out Camera", default=True,
                                   description="Add a camera at the dataset's held-out view")
    use_panel: bpy.props.BoolProperty(name="Use Panel Settings", options={"HIDDEN", "SKIP_SAVE"},
                                      description="Take model and frames from the MoE panel")

    @classmethod
    def poll(cls, context):
        return _idle(context)

    def execute(self, context):
        s = moe.settings(context.scene)
        expert, frames = (s.import_expert, s.import_frames) if self.use_panel else (self.expert, self.frames)
        try:
            obj = moe.import_run(context, self.directory, expert, frames, self.camera)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Import MoE failed: {exc}")
            return {"CANCELLED"}
        if obj is None:
            self.report({"INFO"}, "Baking and importing in the background")
        else:
            self.report({"INFO"}, f"Imported {point_count(obj.data):,} Gaussians as {obj.name!r} "
                                  f"({obj.lw_seq.frame_count} frames; {s.import_note})")
        return {"FINISHED"}


class LW_OT_moe_render(bpy.types.Operator):
    """Render the run's true per-pixel mixture with the backend from the scene camera over the frame range, as an
    image strip in the sequencer (the mixture cannot be imported as one cloud)"""

    bl_idname = "lw.moe_render"
    bl_label = "Render True Mixture"

    directory: bpy.props.StringProperty(name="Run", subtype="DIR_PATH",
                                        description="Run folder (holds run.json); empty: the scene's last run")
    pruned: bpy.props.BoolProperty(name="Pruned", description="Render the pruned mixture")

    @classmethod
    def poll(cls, context):
        return _idle(context)

    def execute(self, context):
        try:
            strip = moe.render_mixture(context, self.directory, self.pruned)
        except ERRORS as exc:
            self.report({"ERROR"}, f"Render MoE failed: {exc}")
            return {"CANCELLED"}
        if strip is None:
            self.report({"INFO"}, "Rendering the mixture in the background")
        else:
            self.report({"INFO"}, moe.settings(context.scene).render_note)
        return {"FINISHED"}


classes = (LW_OT_moe_train, LW_OT_moe_import, LW_OT_moe_render)
