"""Geometry Nodes splat display, built in Python (no .blend assets).

Every carrier vertex becomes one instance of a unit quad (local coordinates p in [-1, 1]^2, z = 0). The quad
lies in the plane of the Gaussian's two largest axes, so a splat is a flat 3D ellipse in world space and its
screen size follows the camera's focal length like any other geometry:

    world(p) = mu + R_q P diag(k s_P) p

with mu the vertex position, R_q the rotation of the "rotation" attribute (w, x, y, z), s the "scale"
attribute (linear sigmas), P a fixed axis permutation that moves the smallest sigma to the quad normal and
k the "Extent" input (sigmas covered by the quad, default 3). The quad stores ``lw_uv = k p``, the position
in sigma units, which the splat material turns into exp(-|lw_uv|^2 / 2). When the points carry the view-facing
frame ``lw_view_rotation`` / ``lw_view_scale`` (written by ``sorting.update_facing`` for the current
view), those replace ``rotation`` / ``scale``: each quad then faces the view with the Gaussian's projected
ellipse, as 3DGS draws it, instead of lying in the plane of its two largest axes (a sliver when seen edge-on).

Draw order. EEVEE's blended transparency needs splats back to front. The group does not sort (a Sort Elements
node re-sorted 1M points on every evaluation, 0.4 s): with the "Sort" input on, draw slot i shows Gaussian
``lw_order[i]`` (an INT point attribute; every channel the display reads is gathered with Sample Index).
``sorting`` computes that permutation in numpy when the view changes and switches "Sort" on with
it; engines that need no order (Cycles, Workbench) get "Sort" off and pay nothing.

Viewport points. With "Viewport Points" on, viewport evaluations (``Is Viewport``) show each Gaussian as one
point of radius 3 * |s| / sqrt(2) (the "LW Splat Point" material draws a view-facing Gaussian falloff on it)
instead of an oriented quad: building 1M instances costs ~60 ms of CPU per evaluation, points ~5 ms. Renders
(F12, ``render.render``) always use the quads.
"""

import bpy

from . import material as splat_material

GROUP_NAME = "LW Splats"
GROUP_VERSION = 3  # stored on the group; an older group in a loaded .blend is rebuilt in place
VERSION_PROPERTY = "lw_version"
MODIFIER_NAME = "LW Splats"
UV_ATTRIBUTE = "lw_uv"
ORDER_ATTRIBUTE = "lw_order"
VIEW_ROTATION = "lw_view_rotation"
VIEW_SCALE = "lw_view_scale"
EXTENT_INPUT = "Extent"
SORT_INPUT = "Sort"
POINTS_INPUT = "Viewport Points"
# Sigmas covered by a viewport point's radius (the point material's falloff assumes the same).
POINT_EXTENT = splat_material.POINT_EXTENT
# Carriers with at least this many Gaussians get "Viewport Points" on at import (the user can switch it).
POINTS_DEFAULT_COUNT = 500_000
# (attribute, data type of Sample Index / Store Named Attribute) gathered through lw_order
_DRAWN = (("opacity", "FLOAT"), (splat_material.COLOR_ATTRIBUTE, "FLOAT_COLOR"), ("rotation", "QUATERNION"),
          ("scale", "FLOAT_VECTOR"), (VIEW_ROTATION, "QUATERNION"), (VIEW_SCALE, "FLOAT_VECTOR"))


def _link(tree, out_socket, in_socket):
    tree.links.new(out_socket, in_socket)


def _node(tree, type_name, location, **props):
    node = tree.nodes.new(type_name)
    node.location = location
    for key, value in props.items():
        setattr(node, key, value)
    return node


def _vector_math(tree, operation, a, b, location):
    node = _node(tree, "ShaderNodeVectorMath", location, operation=operation)
    _link(tree, a, node.inputs[0])
    _link(tree, b, node.inputs[1])
    return node


def _switch(tree, input_type, condition, if_false, if_true, location):
    node = _node(tree, "GeometryNodeSwitch", location, input_type=input_type)
    _link(tree, condition, node.inputs["Switch"])
    _link(tree, if_false, node.inputs["False"])
    _link(tree, if_true, node.inputs["True"])
    return node.outputs[0]


def _fixed_rotation(tree, columns, rotation_socket, location):
    """rotation * P, with P the rotation whose columns are the images of the quad's local x, y, z axes."""
    import mathutils

    matrix = mathutils.Matrix(columns).transposed()
    node = _node(tree, "FunctionNodeRotateRotation", location, rotation_space="LOCAL")
    _link(tree, rotation_socket, node.inputs["Rotation"])
    node.inputs["Rotate By"].default_value = matrix.to_euler()
    return node.outputs[0]


