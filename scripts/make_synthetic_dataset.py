"""Render an animated multi-view scene with Blender into the N3V layout (+ ground-truth depth).

Run with the Blender environment (bpy):

    .venv-blender/bin/python scripts/make_synthetic_dataset.py --out DIR [--preset tiny|small|bench]
        [--cameras K] [--frames T] [--width W] [--height H] [--samples S] [--scene basic|mixed|flame] [--repeats R]

Scene ``basic`` (Blender Z-up metres): a textured back wall and floor (static), a textured box on the floor
(static), a sphere crossing the scene fast (x from -1.1 to 1.1 over the clip, with a small hop), and a cube
rotating slowly about Z while its height "breathes" (non-rigid scale). Every motion of it is smooth over the whole
clip: a low-order polynomial per Gaussian fits all of it, and trained long enough the trajectory expert is best
almost everywhere (docs/bench/moe_mixture.md, converged experts).

Scene ``mixed`` adds the motions MoE-GS says other experts are for (MOEGS.md "Why a mixture"): a ball bouncing on
the floor three times (velocity reversed at every contact: locally diverse motion, keyframes' ground), a checkered
wheel turning twice on the wall side (every point on a circle: no low-order polynomial over the clip, consistent
fast motion), and a banner waving in place (a travelling wave: non-rigid motion of a low-motion region, a
deformation field's ground).

Scene ``flame`` adds to ``mixed`` a flickering flame by the wall (an emissive cone whose height and glow change
every frame) with a point light in it that follows the flicker, so the wall and floor around it brighten and dim
without moving, as the flames of N3V's flame_salmon / flame_steak light their kitchens. Light that changes where
nothing moves can only be approximated by experts whose opacity changes in time (trajectory: temporal opacity;
embedding: decoded opacity offsets), by fading Gaussians in and out; experts that only move, turn and scale their
Gaussians (keyframe, deformation) keep one colour per Gaussian.

``--repeats R`` (default 1) plays every motion R times over the clip: the sphere crosses and comes back, the cube
turns R x 35 degrees and breathes R times, the ball bounces 3R times, the wheel turns 2R times, 1.5R crests pass the
banner. With T = 20 R frames each frame moves as much as in the 20-frame clip, over an R times longer clip (N3V's
clips are 300 frames, Technicolor's 50): a cubic per Gaussian no longer spans a motion, which is where MoE-GS says
the experts part ways.

Cameras: K cameras on a horizontal arc (radius 4.2 m, height 1.3 m) looking at (0, 0, 0.55). ``cam00`` is
the centre of the arc (it is the held-out test camera, as cam00 is in N3V); cam01.. spread over +-30 degrees.

Output (what N3V publishes, plus truth):
- ``camNN.mp4``: H.264, ``fps`` frames per second, T frames, written by Blender's FFmpeg writer.
- ``poses_bounds.npy`` (K, 17) float64: per camera the 3x5 LLFF matrix ``[R | t | hwf]`` flattened row-major,
  then near and far. R's columns are the camera axes (down, right, back) in world coordinates, t the camera
  centre, hwf = (height px, width px, focal px). near/far are the 1st/99th depth percentiles of the camera.
- ``depth/camNN.npy`` (T, H, W) float32: z-depth along the optical axis in metres (Blender's View Z Depth).
- ``scene.json``: sizes, fps, camera angles, object motions.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

PRESETS = {
    # name: (cameras, frames, width, height, samples)
    "tiny": (4, 6, 96, 72, 4),
    "small": (6, 12, 160, 120, 8),
    "bench": (8, 30, 320, 240, 16),
}
TARGET = Vector((0.0, 0.0, 0.55))
RADIUS = 4.2
CAM_HEIGHT = 1.3
LENS_MM = 35.0
SENSOR_MM = 36.0


def camera_angles(k: int) -> list[float]:
    """cam00 in the arc's centre (0 rad), the others k of k evenly spaced angles over
    +-30 degrees, the one nearest the centre dropped."""
    if k < 2:
        raise SystemExit("need at least 2 cameras (one held out)")
    side = np.linspace(-math.radians(30), math.radians(30), k)
    others = np.delete(side, int(np.argmin(np.abs(side))))  # the centre belongs to cam00
    return [0.0] + [float(a) for a in others]


def material(name: str, color_a, color_b, scale: float, kind: str = "checker"):
    """A Principled material whose base colour is a checker or noise texture (gives multi-view features)."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    bsdf = nt.nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.8
    if kind == "checker":
        tex = nt.nodes.new("ShaderNodeTexChecker")
        tex.inputs["Color1"].default_value = (*color_a, 1.0)
        tex.inputs["Color2"].default_value = (*color_b, 1.0)
        tex.inputs["Scale"].default_value = scale
        nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    else:
        tex = nt.nodes.new("ShaderNodeTexNoise")
        tex.inputs["Scale"].default_value = scale
        tex.inputs["Detail"].default_value = 8.0
        ramp = nt.nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = (*color_a, 1.0)
        ramp.color_ramp.elements[1].color = (*color_b, 1.0)
        nt.links.new(tex.outputs["Fac"], ramp.inputs["Fac"])
        nt.links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def add_mixed_motions(frames: int, repeats: int = 1) -> dict:
    """The ``mixed`` scene's three extra movers (module docstring), each played ``repeats`` times."""
    def clip(f: int) -> float:
        return (f - 1) / max(frames - 1, 1)

    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.18, location=(-0.35, 0.75, 0.18), segments=20, ring_count=10)
    bouncer = bpy.context.object
    bouncer.name = "bouncing_ball"
    bouncer.data.materials.append(material("bouncer", (0.95, 0.75, 0.05), (0.35, 0.1, 0.6), 8.0))
    for f in range(1, frames + 1):  # a keyframe per frame: the contacts stay sharp (no Bezier easing between)
        bouncer.location = (-0.35 + 0.5 * clip(f), 0.75, 0.18 + 0.7 * abs(math.sin(3 * repeats * math.pi * clip(f))))
        bouncer.keyframe_insert("location", frame=f)

    bpy.ops.mesh.primitive_cylinder_add(radius=0.42, depth=0.08, location=(0.35, 1.7, 1.45),
                                        rotation=(math.pi / 2, 0.0, 0.0), vertices=48)
    wheel = bpy.context.object
    wheel.name = "turning_wheel"
    wheel.data.materials.append(material("wheel", (0.9, 0.1, 0.5), (0.95, 0.95, 0.9), 5.0))
    for f in range(1, frames + 1):
        wheel.rotation_euler = (math.pi / 2, 4 * repeats * math.pi * clip(f), 0.0)  # two turns about its axle (world Y)
        wheel.keyframe_insert("rotation_euler", frame=f)

    bpy.ops.mesh.primitive_plane_add(size=1.0, location=(-1.35, 1.6, 1.35), rotation=(math.pi / 2, 0.0, 0.0))
    banner = bpy.context.object
    banner.name = "waving_banner"
    banner.scale = (1.1, 0.7, 1.0)
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.subdivide(number_cuts=24)
    bpy.ops.object.mode_set(mode="OBJECT")
    banner.data.materials.append(material("banner", (0.1, 0.55, 0.6), (0.95, 0.9, 0.7), 6.0))
    wave = banner.modifiers.new("wave", "WAVE")  # a travelling wave along the banner, animated by the frame
    wave.use_normal, wave.use_x, wave.use_y = True, True, False
    wave.height, wave.width, wave.narrowness = 0.9, 0.35, 1.0  # crests 0.35 apart (local units), ~10 cm deep
    wave.speed = 1.5 * repeats * wave.width / max(frames - 1, 1)  # a crest and a half travels by (per repeat)
    wave.start_position_x, wave.time_offset = -0.6, -1.5 / wave.speed  # started early: the whole banner waves
    return {
        "bouncing_ball": f"x -0.35 -> 0.15, z = 0.18 + 0.7 |sin({3 * repeats} pi s)|: {3 * repeats} bounces, "
                         "velocity reversed at contact",
        "turning_wheel": f"{2 * repeats} turns about its axle (world Y) over the clip, checkered",
        "waving_banner": "Wave modifier along x on a fixed banner (non-rigid, low motion)",
    }


