"""The quad display's materials (Blender 4.2-5.2): Gaussian falloff alpha, emission colour.

Material, per shading point of a splat quad (``lw_uv`` = position in sigma units, see ``quads.nodes``):

    alpha = opacity * exp(-|lw_uv|^2 / 2)
    surface = mix(Transparent, Emission(colour), alpha)

``opacity`` and the colour attribute are per-point values read through Attribute nodes of type INSTANCER.
Gaussian splats store display (sRGB) colours, as the photos they were fitted to; Blender shades in scene-linear,
so the material converts the colour with the sRGB curve (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055)^2.4)
before emitting it. Emission-only shading makes a splat show its stored colour whatever the lights are; with
the Standard view transform the rendered pixel is the stored colour (``carrier.prefer_standard_view``
sets it for a scene that holds nothing but splats and cameras). EEVEE uses blended transparency (splats sorted back to front).

Viewport point material ("LW Splat Point", for the "Viewport Points" display of ``quads.nodes``): each Gaussian is
one sphere of radius R = POINT_EXTENT * sigma; at a shading point with normal n seen along the incoming
direction i, the distance from the sphere's centre across the view is r = R sqrt(1 - (n . i)^2), so

    alpha = opacity * exp(-(POINT_EXTENT^2 (1 - (n . i)^2)) / 2)

an isotropic Gaussian facing the viewer; opacity and colour are read from the points (type GEOMETRY). Its EEVEE
transparency is dithered (order-independent), so viewport points need no back-to-front sort.
"""

MATERIAL_NAME = "LW Splat"
POINT_MATERIAL_NAME = "LW Splat Point"
POINT_EXTENT = 3.0
COLOR_ATTRIBUTE = "gs_color"
DC_ATTRIBUTE = "sh_0"


def sh_attribute(k: int) -> str:
    """Name of the carrier attribute holding SH coefficient k (k = 0 is the DC term)."""
    return f"sh_{k}"


def _new_material(name, blended: bool = True):
    """An emptied node material; EEVEE transparency blended (needs sorted splats) or dithered (order-free)."""
    import bpy

    mat = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # 5.x materials always use nodes (the property is deprecated)
        mat.use_nodes = True
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "BLENDED" if blended else "DITHERED"
    else:
        mat.blend_method = "BLEND" if blended else "HASHED"
    mat.use_backface_culling = False
    mat.node_tree.nodes.clear()
    return mat


def _adder(tree):
    def node(type_name, location, **props):
        n = tree.nodes.new(type_name)
        n.location = location
        for key, value in props.items():
            setattr(n, key, value)
        return n

    return node


def _srgb_to_linear(tree, node, color):
    """Socket of ``color`` (sRGB display values) converted to scene-linear, channel by channel (module docstring)."""
    split = node("ShaderNodeSeparateColor", (-1300, -300))
    tree.links.new(color, split.inputs[0])
    join = node("ShaderNodeCombineColor", (-300, -300))
    for i in range(3):
        c = split.outputs[i]
        y = -150 - 250 * i
        low = node("ShaderNodeMath", (-1100, y), operation="MULTIPLY")
        tree.links.new(c, low.inputs[0])
        low.inputs[1].default_value = 1.0 / 12.92
        shifted = node("ShaderNodeMath", (-1100, y - 60), operation="MULTIPLY_ADD")
        tree.links.new(c, shifted.inputs[0])
        shifted.inputs[1].default_value = 1.0 / 1.055
        shifted.inputs[2].default_value = 0.055 / 1.055
        high = node("ShaderNodeMath", (-900, y - 60), operation="POWER")
        tree.links.new(shifted.outputs[0], high.inputs[0])
        high.inputs[1].default_value = 2.4
        is_low = node("ShaderNodeMath", (-900, y + 60), operation="LESS_THAN")
        tree.links.new(c, is_low.inputs[0])
        is_low.inputs[1].default_value = 0.04045
        diff = node("ShaderNodeMath", (-700, y), operation="SUBTRACT")
        tree.links.new(low.outputs[0], diff.inputs[0])
        tree.links.new(high.outputs[0], diff.inputs[1])
        out = node("ShaderNodeMath", (-500, y), operation="MULTIPLY_ADD")  # high + is_low * (low - high)
        tree.links.new(is_low.outputs[0], out.inputs[0])
        tree.links.new(diff.outputs[0], out.inputs[1])
        tree.links.new(high.outputs[0], out.inputs[2])
        tree.links.new(out.outputs[0], join.inputs[i])
    return join.outputs[0]


