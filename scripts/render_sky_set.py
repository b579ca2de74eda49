"""Render the held-out labelled sky set with Blender (bpy): landscapes whose terrain leaves the frame at the top,
under a physical sky, with the true sky mask from the render's alpha.

Nothing here is painted by ``backend/world/samples/photos.py`` (the set the built-in segmentation was tuned on):
Cycles renders displaced terrain, boxes and tree crowns under Blender's multiple-scattering sky with procedural
clouds, over water that reflects it. Each scene is rendered twice: once as the photo (JPEG, as a camera saves it)
and once with a transparent film, whose alpha is 0 exactly where a camera ray meets nothing but sky.

    .venv-blender/bin/python scripts/render_sky_set.py [--out tests/data/sky] [--size 256] [--samples 16]
        [--scenes mountain_lake,city] [--replace]

Writes ``<scene>.jpg`` and ``<scene>_sky.png`` (255 = sky) per scene; ``bench/world_sky_iou.py`` scores them.
Files already in ``--out`` (by default the committed set) are overwritten only with ``--replace``.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import bpy
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _reset():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.view_settings.view_transform = "AgX"
    scene.view_settings.exposure = -1.0
    return scene


def _material(name, base, rough=0.8, snow_above=None, grass_below=None, noise_scale=6.0):
    """Principled BSDF whose colour is ``base`` broken up by noise, white above ``snow_above`` (Z, metres) and
    green below ``grass_below``."""
    mat = bpy.data.materials.new(name)
    nt = mat.node_tree
    bsdf = nt.nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = rough
    noise = nt.nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = noise_scale
    noise.inputs["Detail"].default_value = 8.0
    mix = nt.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.inputs[6].default_value = (*[c * 0.55 for c in base], 1.0)
    mix.inputs[7].default_value = (*base, 1.0)
    nt.links.new(noise.outputs["Fac"], mix.inputs[0])
    colour = mix.outputs[2]
    if snow_above is not None or grass_below is not None:
        geo = nt.nodes.new("ShaderNodeNewGeometry")
        sep = nt.nodes.new("ShaderNodeSeparateXYZ")
        nt.links.new(geo.outputs["Position"], sep.inputs[0])
        for level, rgb, above in ((grass_below, (0.12, 0.25, 0.06), False), (snow_above, (0.9, 0.92, 0.95), True)):
            if level is None:
                continue
            ramp = nt.nodes.new("ShaderNodeMapRange")
            ramp.inputs["From Min"].default_value = level - 0.5
            ramp.inputs["From Max"].default_value = level + 0.5
            add = nt.nodes.new("ShaderNodeMath")
            add.operation = "ADD"
            nt.links.new(sep.outputs[2], add.inputs[0])
            scaled = nt.nodes.new("ShaderNodeMath")
            scaled.operation = "MULTIPLY"
            scaled.inputs[1].default_value = 3.0
            nt.links.new(noise.outputs["Fac"], scaled.inputs[0])
            nt.links.new(scaled.outputs[0], add.inputs[1])
            nt.links.new(add.outputs[0], ramp.inputs["Value"])
            fac = ramp.outputs[0]
            if not above:
                inv = nt.nodes.new("ShaderNodeMath")
                inv.operation = "SUBTRACT"
                inv.inputs[0].default_value = 1.0
                nt.links.new(fac, inv.inputs[1])
                fac = inv.outputs[0]
            m = nt.nodes.new("ShaderNodeMix")
            m.data_type = "RGBA"
            m.inputs[7].default_value = (*rgb, 1.0)
            nt.links.new(fac, m.inputs[0])
            nt.links.new(colour, m.inputs[6])
            colour = m.outputs[2]
    nt.links.new(colour, bsdf.inputs["Base Color"])
    return mat


def _terrain(name, size, location, height, mat, noise=1.5, peak=None, subdiv=7):
    """A displaced grid: fractal clouds of ``height`` metres, plus a summit (x, y, height, radius) if given."""
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=2 ** subdiv, y_subdivisions=2 ** subdiv, size=size,
                                    location=location)
    obj = bpy.context.object
    obj.name = name
    tex = bpy.data.textures.new(name, "CLOUDS")
    tex.noise_scale = noise
    tex.noise_depth = 4
    mod = obj.modifiers.new("relief", "DISPLACE")
    mod.texture = tex
    mod.strength = height
    mod.direction = "Z"
    if peak is not None:
        px, py, ph, pr = peak
        mesh = obj.data
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        wx, wy = co[:, 0] + location[0], co[:, 1] + location[1]
        r = np.hypot(wx - px, wy - py) / pr
        co[:, 2] += ph * np.clip(1 - r, 0, None) ** 1.6
        mesh.vertices.foreach_set("co", co.ravel())
        mesh.update()
    obj.data.materials.append(mat)
    bpy.ops.object.shade_smooth()
    return obj


def _water(z, size=4000.0):
    bpy.ops.mesh.primitive_plane_add(size=size, location=(0, size / 2 - 50, z))
    mat = bpy.data.materials.new("water")
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (0.02, 0.05, 0.07, 1)
    bsdf.inputs["Roughness"].default_value = 0.05
    bpy.context.object.data.materials.append(mat)


def _sky(scene, sun_elevation, clouds, haze, rng):
    world = bpy.data.worlds.new("sky")
    scene.world = world
    nt = world.node_tree
    bg = nt.nodes["Background"]
    sky = nt.nodes.new("ShaderNodeTexSky")
    sky.sky_type = "MULTIPLE_SCATTERING"
    sky.sun_elevation = math.radians(sun_elevation)
    sky.sun_rotation = rng.uniform(0, 2 * math.pi)
    sky.air_density = 1.0
    sky.aerosol_density = haze
    colour = sky.outputs[0]
    if clouds > 0:
        coord = nt.nodes.new("ShaderNodeTexCoord")
        noise = nt.nodes.new("ShaderNodeTexNoise")
        noise.noise_dimensions = "4D"
        noise.inputs["Scale"].default_value = 3.0
        noise.inputs["Detail"].default_value = 10.0
        noise.inputs["W"].default_value = rng.uniform(0, 100)
        nt.links.new(coord.outputs["Generated"], noise.inputs["Vector"])
        ramp = nt.nodes.new("ShaderNodeMapRange")
        ramp.inputs["From Min"].default_value = 0.62 - 0.2 * clouds
        ramp.inputs["From Max"].default_value = 0.75 - 0.2 * clouds
        nt.links.new(noise.outputs["Fac"], ramp.inputs["Value"])
        mix = nt.nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.inputs[7].default_value = (6.0, 6.0, 6.3, 1)  # the sky texture's radiance is of this order
        nt.links.new(ramp.outputs[0], mix.inputs[0])
        nt.links.new(colour, mix.inputs[6])
        colour = mix.outputs[2]
    nt.links.new(colour, bg.inputs["Color"])
    bg.inputs["Strength"].default_value = 0.12
    bpy.ops.object.light_add(type="SUN", rotation=(math.radians(90 - sun_elevation), 0, rng.uniform(0, 6.28)))
    bpy.context.object.data.energy = 1.5


def _camera(scene, pitch_deg, lens=28.0):
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam)
    cam.location = (0, 0, 1.6)
    cam.rotation_euler = (math.radians(90 + pitch_deg), 0, 0)
    cam.data.lens = lens
    cam.data.clip_end = 20000
    scene.camera = cam


def build(scene, name: str, rng: random.Random) -> None:
    """Scene ``name`` (see ``SCENES``)."""
    rock = _material("rock", (0.35, 0.38, 0.45), snow_above=None)
    if name == "mountain_lake":
        _sky(scene, 35, 0.6, 1.0, rng)
        _terrain("range", 1600, (0, 1100, -20), 120, rock, peak=(-250, 900, 700, 450))
        _terrain("hills", 600, (0, 420, -8), 25, _material("hill", (0.15, 0.25, 0.1)), noise=0.8)
        _water(0.0)
        _camera(scene, 6)
    elif name == "snow_range":
        _sky(scene, 50, 0.0, 0.5, rng)
        snow = _material("snowrock", (0.3, 0.3, 0.32), snow_above=250)
        _terrain("range", 2400, (0, 1500, -30), 300, snow, peak=(250, 900, 1000, 600))
        _terrain("meadow", 400, (0, 200, -2), 3, _material("grass", (0.2, 0.3, 0.08)), noise=0.6)
        _camera(scene, 8)
    elif name == "hazy_hills":
        _sky(scene, 12, 0.3, 4.0, rng)
        _terrain("hills", 1200, (0, 700, -15), 90, _material("hill", (0.18, 0.28, 0.14)), peak=(-60, 260, 260, 220))
        _terrain("plain", 6000, (0, 2800, -16), 20, _material("field", (0.3, 0.3, 0.18)), noise=3.0)
        _camera(scene, 4)
    elif name == "city":
        _sky(scene, 25, 0.4, 2.0, rng)
        _water(0.0)
        for i in range(14):
            h = rng.uniform(20, 90) if i != 7 else 400
            x = -160 + i * 24 + rng.uniform(-4, 4)
            bpy.ops.mesh.primitive_cube_add(size=1, location=(x, 260 + rng.uniform(-20, 20), h / 2))
            ob = bpy.context.object
            ob.scale = (rng.uniform(10, 20), rng.uniform(10, 20), h)
            glass = rng.random() < 0.4
            ob.data.materials.append(_material(f"b{i}", (0.3, 0.4, 0.5) if glass else (0.5, 0.47, 0.42),
                                               rough=0.2 if glass else 0.8, noise_scale=40))
        _camera(scene, 5)
    elif name == "forest":
        _sky(scene, 30, 0.5, 1.0, rng)
        _terrain("meadow", 800, (0, 380, -3), 6, _material("grass", (0.2, 0.32, 0.08)), noise=0.8)
        leaves = _material("leaves", (0.06, 0.16, 0.05), noise_scale=30)
        for i in range(40):
            x, y = rng.uniform(-45, -5), rng.uniform(6, 70)
            bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=3, radius=rng.uniform(4, 9),
                                                  location=(x, y, rng.uniform(6, 16) * (1 + 2.5 * (y < 25))))
            bpy.context.object.data.materials.append(leaves)
        _camera(scene, 10, lens=24)
    elif name == "sunset_sea":
        _sky(scene, 2, 0.4, 1.5, rng)
        _water(0.0, size=200000)
        _terrain("headland", 700, (380, 900, -10), 70, _material("dark", (0.12, 0.1, 0.1)),
                 peak=(300, 700, 300, 260))
        _camera(scene, 3)
    else:
        raise SystemExit(f"unknown scene {name!r}")


SCENES = ("mountain_lake", "snow_range", "hazy_hills", "city", "forest", "sunset_sea")


def render(name: str, out: Path, size: int, samples: int, seed: int) -> None:
    scene = _reset()
    build(scene, name, random.Random(seed))
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = size, size * 3 // 4, 100
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    r.image_settings.file_format = "JPEG"
    r.image_settings.quality = 90
    r.film_transparent = False
    r.filepath = str(out / f"{name}.jpg")
    bpy.ops.render.render(write_still=True)
    # the mask: alpha of a transparent film (0 where rays meet only sky)
    r.film_transparent = True
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    tmp = out / f".{name}_alpha.png"
    r.filepath = str(tmp)
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(tmp))
    px = np.array(img.pixels[:], np.float32).reshape(img.size[1], img.size[0], 4)[::-1]
    sky = (px[..., 3] < 0.5).astype(np.uint8) * 255
    mask = bpy.data.images.new(f"{name}_sky", img.size[0], img.size[1])
    mask.pixels.foreach_set(np.repeat(sky[::-1, :, None] / 255.0, 4, axis=2).astype(np.float32).ravel())
    mask.filepath_raw = str(out / f"{name}_sky.png")
    mask.file_format = "PNG"
    mask.save()
    tmp.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "sky")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--scenes", default=",".join(SCENES))
    ap.add_argument("--replace", action="store_true", help="overwrite these scenes' files already in --out")
    args = ap.parse_args()
    names = [name.strip() for name in args.scenes.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENES]
    if unknown or not names:
        ap.error(f"unknown scene(s) {', '.join(unknown) or '(none given)'}: pick from {', '.join(SCENES)}")
    existing = [p for name in names for p in (args.out / f"{name}.jpg", args.out / f"{name}_sky.png") if p.exists()]
    if existing and not args.replace:
        ap.error(f"{existing[0]} exists ({len(existing)} of these scenes' files are in {args.out}): pass --replace "
                 "to overwrite them, or pick another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:  # a scene's seed is its place in SCENES: one scene renders as it does in the full set
        render(name, args.out, args.size, args.samples, seed=SCENES.index(name))
        print(args.out / f"{name}.jpg", flush=True)


if __name__ == "__main__":
    main()