def _named(tree, name, data_type, location):
    node = _node(tree, "GeometryNodeInputNamedAttribute", location, data_type=data_type)
    node.inputs["Name"].default_value = name
    return node


def _socket(tree, name, socket_type, default, description, **limits):
    item = tree.interface.new_socket(name, in_out="INPUT", socket_type=socket_type)
    item.default_value = default
    item.description = description
    for key, value in limits.items():
        setattr(item, key, value)
    return item


def _ordered(tree, geometry, use_order, location):
    """Geometry whose point i carries Gaussian lw_order[i] (position and every drawn channel), or ``geometry``."""
    x, y = location
    order = _named(tree, ORDER_ATTRIBUTE, "INT", (x, y - 200)).outputs["Attribute"]

    def gather(value, data_type, row):
        node = _node(tree, "GeometryNodeSampleIndex", (x + 200, y - 150 * row), data_type=data_type, domain="POINT")
        _link(tree, geometry, node.inputs["Geometry"])
        _link(tree, value, node.inputs["Value"])
        _link(tree, order, node.inputs["Index"])
        return node.outputs[0]

    position = _node(tree, "GeometryNodeInputPosition", (x, y))
    moved = _node(tree, "GeometryNodeSetPosition", (x + 400, y))
    _link(tree, geometry, moved.inputs["Geometry"])
    _link(tree, gather(position.outputs[0], "FLOAT_VECTOR", 0), moved.inputs["Position"])
    current = moved.outputs[0]
    for row, (name, data_type) in enumerate(_DRAWN, start=1):
        store = _node(tree, "GeometryNodeStoreNamedAttribute", (x + 400 + 200 * row, y), data_type=data_type,
                      domain="POINT")
        store.inputs["Name"].default_value = name
        _link(tree, current, store.inputs["Geometry"])
        value = _named(tree, name, data_type, (x, y - 150 * row - 300)).outputs["Attribute"]
        _link(tree, gather(value, data_type, row), store.inputs["Value"])
        current = store.outputs[0]
    return _switch(tree, "GEOMETRY", use_order, geometry, current, (x + 1400, y))


def _points(tree, geometry, material, location):
    """One point per Gaussian, radius POINT_EXTENT * |s| / sqrt(2), with the point material."""
    x, y = location
    scale = _named(tree, "scale", "FLOAT_VECTOR", (x, y - 200))
    length = _node(tree, "ShaderNodeVectorMath", (x + 200, y - 200), operation="LENGTH")
    _link(tree, scale.outputs["Attribute"], length.inputs[0])
    radius = _node(tree, "ShaderNodeMath", (x + 400, y - 200), operation="MULTIPLY")
    _link(tree, length.outputs["Value"], radius.inputs[0])
    radius.inputs[1].default_value = POINT_EXTENT / 2.0**0.5
    points = _node(tree, "GeometryNodeMeshToPoints", (x + 600, y), mode="VERTICES")
    _link(tree, geometry, points.inputs["Mesh"])
    _link(tree, radius.outputs[0], points.inputs["Radius"])
    set_material = _node(tree, "GeometryNodeSetMaterial", (x + 800, y))
    _link(tree, points.outputs[0], set_material.inputs["Geometry"])
    set_material.inputs["Material"].default_value = material
    return set_material.outputs[0]