def flicker(frame: int) -> float:
    """A flame's flicker in [0, 1] at a frame (0-based): four sines at incommensurate rates (cycles per frame), so
    it changes every frame, never repeats within a clip, and is the same for every clip length."""
    rates, phases = (0.071, 0.131, 0.229, 0.313), (0.3, 1.7, 4.1, 2.6)
    return 0.5 + 0.5 * sum(math.sin(2 * math.pi * r * frame + p) for r, p in zip(rates, phases)) / len(rates)


def add_flame(frames: int) -> dict:
    """The ``flame`` scene's flame and its light (module docstring)."""
    base = (-0.6, 1.55, 0.0)
    bpy.ops.mesh.primitive_cone_add(radius1=0.1, depth=0.36, location=(base[0], base[1], 0.18), vertices=24)
    flame = bpy.context.object
    flame.name = "flame"
    mat = bpy.data.materials.new("flame")
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (1.0, 0.45, 0.1, 1.0)
    bsdf.inputs["Emission Color"].default_value = (1.0, 0.5, 0.12, 1.0)
    flame.data.materials.append(mat)
    # the light inside does the lighting: the cone is seen, never sampled as a light (no fireflies at few samples)
    flame.visible_diffuse = flame.visible_glossy = flame.visible_transmission = flame.visible_shadow = False
    bpy.context.scene.cycles.sample_clamp_indirect = 1.0
    bpy.ops.object.light_add(type="POINT", location=(base[0], base[1], 0.3))
    light = bpy.context.object
    light.name = "flame_light"
    light.data.color = (1.0, 0.6, 0.3)
    light.data.shadow_soft_size = 0.1
    for f in range(1, frames + 1):
        v = flicker(f - 1)
        flame.scale = (1.0, 1.0, 0.6 + 0.8 * v)
        flame.keyframe_insert("scale", frame=f)
        bsdf.inputs["Emission Strength"].default_value = 1.0 + 4.0 * v
        bsdf.inputs["Emission Strength"].keyframe_insert("default_value", frame=f)
        light.data.energy = 3.0 + 27.0 * v
        light.data.keyframe_insert("energy", frame=f)
    return {"flame": "emissive cone by the wall, height 0.6-1.4x and emission 1-5 with the flicker, every frame",
            "flame_light": "point light in the flame, 3-30 W with the flicker: the wall and floor around it "
                           "brighten and dim without moving"}


