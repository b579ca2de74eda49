"""Geometry Nodes splat display, built in Python (no .blend assets).

Every carrier vertex becomes one instance of a unit quad (local coordinates p in [-1, 1]^2, z = 0). The quad
lies in the plane of the Gaussian's two largest axes, so a splat is a flat 3D ellipse in world space and its
screen size follows the camera's focal length like any other geometry:

    world(p) = mu + R_q P diag(k s_P) p

with mu the vertex position, R_q the rotation of the "rotation" attribute (w, x, y, z), s the "scale"
attribute (linear sigmas), P a fixed axis permutation that moves the smallest sigma to the quad normal and
k the "Extent" input (sigmas covered by the quad, default 3). The quad stores ``lw_uv = k p``, the position
in sigma units, which the splat material turns into exp(-|lw_uv|^2 / 2).

Points are sorted back to front by distance to the scene's active camera (Sort Elements, weight = -|mu - c|)
for EEVEE's blended transparency; the modifier re-evaluates when the camera moves because the group reads the
camera's transform.
"""

import bpy

GROUP_NAME = "LW Splats"
MODIFIER_NAME = "LW Splats"
UV_ATTRIBUTE = "lw_uv"
EXTENT_INPUT = "Extent"
SORT_INPUT = "Sort"


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


def build_group(material: bpy.types.Material) -> bpy.types.NodeTree:
    """Create (or rebuild in place) the "LW Splats" node group, its quads carrying ``material``."""
    tree = bpy.data.node_groups.get(GROUP_NAME)
    if tree is None:
        tree = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    tree.nodes.clear()
    tree.interface.clear()
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    extent = tree.interface.new_socket(EXTENT_INPUT, in_out="INPUT", socket_type="NodeSocketFloat")
    extent.default_value = 3.0
    extent.min_value = 0.1
    extent.max_value = 10.0
    extent.description = "Half size of each splat quad, in standard deviations of its Gaussian"
    sort = tree.interface.new_socket(SORT_INPUT, in_out="INPUT", socket_type="NodeSocketBool")
    sort.default_value = True
    sort.description = "Sort splats back to front from the active camera (needed by EEVEE blended alpha)"
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")

    group_in = _node(tree, "NodeGroupInput", (-1400, 0))
    group_out = _node(tree, "NodeGroupOutput", (1000, 0))

    # Back-to-front order: ascending sort on -distance to the active camera.
    camera = _node(tree, "GeometryNodeInputActiveCamera", (-1400, 300))
    camera_info = _node(tree, "GeometryNodeObjectInfo", (-1200, 300))
    _link(tree, camera.outputs[0], camera_info.inputs["Object"])
    position = _node(tree, "GeometryNodeInputPosition", (-1200, 450))
    distance = _vector_math(tree, "DISTANCE", position.outputs[0], camera_info.outputs["Location"], (-1000, 400))
    negate = _node(tree, "ShaderNodeMath", (-800, 400), operation="MULTIPLY")
    _link(tree, distance.outputs["Value"], negate.inputs[0])
    negate.inputs[1].default_value = -1.0
    sort = _node(tree, "GeometryNodeSortElements", (-600, 200), domain="POINT")
    _link(tree, group_in.outputs[0], sort.inputs["Geometry"])
    _link(tree, group_in.outputs[SORT_INPUT], sort.inputs["Selection"])
    _link(tree, negate.outputs[0], sort.inputs["Sort Weight"])

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

    # Per-point rotation and scale; put the smallest sigma on the quad normal.
    rotation = _node(tree, "GeometryNodeInputNamedAttribute", (-1200, -800), data_type="QUATERNION")
    rotation.inputs["Name"].default_value = "rotation"
    scale = _node(tree, "GeometryNodeInputNamedAttribute", (-1200, -1000), data_type="FLOAT_VECTOR")
    scale.inputs["Name"].default_value = "scale"
    sep = _node(tree, "ShaderNodeSeparateXYZ", (-1000, -1000))
    _link(tree, scale.outputs["Attribute"], sep.inputs[0])
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

    quat = rotation.outputs["Attribute"]
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
    scale_yz = _switch(tree, "VECTOR", y_le_z, scale.outputs["Attribute"], scale_y_min, (-400, -1100))
    scale_out = _switch(tree, "VECTOR", x_min, scale_yz, scale_x_min, (-200, -1100))
    scale_k = _node(tree, "ShaderNodeVectorMath", (0, -1100), operation="SCALE")
    _link(tree, scale_out, scale_k.inputs[0])
    _link(tree, group_in.outputs[EXTENT_INPUT], scale_k.inputs["Scale"])

    instance = _node(tree, "GeometryNodeInstanceOnPoints", (300, 0))
    _link(tree, sort.outputs[0], instance.inputs["Points"])
    _link(tree, set_material.outputs[0], instance.inputs["Instance"])
    _link(tree, rot_out, instance.inputs["Rotation"])
    _link(tree, scale_k.outputs[0], instance.inputs["Scale"])
    _link(tree, instance.outputs[0], group_out.inputs[0])
    return tree


def add_modifier(obj: bpy.types.Object, material: bpy.types.Material, extent: float = 3.0) -> bpy.types.Modifier:
    """Give ``obj`` the splat display modifier (building the node group once per file)."""
    tree = bpy.data.node_groups.get(GROUP_NAME) or build_group(material)
    modifier = obj.modifiers.get(MODIFIER_NAME) or obj.modifiers.new(MODIFIER_NAME, "NODES")
    modifier.node_group = tree
    set_input(modifier, EXTENT_INPUT, float(extent))
    return modifier


def set_input(modifier, name: str, value):
    """Set a group input of a Geometry Nodes modifier by its interface name (Blender 4.2 .. 5.x)."""
    for item in modifier.node_group.interface.items_tree:
        if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.name == name:
            if "properties" in modifier.bl_rna.properties:  # Blender 5.x: typed modifier interface
                getattr(modifier.properties.inputs, item.identifier).value = value
            else:
                modifier[item.identifier] = value
            return
    raise KeyError(f"node group {modifier.node_group.name!r} has no input {name!r}")
