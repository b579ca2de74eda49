"""Every sidebar panel's draw() (and the preferences' draw()) in every state, where headless Blender draws no UI.

``RecordingLayout`` stands in for ``bpy.types.UILayout``: each call is checked against UILayout's own RNA
description (the function exists; every keyword is one of its parameters; enum values such as icons are valid
items), ``prop`` fails when the property does not exist on its data, ``operator`` fails when the operator is not
registered, and setting a property of the returned operator fails when the operator has no such property. The
panels are the registered ones of the installed extension (whatever other modules add), in these states:

    empty           a factory scene: no world, no run, no backend, nothing selected
    filled          every setting of Scene.lw filled (a world with steps, regions and hints, a finished MoE run
                    with metrics and a best model), a playing carrier selected, a finished job shown
    running         a job running with progress, the world and MoE actions busy
    failed          the backend in error with a message; a splat object made by Blender's own importer selected
"""

import inspect
import json
import types

import bpy
import numpy as np
import pytest

UI = bpy.types.UILayout.bl_rna


class LayoutError(AssertionError):
    """A panel asked the layout for something that does not exist."""


def _check_call(function: str, args: tuple, kwargs: dict) -> dict:
    """Map a UILayout call onto its RNA parameters (failing on unknown functions, keywords and enum items)."""
    if function not in UI.functions:
        raise LayoutError(f"UILayout has no function {function!r}")
    params = [p for p in UI.functions[function].parameters if not p.is_output]
    if len(args) > len(params):
        raise LayoutError(f"{function}() takes {len(params)} arguments, got {len(args)}")
    given = dict(zip((p.identifier for p in params), args), **kwargs)
    by_name = {p.identifier: p for p in params}
    for name, value in given.items():
        if name not in by_name:
            raise LayoutError(f"{function}() has no parameter {name!r}")
        param = by_name[name]
        if param.type == "ENUM" and not param.is_enum_flag and value not in {i.identifier for i in param.enum_items}:
            raise LayoutError(f"{function}({name}={value!r}): not one of its items")
    return given


class OperatorProperties:
    """What ``layout.operator`` returns: setting a property the operator does not have fails."""

    def __init__(self, idname: str, rna):
        object.__setattr__(self, "_idname", idname)
        object.__setattr__(self, "_names", {p.identifier for p in rna.properties})
        object.__setattr__(self, "values", {})

    def __setattr__(self, name, value):
        if name not in self._names:
            raise LayoutError(f"operator {self._idname} has no property {name!r}")
        self.values[name] = value


class RecordingLayout:
    """A UILayout stand-in that records what a panel draws (``calls``: (function, arguments) in order)."""

    def __init__(self, calls: list):
        object.__setattr__(self, "calls", calls)

    def __setattr__(self, name, value):
        if name not in UI.properties:
            raise LayoutError(f"UILayout has no property {name!r}")

    def __getattr__(self, function):
        if function not in UI.functions:
            raise LayoutError(f"UILayout has no function {function!r}")

        def call(*args, **kwargs):
            given = _check_call(function, args, kwargs)
            self.calls.append((function, given))
            if function in ("prop", "prop_enum", "prop_menu_enum", "prop_search", "props_enum", "prop_tabs_enum"):
                data, name = given.get("data"), given.get("property")
                if data is None or name not in data.bl_rna.properties:
                    raise LayoutError(f"{function}(): {type(data).__name__} has no property {name!r}")
                return None
            if function.startswith("operator"):
                idname = given.get("operator", "")
                module, _, name = idname.partition(".")
                try:
                    rna = getattr(getattr(bpy.ops, module), name).get_rna_type()
                except (AttributeError, KeyError):
                    raise LayoutError(f"{function}(): operator {idname!r} is not registered") from None
                return OperatorProperties(idname, rna)
            if function in ("row", "column", "box", "split", "grid_flow", "column_flow", "menu_pie"):
                return RecordingLayout(self.calls)
            return None

        return call


def _draw(cls, context) -> list:
    """Run ``cls.draw`` with a recording layout (``self`` reaches the class's other methods); returns the calls."""
    calls: list = []

    class Self:
        layout = RecordingLayout(calls)

        def __getattr__(self, name):
            member = inspect.getattr_static(cls, name)
            if isinstance(member, (staticmethod, classmethod)):
                return getattr(cls, name)
            return types.MethodType(member, self) if callable(member) else member

    cls.draw(Self(), context)
    return calls


def _panels(addon) -> list:
    found = [c for c in bpy.types.Panel.__subclasses__() if c.__module__.startswith(addon)]
    assert found, "no registered panels of the extension"
    return sorted(found, key=lambda c: c.__name__)


