"""Gaussian splats in Blender: carrier objects and how they are displayed and animated.

    sh, data        bpy-free arrays: SH maths, decoded Gaussians, attribute read/write
    carrier         decoded Gaussians -> a carrier object in the scene (imports, the world, MoE results), export
    playback        .lw4d sequences on the timeline (frame handlers, loop modes, keyframed / driven time)
    render          the backend's exact render of a carrier from the Blender camera
    quads/          the display of Blender 4.2-5.2: a vertex mesh, Geometry Nodes quads, numpy back-to-front order
"""
