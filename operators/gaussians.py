"""Gaussians import/export operators: ``lw.import_gaussians(filepath)``, ``lw.export_gaussians(filepath,
overwrite=False)`` (an existing file is refused unless Overwrite is ticked).

Also File > Import / Export menu entries. A .ply is read and written in Blender (no backend needed); a .lw4d
sequence is checked by the backend's import job (blocking in background mode).
"""

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ..lw_blender.connection.client import BackendError
from ..lw_blender.splats import carrier, data

_ERRORS = (data.GaussianDataError, BackendError, OSError)


class LW_OT_import_gaussians(bpy.types.Operator, ImportHelper):
    """Import 3D Gaussian splats: a 3DGS .ply or a .lw4d sequence (pick its folder or its manifest.json)"""

    bl_idname = "lw.import_gaussians"
    bl_label = "Import Gaussians"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: bpy.props.StringProperty(default="*.ply;manifest.json", options={"HIDDEN"})

    def execute(self, context):
        try:
            obj = carrier.import_gaussians(context, self.filepath)
        except _ERRORS as exc:
            self.report({"ERROR"}, f"Import failed: {exc}")
            return {"CANCELLED"}
        if obj is None:
            self.report({"INFO"}, f"Importing {self.filepath} in the background")
        else:
            self.report({"INFO"}, f"Imported {data.point_count(obj.data)} Gaussians as {obj.name!r}")
        return {"FINISHED"}


class LW_OT_export_gaussians(bpy.types.Operator, ExportHelper):
    """Export the active Gaussians object at the current frame as a 3DGS .ply"""

    bl_idname = "lw.export_gaussians"
    bl_label = "Export Gaussians"

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})
    overwrite: bpy.props.BoolProperty(name="Overwrite", default=False,
                                      description="Replace the file if it exists (otherwise the export is refused)")

    @classmethod
    def poll(cls, context):
        return data.is_carrier(context.active_object)

    def execute(self, context):
        try:
            out = carrier.export_gaussians(context.active_object, self.filepath, self.overwrite)
        except _ERRORS as exc:
            self.report({"ERROR"}, f"Export failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {out}")
        return {"FINISHED"}


def _menu_import(self, context):
    self.layout.operator(LW_OT_import_gaussians.bl_idname, text="Gaussian Splats (.ply, .lw4d)")


def _menu_export(self, context):
    self.layout.operator(LW_OT_export_gaussians.bl_idname, text="Gaussian Splats (.ply)")


class LW_OT_splat_colors(bpy.types.Operator):
    """Show splats in the colours they were fitted to: the Standard view transform, no look (AgX and Filmic
    tone-map their emission)"""

    bl_idname = "lw.splat_colors"
    bl_label = "Use Standard View"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        carrier.use_standard_view(context.scene)
        self.report({"INFO"}, "View transform set to Standard: renders show the splats' stored colours")
        return {"FINISHED"}


classes = (LW_OT_import_gaussians, LW_OT_export_gaussians, LW_OT_splat_colors)


def register():
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)


def unregister():
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