# Settings that hold a document rather than text get one of the shape their flow writes.
DOCUMENTS = {
    "metrics": json.dumps({"temporal_flicker": 0.991, "motion_smoothness": 0.987, "seam_ratio": 0.8,
                           "uncovered_max": 0.004, "exact": False, "rendered": 11, "frames": 60, "size": [256, 256],
                           "goals": {"temporal_flicker": {"met": True}, "seam_ratio": {"met": True}}}),
}


def _fill(group, depth=0):
    """Give every setting of a PropertyGroup a value (two items in each collection, recursively)."""
    for prop in group.bl_rna.properties:
        name = prop.identifier
        if name == "rna_type" or prop.is_readonly and prop.type != "COLLECTION" and prop.type != "POINTER":
            continue
        if prop.type == "STRING":
            path = prop.subtype in ("DIR_PATH", "FILE_PATH")
            setattr(group, name, DOCUMENTS.get(name, "/tmp/lw-panel-test/run" if path else "text"))
        elif prop.type == "BOOLEAN" and not prop.is_array:
            setattr(group, name, True)
        elif prop.type in ("INT", "FLOAT") and not prop.is_array:
            setattr(group, name, max(prop.hard_min, min(prop.hard_max, 2)))
        elif prop.type == "COLLECTION" and depth < 2:
            collection = getattr(group, name)
            for _ in range(2):
                _fill(collection.add(), depth + 1)
        elif prop.type == "POINTER" and depth < 2 and isinstance(getattr(group, name), bpy.types.PropertyGroup):
            _fill(getattr(group, name), depth + 1)


def _carrier(lw, name="splats"):
    splats = lw.lw_blender.splats
    rng = np.random.default_rng(0)
    g = splats.data.DecodedGaussians(position=rng.normal(size=(4, 3)).astype(np.float32),
                                     scale=np.full((4, 3), 0.1, np.float32),
                                     rotation=np.tile(np.float32([1, 0, 0, 0]), (4, 1)),
                                     opacity=np.full(4, 0.5, np.float32), sh=np.zeros((4, 4, 3), np.float32))
    return splats.carrier.place(bpy.context, None, name, g)


def _state(lw, monkeypatch, state, tmp_path):
    context = bpy.context
    rt = context.window_manager.lw_runtime
    rt.job_id = rt.job_kind = rt.job_state = rt.message = rt.last_error = ""
    rt.connection = "DISCONNECTED"
    if state == "empty":
        return
    if state in ("filled", "running"):
        _fill(context.scene.lw)
        obj = _carrier(lw)
        obj.lw_seq.path, obj.lw_seq.frame_count = "/tmp/lw-panel-test/walk.lw4d", 12
        rt.connection, rt.url = "CONNECTED", "http://127.0.0.1:1234"
        rt.job_id, rt.job_kind, rt.progress = "job1", "world_new", 0.4
        rt.job_state, rt.message = ("succeeded", "done") if state == "filled" else ("running", "step 2 of 5")
    if state == "running":
        monkeypatch.setattr(lw.lw_blender.world._chain, "busy", "Expand World")
        monkeypatch.setattr(lw.lw_blender.moe._chain, "busy", "Train MoE")
    if state == "failed":
        rt.connection, rt.last_error = "ERROR", "backend stopped unexpectedly"
        path = lw.lw_blender.splats.ply.write_ply(tmp_path / "panel.ply", _carrier_gaussians(lw))
        if lw.lw_blender.splats.display.native_available():  # a splat object made by Blender's importer
            assert bpy.ops.wm.ply_import(filepath=str(path)) == {"FINISHED"}
        else:
            assert bpy.ops.lw.import_gaussians(filepath=str(path)) == {"FINISHED"}


def _carrier_gaussians(lw):
    data = lw.lw_blender.splats.data
    return data.DecodedGaussians(position=np.zeros((2, 3), np.float32), scale=np.full((2, 3), 0.1, np.float32),
                                 rotation=np.tile(np.float32([1, 0, 0, 0]), (2, 1)),
                                 opacity=np.full(2, 0.5, np.float32), sh=np.zeros((2, 1, 3), np.float32))