def build_group(material: bpy.types.Material, point_material: bpy.types.Material | None = None) -> bpy.types.NodeTree:
    """Create (or rebuild in place) the "LW Splats" node group: quads carrying ``material``, viewport points
    carrying ``point_material`` (built when not given)."""
    if point_material is None:
        point_material = (bpy.data.materials.get(splat_material.POINT_MATERIAL_NAME)
                          or splat_material.build_point_material())
    tree = bpy.data.node_groups.get(GROUP_NAME)
    if tree is None:
        tree = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    tree.nodes.clear()
    tree.interface.clear()
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    _socket(tree, EXTENT_INPUT, "NodeSocketFloat", 3.0, "Half size of each splat quad, in standard deviations "
            "of its Gaussian", min_value=0.1, max_value=10.0)
    _socket(tree, SORT_INPUT, "NodeSocketBool", False, "Draw splats in the back-to-front order kept in the "
            f"{ORDER_ATTRIBUTE!r} attribute (EEVEE blended alpha); switched by the add-on with the engine")
    _socket(tree, POINTS_INPUT, "NodeSocketBool", False, "In the viewport, show each Gaussian as a round point "
            "instead of an oriented quad (much faster for millions of splats); renders always use quads")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    tree[VERSION_PROPERTY] = GROUP_VERSION

    group_in = _node(tree, "NodeGroupInput", (-2200, 0))
    group_out = _node(tree, "NodeGroupOutput", (1200, 0))

    # Draw order: gather through lw_order when Sort is on (lw_blender.sorting keeps both in step).
    ordered = _ordered(tree, group_in.outputs[0], group_in.outputs[SORT_INPUT], (-2000, 1400))

    # The unit quad, with its sigma-unit coordinate for the material.
    grid = _node(tree, "GeometryNodeMeshGrid", (-1000, -300))
    grid.inputs["Size X"].default_value = 2.0
    grid.inputs["Size Y"].default_value = 2.0
    grid.inputs["Vertices X"].default_value = 2
    grid.inputs["Vertices Y"].default_value = 2
    quad_position = _node(tree, "GeometryNodeInputPosition", (-1000, -500))
    uv = _node(tree, "ShaderNodeVectorMath", (-800, -500), operation="SCALE")
    _link(tree, quad_position.outputs[0], uv.inputs[0])
    _link(tree, group_in.outputs[EXTENT_INPUT], uv.inputs["Scale"])
    store_uv = _node(tree, "GeometryNodeStoreNamedAttribute", (-600, -300), data_type="FLOAT_VECTOR", domain="POINT")
    store_uv.inputs["Name"].default_value = UV_ATTRIBUTE
    _link(tree, grid.outputs["Mesh"], store_uv.inputs["Geometry"])
    _link(tree, uv.outputs[0], store_uv.inputs["Value"])
    set_material = _node(tree, "GeometryNodeSetMaterial", (-400, -300))
    _link(tree, store_uv.outputs[0], set_material.inputs["Geometry"])
    set_material.inputs["Material"].default_value = material

    # Per-point rotation and scale (the view-facing frame when written); put the smallest sigma on the quad normal.
    view_scale = _named(tree, VIEW_SCALE, "FLOAT_VECTOR", (-1600, -1100)).outputs["Attribute"]
    view_length = _node(tree, "ShaderNodeVectorMath", (-1450, -650), operation="LENGTH")
    _link(tree, view_scale, view_length.inputs[0])
    facing = _node(tree, "FunctionNodeCompare", (-1300, -650), data_type="FLOAT", operation="GREATER_THAN")
    _link(tree, view_length.outputs["Value"], facing.inputs["A"])
    facing = facing.outputs[0]  # per point: a view-facing frame was written (a missing attribute reads as zeros)
    rotation_socket = _switch(tree, "ROTATION", facing, _named(tree, "rotation", "QUATERNION", (-1600, -800))
                              .outputs["Attribute"], _named(tree, VIEW_ROTATION, "QUATERNION", (-1600, -900))
                              .outputs["Attribute"], (-1300, -800))
    scale_socket = _switch(tree, "VECTOR", facing, _named(tree, "scale", "FLOAT_VECTOR", (-1600, -1000))
                           .outputs["Attribute"], view_scale, (-1300, -1000))
    sep = _node(tree, "ShaderNodeSeparateXYZ", (-1000, -1000))
    _link(tree, scale_socket, sep.inputs[0])
    sx, sy, sz = sep.outputs["X"], sep.outputs["Y"], sep.outputs["Z"]

    def less_equal(a, b, location):
        node = _node(tree, "FunctionNodeCompare", location, data_type="FLOAT", operation="LESS_EQUAL")
        _link(tree, a, node.inputs["A"])
        _link(tree, b, node.inputs["B"])
        return node.outputs[0]

    x_le_y = less_equal(sx, sy, (-800, -900))
    x_le_z = less_equal(sx, sz, (-800, -1050))
    y_le_z = less_equal(sy, sz, (-800, -1200))
    x_min = _node(tree, "FunctionNodeBooleanMath", (-600, -950), operation="AND")
    _link(tree, x_le_y, x_min.inputs[0])
    _link(tree, x_le_z, x_min.inputs[1])
    x_min = x_min.outputs[0]

    quat = rotation_socket
    # x smallest: quad x -> y axis, quad y -> z axis, normal -> x axis; y smallest: x -> z, y -> x, normal -> y.
    rot_x_min = _fixed_rotation(tree, ((0, 1, 0), (0, 0, 1), (1, 0, 0)), quat, (-600, -700))
    rot_y_min = _fixed_rotation(tree, ((0, 0, 1), (1, 0, 0), (0, 1, 0)), quat, (-600, -600))

    def combine(a, b, c, location):
        node = _node(tree, "ShaderNodeCombineXYZ", location)
        for socket, value in zip(node.inputs, (a, b, c)):
            _link(tree, value, socket)
        return node.outputs[0]

    scale_y_min = combine(sz, sx, sy, (-600, -1300))
    scale_x_min = combine(sy, sz, sx, (-600, -1450))
    rot_yz = _switch(tree, "ROTATION", y_le_z, quat, rot_y_min, (-400, -700))
    rot_out = _switch(tree, "ROTATION", x_min, rot_yz, rot_x_min, (-200, -700))
    scale_yz = _switch(tree, "VECTOR", y_le_z, scale_socket, scale_y_min, (-400, -1100))
    scale_out = _switch(tree, "VECTOR", x_min, scale_yz, scale_x_min, (-200, -1100))
    scale_k = _node(tree, "ShaderNodeVectorMath", (0, -1100), operation="SCALE")
    _link(tree, scale_out, scale_k.inputs[0])
    _link(tree, group_in.outputs[EXTENT_INPUT], scale_k.inputs["Scale"])

    instance = _node(tree, "GeometryNodeInstanceOnPoints", (300, 0))
    _link(tree, ordered, instance.inputs["Points"])
    _link(tree, set_material.outputs[0], instance.inputs["Instance"])
    _link(tree, rot_out, instance.inputs["Rotation"])
    _link(tree, scale_k.outputs[0], instance.inputs["Scale"])

    # Viewport points instead of quads (the Switch evaluates only the branch it outputs).
    points = _points(tree, ordered, point_material, (-400, 600))
    is_viewport = _node(tree, "GeometryNodeIsViewport", (300, 400))
    use_points = _node(tree, "FunctionNodeBooleanMath", (500, 400), operation="AND")
    _link(tree, group_in.outputs[POINTS_INPUT], use_points.inputs[0])
    _link(tree, is_viewport.outputs[0], use_points.inputs[1])
    shown = _switch(tree, "GEOMETRY", use_points.outputs[0], instance.outputs[0], points, (800, 0))
    _link(tree, shown, group_out.inputs[0])
    return tree