def build_scene(frames: int, fps: int, kind: str = "basic", repeats: int = 1) -> dict:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames
    scene.render.fps = fps

    bpy.ops.mesh.primitive_plane_add(size=16.0, location=(0.0, 2.0, 2.0), rotation=(math.pi / 2, 0.0, 0.0))
    wall = bpy.context.object
    wall.name = "wall"
    wall.data.materials.append(material("wall", (0.9, 0.85, 0.75), (0.15, 0.2, 0.35), 4.0, "noise"))
    bpy.ops.mesh.primitive_plane_add(size=16.0, location=(0.0, 0.0, 0.0))
    floor = bpy.context.object
    floor.name = "floor"
    floor.data.materials.append(material("floor", (0.5, 0.45, 0.35), (0.15, 0.12, 0.1), 5.0, "noise"))

    bpy.ops.mesh.primitive_cube_add(size=0.6, location=(-1.2, 0.6, 0.3))
    box = bpy.context.object
    box.name = "static_box"
    box.data.materials.append(material("box", (0.2, 0.7, 0.3), (0.9, 0.9, 0.2), 4.0))

    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.32, location=(-1.1, -0.3, 0.45), segments=24, ring_count=12)
    ball = bpy.context.object
    ball.name = "fast_sphere"
    ball.data.materials.append(material("ball", (0.9, 0.15, 0.1), (1.0, 0.8, 0.6), 6.0))
    if repeats == 1:  # the two eased keys of the datasets made before --repeats: those scenes stay as they were
        for f, x in ((1, -1.1), (frames, 1.1)):
            ball.location = (x, -0.3, 0.45 + (0.25 if f == frames else 0.0))
            ball.keyframe_insert("location", frame=f)
    else:  # there and back: a triangle wave with ``repeats`` legs, one keyframe per frame
        for f in range(1, frames + 1):
            leg = repeats * (f - 1) / max(frames - 1, 1)
            u = leg % 2.0 if leg % 2.0 <= 1.0 else 2.0 - leg % 2.0
            ball.location = (-1.1 + 2.2 * u, -0.3, 0.45 + 0.25 * u)
            ball.keyframe_insert("location", frame=f)

    bpy.ops.mesh.primitive_cube_add(size=0.7, location=(0.9, 0.5, 0.45))
    cube = bpy.context.object
    cube.name = "slow_cube"
    cube.data.materials.append(material("cube", (0.15, 0.3, 0.9), (0.9, 0.9, 0.95), 3.0))
    for f in range(1, frames + 1):
        s = (f - 1) / max(frames - 1, 1)
        cube.rotation_euler = (0.0, 0.0, math.radians(35.0) * repeats * s)
        cube.scale = (1.0, 1.0, 1.0 + 0.25 * abs(math.sin(math.pi * repeats * s)))
        cube.keyframe_insert("rotation_euler", frame=f)
        cube.keyframe_insert("scale", frame=f)

    bpy.ops.object.light_add(type="SUN", location=(0.0, -2.0, 5.0), rotation=(math.radians(40), 0.0,
                                                                              math.radians(20)))
    bpy.context.object.data.energy = 3.0
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.35, 0.4, 1.0)
    scene.world = world
    motions = {
        "static": ["wall", "floor", "static_box"],
        "fast_sphere": "location x -1.1 -> 1.1, z +0.25 (linear) over the clip" if repeats == 1 else
                       f"location x -1.1 <-> 1.1, z +0.25 at x = 1.1: {repeats} legs, there and back",
        "slow_cube": f"rotation about Z 0 -> {35 * repeats} deg, height scale 1 -> 1.25 -> 1 (|sin|) "
                     f"{repeats} time(s)",
    }
    if kind in ("mixed", "flame"):
        motions.update(add_mixed_motions(frames, repeats))
    if kind == "flame":
        motions.update(add_flame(frames))
    return motions