@pytest.mark.parametrize("state", ["empty", "filled", "running", "failed"])
def test_every_panel_draws_in_every_state(lw, addon, clean_scene, monkeypatch, tmp_path, state):
    _state(lw, monkeypatch, state, tmp_path)
    drawn = {}
    for cls in _panels(addon):
        if hasattr(cls, "poll") and not cls.poll(bpy.context):
            continue
        calls = _draw(cls, bpy.context)
        drawn[cls.__name__] = [f for f, _ in calls]
    prefs = bpy.context.preferences.addons[addon].preferences
    drawn["preferences"] = [f for f, _ in _draw(type(prefs), bpy.context)]
    assert all(drawn.values()), drawn  # every shown panel drew something
    assert ("VIEW3D_PT_lw_motion" in drawn) == (state in ("filled", "running"))  # shown once a world exists
    assert ("progress" in drawn["VIEW3D_PT_lw_connection"]) == (state == "running")
    if state in ("filled", "running"):  # the world's steps and the run's metrics are listed
        assert drawn["VIEW3D_PT_lw_world"].count("label") >= 3 and drawn["VIEW3D_PT_lw_moe"].count("label") >= 15


def test_the_gaussians_panel_shows_the_selected_splats_and_their_playback(lw, addon, clean_scene):
    obj = _carrier(lw)
    obj.lw_seq.path, obj.lw_seq.frame_count = "/tmp/walk.lw4d", 12
    calls = _draw(bpy.types.VIEW3D_PT_lw_gaussians, bpy.context)
    labels = [given.get("text", "") for f, given in calls if f == "label"]
    assert any(text.startswith("4 Gaussians, SH degree 1") for text in labels), labels
    assert [given["property"] for f, given in calls if f == "prop"] == ["time", "use_scene_time", "speed", "offset",
                                                                      "loop_mode"]


def test_the_recording_layout_fails_on_missing_properties_operators_and_parameters(lw, addon, clean_scene):
    scene = clean_scene
    cases = {
        "has no property 'no_such_setting'": lambda layout: layout.prop(scene.lw.world, "no_such_setting"),
        "is not registered": lambda layout: layout.row().operator("lw.no_such_operator"),
        "has no property 'frames_typo'": lambda layout: setattr(layout.operator("lw.world_bake"), "frames_typo", 3),
        "not one of its items": lambda layout: layout.label(text="x", icon="NO_SUCH_ICON"),
        "has no parameter 'txt'": lambda layout: layout.label(txt="x"),
        "UILayout has no function": lambda layout: layout.box().progres(factor=0.5),
    }
    for message, body in cases.items():
        panel = type("Panel", (), {"draw": lambda self, context, body=body: body(self.layout)})
        with pytest.raises(LayoutError, match=message):
            _draw(panel, bpy.context)
    panel = type("Panel", (), {"draw": lambda self, context: self.layout.prop(scene.render, "fps")})
    assert _draw(panel, bpy.context) == [("prop", {"data": scene.render, "property": "fps"})]


def _labels(calls) -> list[str]:
    return [given.get("text", "") for f, given in calls if f == "label"]


@pytest.mark.parametrize("document", ["not json", "[0.99, 0.98]", '{"temporal_flicker": "high"}',
                                      ('{"temporal_flicker": 0.99, "motion_smoothness": 0.98, "seam_ratio": 0.5, '
                                      '"uncovered_max": 0.0, "goals": [], "exact": true}')])
def test_the_motion_panel_says_a_malformed_loop_measurement_could_not_be_read(lw, addon, clean_scene, document):
    s = clean_scene.lw.world
    s.directory, s.sequence, s.metrics = "/tmp/lw-panel-test/world", "/tmp/lw-panel-test/loop.lw4d", document
    labels = _labels(_draw(bpy.types.VIEW3D_PT_lw_motion, bpy.context))
    assert any(text.startswith("The loop measurement could not be read") for text in labels), labels
    s.metrics = DOCUMENTS["metrics"]  # the backend's shape still reads
    labels = _labels(_draw(bpy.types.VIEW3D_PT_lw_motion, bpy.context))
    assert any(text.startswith("Flicker (VBench) 0.9910") for text in labels), labels


def test_measuring_the_loop_shows_only_while_a_bake_that_measures_runs(lw, addon, clean_scene, monkeypatch):
    s = clean_scene.lw.world
    s.directory, s.sequence = "/tmp/lw-panel-test/world", "/tmp/lw-panel-test/loop.lw4d"
    chain = lw.lw_blender.world._chain

    def shown(busy: str, measure: bool) -> bool:
        monkeypatch.setattr(chain, "busy", busy)
        s.measure_loop = measure
        return "Measuring the loop..." in _labels(_draw(bpy.types.VIEW3D_PT_lw_motion, bpy.context))

    assert shown("Bake Loop", True)
    assert not shown("Bake Loop", False)  # no measurement asked for
    assert not shown("Expand World", True) and not shown("Update Motion", True)  # other world actions
    assert not shown("", True)