def splat_group(material: bpy.types.Material) -> bpy.types.NodeTree:
    """The file's "LW Splats" group, built (or rebuilt from an older add-on version) when needed."""
    tree = bpy.data.node_groups.get(GROUP_NAME)
    if tree is None or tree.get(VERSION_PROPERTY) != GROUP_VERSION:
        tree = build_group(material)
    return tree


def add_modifier(obj: bpy.types.Object, material: bpy.types.Material, extent: float = 3.0,
                 viewport_points: bool | None = None) -> bpy.types.Modifier:
    """Give ``obj`` the splat display modifier (building the node group once per file).

    ``viewport_points`` None: on for carriers of at least POINTS_DEFAULT_COUNT Gaussians.
    """
    tree = splat_group(material)
    modifier = obj.modifiers.get(MODIFIER_NAME) or obj.modifiers.new(MODIFIER_NAME, "NODES")
    modifier.node_group = tree
    set_input(modifier, EXTENT_INPUT, float(extent))
    if viewport_points is None:
        viewport_points = len(obj.data.vertices) >= POINTS_DEFAULT_COUNT
    set_input(modifier, POINTS_INPUT, bool(viewport_points))
    return modifier


def get_input(modifier, name: str):
    """A group input's value on a Geometry Nodes modifier, by its interface name (Blender 4.2 .. 5.x)."""
    item = _input_item(modifier, name)
    if "properties" in modifier.bl_rna.properties:
        return getattr(modifier.properties.inputs, item.identifier).value
    return modifier.get(item.identifier, item.default_value)


def _input_item(modifier, name: str):
    for item in modifier.node_group.interface.items_tree:
        if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.name == name:
            return item
    raise KeyError(f"node group {modifier.node_group.name!r} has no input {name!r}")


def set_input(modifier, name: str, value):
    """Set a group input of a Geometry Nodes modifier by its interface name (Blender 4.2 .. 5.x) and tag its
    object for re-evaluation (neither way of setting it does that by itself)."""
    item = _input_item(modifier, name)
    if "properties" in modifier.bl_rna.properties:  # Blender 5.x: typed modifier interface
        getattr(modifier.properties.inputs, item.identifier).value = value
    else:
        modifier[item.identifier] = value
    modifier.id_data.update_tag()