def _emit(tree, node, alpha, color):
    """Surface = mix(Transparent, Emission(linear(color)), alpha)."""
    emission = node("ShaderNodeEmission", (-100, -100))
    tree.links.new(_srgb_to_linear(tree, node, color), emission.inputs["Color"])
    emission.inputs["Strength"].default_value = 1.0
    transparent = node("ShaderNodeBsdfTransparent", (-100, 100))
    mix = node("ShaderNodeMixShader", (150, 100))
    tree.links.new(alpha, mix.inputs["Fac"])
    tree.links.new(transparent.outputs[0], mix.inputs[1])
    tree.links.new(emission.outputs[0], mix.inputs[2])
    out = node("ShaderNodeOutputMaterial", (350, 100))
    tree.links.new(mix.outputs[0], out.inputs["Surface"])


def build_material():
    """Create (or rebuild in place) the "LW Splat" material and return it."""
    mat = _new_material(MATERIAL_NAME)
    tree = mat.node_tree
    node = _adder(tree)
    uv = node("ShaderNodeAttribute", (-900, 200), attribute_type="GEOMETRY", attribute_name="lw_uv")
    r2 = node("ShaderNodeVectorMath", (-700, 200), operation="DOT_PRODUCT")
    tree.links.new(uv.outputs["Vector"], r2.inputs[0])
    tree.links.new(uv.outputs["Vector"], r2.inputs[1])
    half = node("ShaderNodeMath", (-500, 200), operation="MULTIPLY")
    tree.links.new(r2.outputs["Value"], half.inputs[0])
    half.inputs[1].default_value = -0.5
    falloff = node("ShaderNodeMath", (-300, 200), operation="EXPONENT")
    tree.links.new(half.outputs[0], falloff.inputs[0])
    opacity = node("ShaderNodeAttribute", (-500, 400), attribute_type="INSTANCER", attribute_name="opacity")
    alpha = node("ShaderNodeMath", (-100, 300), operation="MULTIPLY", use_clamp=True)
    tree.links.new(falloff.outputs[0], alpha.inputs[0])
    tree.links.new(opacity.outputs["Fac"], alpha.inputs[1])

    color = node("ShaderNodeAttribute", (-300, -100), attribute_type="INSTANCER", attribute_name=COLOR_ATTRIBUTE)
    _emit(tree, node, alpha.outputs[0], color.outputs["Color"])
    return mat


def build_point_material():
    """Create (or rebuild in place) the "LW Splat Point" material of the viewport points and return it."""
    mat = _new_material(POINT_MATERIAL_NAME, blended=False)
    tree = mat.node_tree
    node = _adder(tree)
    geometry = node("ShaderNodeNewGeometry", (-1100, 200))
    facing = node("ShaderNodeVectorMath", (-900, 200), operation="DOT_PRODUCT")
    tree.links.new(geometry.outputs["Normal"], facing.inputs[0])
    tree.links.new(geometry.outputs["Incoming"], facing.inputs[1])
    squared = node("ShaderNodeMath", (-700, 200), operation="MULTIPLY")
    tree.links.new(facing.outputs["Value"], squared.inputs[0])
    tree.links.new(facing.outputs["Value"], squared.inputs[1])
    # -(k^2 / 2) (1 - f^2) = (k^2 / 2) f^2 - k^2 / 2
    exponent = node("ShaderNodeMath", (-500, 200), operation="MULTIPLY_ADD")
    tree.links.new(squared.outputs[0], exponent.inputs[0])
    exponent.inputs[1].default_value = POINT_EXTENT**2 / 2.0
    exponent.inputs[2].default_value = -(POINT_EXTENT**2) / 2.0
    falloff = node("ShaderNodeMath", (-300, 200), operation="EXPONENT")
    tree.links.new(exponent.outputs[0], falloff.inputs[0])
    opacity = node("ShaderNodeAttribute", (-500, 400), attribute_type="GEOMETRY", attribute_name="opacity")
    alpha = node("ShaderNodeMath", (-100, 300), operation="MULTIPLY", use_clamp=True)
    tree.links.new(falloff.outputs[0], alpha.inputs[0])
    tree.links.new(opacity.outputs["Fac"], alpha.inputs[1])
    color = node("ShaderNodeAttribute", (-300, -100), attribute_type="GEOMETRY", attribute_name=COLOR_ATTRIBUTE)
    _emit(tree, node, alpha.outputs[0], color.outputs["Color"])
    return mat