def add_cameras(k: int) -> list:
    cams = []
    for i, a in enumerate(camera_angles(k)):
        data = bpy.data.cameras.new(f"cam{i:02d}")
        data.lens = LENS_MM
        data.sensor_width = SENSOR_MM
        data.sensor_fit = "HORIZONTAL"
        obj = bpy.data.objects.new(f"cam{i:02d}", data)
        bpy.context.scene.collection.objects.link(obj)
        obj.location = (RADIUS * math.sin(a), -RADIUS * math.cos(a), CAM_HEIGHT)
        obj.rotation_euler = (TARGET - obj.location).to_track_quat("-Z", "Y").to_euler()
        cams.append((obj, a))
    bpy.context.view_layer.update()
    return cams


def setup_render(width: int, height: int, samples: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2
    scene.view_settings.view_transform = "Standard"


def render_video(cam, path: Path) -> None:
    """Colour: the camera's animation straight into an H.264 mp4 by Blender's FFmpeg writer."""
    scene = bpy.context.scene
    scene.camera = cam
    scene.view_layers[0].material_override = None
    scene.cycles.filter_width = 1.5
    s = scene.render.image_settings
    s.media_type = "VIDEO"
    s.file_format = "FFMPEG"
    scene.render.ffmpeg.format = "MPEG4"
    scene.render.ffmpeg.codec = "H264"
    scene.render.ffmpeg.constant_rate_factor = "PERC_LOSSLESS"
    scene.render.filepath = str(path)
    scene.render.use_file_extension = False
    bpy.ops.render.render(animation=True)


def depth_material():
    """Emission = View Z Depth: one Cycles sample of this override is the z-depth image (metres)."""
    mat = bpy.data.materials.new("depth_override")
    mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    cam = nt.nodes.new("ShaderNodeCameraData")
    emit = nt.nodes.new("ShaderNodeEmission")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(cam.outputs["View Z Depth"], emit.inputs["Color"])
    emit.inputs["Strength"].default_value = 1.0
    nt.links.new(emit.outputs["Emission"], out.inputs["Surface"])
    return mat


def render_depth(cam, frames: int, tmp: Path, override) -> np.ndarray:
    """(T, H, W) float32 z-depth: render the override to float EXR per frame and read it back."""
    scene = bpy.context.scene
    scene.camera = cam
    scene.view_layers[0].material_override = override
    samples, world = scene.cycles.samples, scene.world
    scene.cycles.samples = 1
    scene.cycles.filter_width = 0.01  # sample pixel centres only: no mixing of depths across edges
    scene.world = None
    s = scene.render.image_settings
    s.media_type = "IMAGE"
    s.file_format = "OPEN_EXR"
    s.color_depth = "32"
    s.exr_codec = "ZIP"
    out = []
    w, h = scene.render.resolution_x, scene.render.resolution_y
    for f in range(1, frames + 1):
        scene.frame_set(f)
        path = tmp / f"{cam.name}_{f:04d}.exr"
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(str(path))
        px = np.empty(w * h * 4, dtype=np.float32)
        img.pixels.foreach_get(px)
        bpy.data.images.remove(img)
        out.append(px.reshape(h, w, 4)[::-1, :, 0].copy())  # Blender stores rows bottom-up
    scene.cycles.samples, scene.world = samples, world
    scene.view_layers[0].material_override = None
    return np.stack(out)


def llff_pose(cam, width: int, height: int) -> np.ndarray:
    """3x5 LLFF matrix: columns (down, right, back) of the camera in world, centre, [H, W, focal px]."""
    m = np.array(cam.matrix_world, dtype=np.float64)
    x, y, z = m[:3, 0], m[:3, 1], m[:3, 2]  # Blender camera axes: right, up, back
    focal = cam.data.lens / cam.data.sensor_width * width  # sensor_fit HORIZONTAL
    return np.stack([-y, x, z, m[:3, 3], np.array([height, width, focal])], axis=1)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--cameras", type=int)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--scene", choices=["basic", "mixed", "flame"], default="basic",
                    help="mixed: adds a bouncing ball, a turning wheel and a waving banner; flame: mixed and a "
                         "flickering flame that lights the wall (module docstring)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="play every motion this many times over the clip (module docstring)")
    a = ap.parse_args(argv)
    k, t, w, h, spp = PRESETS[a.preset]
    k, t, w, h, spp = (a.cameras or k, a.frames or t, a.width or w, a.height or h, a.samples or spp)
    if w % 2 or h % 2:
        raise SystemExit("width and height must be even (H.264)")
    if a.repeats < 1 or a.repeats > max(t - 1, 1):
        raise SystemExit(f"--repeats must be between 1 and frames - 1 ({max(t - 1, 1)}), got {a.repeats}")

    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    motions = build_scene(t, a.fps, a.scene, a.repeats)
    cams = add_cameras(k)
    setup_render(w, h, spp)
    override = depth_material()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="lw_synth_"))
    try:
        for cam, _ in cams:
            render_video(cam, out / f"{cam.name}.mp4")
            depth = render_depth(cam, t, tmp, override)
            np.save(out / "depth" / f"{cam.name}.npy", depth.astype(np.float32))
            valid = depth[depth > 0]
            near, far = np.percentile(valid, 1), np.percentile(valid, 99)
            rows.append(np.concatenate([llff_pose(cam, w, h).reshape(-1), [near, far]]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    np.save(out / "poses_bounds.npy", np.stack(rows).astype(np.float64))
    meta = {
        "generator": "scripts/make_synthetic_dataset.py",
        "cameras": k, "frames": t, "width": w, "height": h, "fps": a.fps, "samples": spp,
        "camera_angles_deg": [round(math.degrees(x), 3) for _, x in cams],
        "held_out": "cam00", "world": "blender_z_up_m", "scene": a.scene, "repeats": a.repeats,
        "motions": motions,
    }
    (out / "scene.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps({"out": str(out), **{key: meta[key] for key in ("cameras", "frames", "width", "height")}}))


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    main(argv)
