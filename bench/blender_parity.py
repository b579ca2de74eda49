"""Parity: one SH-3 Gaussian scene seen by one camera, rendered three ways; PSNR against the backend's exact render.

    .venv/bin/python bench/blender_parity.py [--count 40000] [--size 192] [--samples 128]
                                            [--image docs/images/blender_parity.png]

    native  Blender 5.3's own splat renderer in Cycles on the native splat object (``.venv-blender``)
    exact   the backend's rasterizer through ``lw.render_splats`` from the same Blender camera (the reference)
    quads   the quad display of Blender 4.2-5.2 in Cycles (``.venv-blender52``)

The picture: native | exact | quads, and below each Cycles render its |difference| to the exact one x 4.
All three start from the same INRIA PLY, imported with ``lw.import_gaussians``; scenes hold only the splats and
the camera (Standard view transform, no world: black behind the splats). PSNR is over RGB composited on black.
To tell Cycles' own share of the difference, each Cycles render is repeated with another seed (its noise: PSNR
between the two) and with a 0.01 px box pixel filter instead of the default 1.5 px Blackman-Harris.

The scene (no real capture can be downloaded here): Suzanne, a sphere, a box and a ground disc, each with a
procedural texture, sampled into ``--count`` surface-aligned flat Gaussians the way a trained 3DGS scene lays
them out: 3 sigma discs about twice the sample spacing across, 0.08 of it thick, random in-plane orientation and
anisotropy, opacity mostly near 1 with a tail of faint ones, DC colour from the texture, and degree 1-3 SH
fitted (least squares over 256 directions) to a glossy highlight of a fixed sun, reflected about each splat's
normal, strength 0.1-0.5 per splat. It is a synthetic SH-3 PLY with the structure of a real one, not a
photogrammetric capture.

Each step runs in its own environment (``--step`` is internal): ``scene`` (bpy 5.3: mesh sampling), ``ply``
(backend: ``backend.io.ply.write_ply``), ``native`` (bpy 5.3 + a local backend), ``quads`` (bpy 5.2), then the
comparison here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PY53 = REPO / ".venv-blender" / "bin" / "python"
PY52 = REPO / ".venv-blender52" / "bin" / "python"
BACKEND = REPO / ".venv" / "bin" / "python"
SH_C0 = 0.28209479177387814
SUN = np.array([0.45, -0.35, 0.82])  # towards the sun
CAMERA = {"location": (3.3, -3.9, 1.9), "target": (0.0, 0.0, -0.05), "lens": 50.0}


# --- scene (bpy) --------------------------------------------------------------------------------------------

def _sh_basis(d: np.ndarray) -> np.ndarray:
    """Real SH basis of the 3DGS reference up to degree 3, d (D, 3) unit -> (D, 16)."""
    x, y, z = d.T
    xx, yy, zz = x * x, y * y, z * z
    return np.stack([np.full_like(x, SH_C0), -0.4886025119029199 * y, 0.4886025119029199 * z,
                     -0.4886025119029199 * x, 1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
                     0.31539156525252005 * (2 * zz - xx - yy), -1.0925484305920792 * x * z,
                     0.5462742152960396 * (xx - yy), -0.5900435899266435 * y * (3 * xx - yy),
                     2.890611442640554 * x * y * z, -0.4570457994644658 * y * (4 * zz - xx - yy),
                     0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy), -0.4570457994644658 * x * (4 * zz - xx - yy),
                     1.445305721320277 * z * (xx - yy), -0.5900435899266435 * x * (xx - 3 * yy)], axis=1)


def _texture(p: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Procedural albedo (N, 3) of each part: 0 Suzanne (stripes), 1 sphere (checker), 2 box (gradient), 3 ground
    (tiles)."""
    x, y, z = p.T
    out = np.empty((len(p), 3))
    stripes = 0.5 + 0.5 * np.sin(9.0 * x + 4.0 * z)
    out[part == 0] = np.stack([0.85 * stripes + 0.1, 0.45 + 0.3 * np.sin(5 * y), 0.2 + 0.2 * stripes], 1)[part == 0]
    theta, phi = np.arctan2(y - 0.3, x - 1.1), np.arccos(np.clip((z + 0.3) / 0.45, -1, 1))
    checker = (np.floor(theta * 8 / np.pi) + np.floor(phi * 8 / np.pi)) % 2
    out[part == 1] = np.stack([0.9 - 0.7 * checker, 0.15 + 0.05 * checker, 0.2 + 0.6 * checker], 1)[part == 1]
    out[part == 2] = np.stack([0.2 + 0.6 * (z + 0.7), 0.55 + 0.25 * x, 0.75 - 0.3 * (z + 0.7)], 1)[part == 2]
    tiles = (np.floor(x * 2.5) + np.floor(y * 2.5)) % 2
    out[part == 3] = np.stack([0.35 + 0.35 * tiles, 0.32 + 0.3 * tiles, 0.28 + 0.25 * tiles], 1)[part == 3]
    return np.clip(out, 0.02, 0.98)


def make_scene(count: int, out: Path) -> None:
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.ops.mesh.primitive_monkey_add(location=(0.0, 0.0, 0.1), rotation=(0.0, 0.0, 0.5))
    bpy.context.active_object.modifiers.new("s", "SUBSURF").levels = 2
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.45, location=(1.1, 0.3, -0.3))
    bpy.ops.mesh.primitive_cube_add(size=0.7, location=(-1.1, 0.2, -0.4), rotation=(0.0, 0.0, 0.6))
    bpy.ops.mesh.primitive_circle_add(radius=2.6, fill_type="NGON", location=(0.0, 0.0, -0.75), vertices=64)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    tris, parts = [], []
    for part, obj in enumerate(bpy.context.scene.objects):
        mesh = obj.evaluated_get(depsgraph).to_mesh()
        mesh.calc_loop_triangles()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3) @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
        index = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("vertices", index)
        tris.append(co[index.reshape(-1, 3)])
        parts.append(np.full(len(mesh.loop_triangles), part))
    tris, parts = np.concatenate(tris), np.concatenate(parts)
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(tris), size=count, p=area / area.sum())
    u, v = rng.random((2, count))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    position = a[pick] + u[:, None] * (b - a)[pick] + v[:, None] * (c - a)[pick]
    normal = cross[pick] / np.maximum(2 * area[pick], 1e-12)[:, None]
    part = parts[pick]
    spacing = np.sqrt(area.sum() / count)
    # frame: tangent t1 at a random angle, t2 = n x t1, n -> rotation matrix columns (t1, t2, n) -> quaternion
    helper = np.where(np.abs(normal[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    t1 = np.cross(helper, normal)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(normal, t1)
    angle = rng.uniform(0, np.pi, count)[:, None]
    t1, t2 = np.cos(angle) * t1 + np.sin(angle) * t2, -np.sin(angle) * t1 + np.cos(angle) * t2
    matrices = np.stack([t1, t2, normal], axis=2)
    quats = np.array([_quaternion(m) for m in matrices])
    sigma = spacing * 0.67 * rng.uniform(0.6, 1.4, (count, 2))
    scale = np.concatenate([sigma, np.full((count, 1), 0.08 * spacing)], axis=1)
    opacity = np.clip(1.0 - 0.6 * rng.random(count) ** 3, 0.05, 0.995)
    albedo = _texture(position, part)
    # the view-dependent part: a glossy highlight of the sun reflected about the normal, least squares in SH
    dirs = rng.normal(size=(256, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    basis = _sh_basis(dirs)
    mirror = 2 * (normal @ SUN)[:, None] * normal - SUN  # the sun's mirror direction per splat
    strength = np.where(part == 3, 0.1, rng.uniform(0.2, 0.5, count))
    lobe = strength[:, None] * np.clip(mirror @ -dirs.T, 0, None) ** 6  # d: camera -> splat, so -d to the eye
    coefficients = np.linalg.lstsq(basis, lobe.T, rcond=None)[0].T  # (N, 16)
    sh = np.zeros((count, 16, 3))
    sh[:, 0] = (albedo - 0.5) / SH_C0 + coefficients[:, :1]
    sh[:, 1:] = coefficients[:, 1:, None]
    np.savez(out, means=position.astype(np.float32), quats=quats.astype(np.float32),
             log_scales=np.log(scale).astype(np.float32),
             opacity_logits=np.log(opacity / (1 - opacity)).astype(np.float32), sh=sh.astype(np.float32))


def _quaternion(m: np.ndarray) -> tuple[float, float, float, float]:
    from mathutils import Matrix

    q = Matrix(m.tolist()).to_quaternion()
    return q.w, q.x, q.y, q.z


# --- renders (bpy) ------------------------------------------------------------------------------------------

def _install(sandbox: Path):
    os.environ["BLENDER_USER_RESOURCES"] = str(sandbox / "user")
    os.environ["XDG_CACHE_HOME"] = str(sandbox / "cache")
    import importlib

    import bpy

    sys.path.insert(0, str(REPO / "scripts"))
    import build_extension

    zip_path = build_extension.build(REPO, sandbox / "dist")
    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    return importlib.import_module("bl_ext.user_default.livingworld")


def _camera(size: int):
    import bpy
    from mathutils import Vector

    scene = bpy.context.scene
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam)
    cam.location = CAMERA["location"]
    cam.rotation_euler = (Vector(CAMERA["target"]) - Vector(CAMERA["location"])).to_track_quat("-Z", "Y").to_euler()
    cam.data.lens = CAMERA["lens"]
    scene.camera = cam
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    bpy.context.view_layer.update()


def render_blender(ply: Path, work: Path, size: int, samples: int, exact: bool) -> dict:
    """Import, Cycles render (and, with ``exact``, the backend's render) into ``work``; returns timings."""
    lw = _install(Path(tempfile.mkdtemp(prefix="lw-parity-")))
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    scene = bpy.context.scene
    t0 = time.perf_counter()
    assert bpy.ops.lw.import_gaussians(filepath=str(ply)) == {"FINISHED"}
    timings = {"import_s": time.perf_counter() - t0}
    obj = bpy.context.active_object
    _camera(size)
    spec = lw.lw_blender.splats.render.camera_spec(scene, scene.camera)
    (work / "camera.json").write_text(json.dumps(spec))
    assert scene.view_settings.view_transform == "Standard"  # set by the import: only splats and a camera
    scene.render.engine, scene.cycles.device, scene.cycles.samples = "CYCLES", "CPU", samples
    scene.render.image_settings.file_format = "PNG"
    display = "native" if obj.type == "POINTCLOUD" else "quads"
    scene.render.filepath = str(work / f"{display}.png")
    t0 = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    timings[f"{display}_render_s"] = time.perf_counter() - t0
    # what part of the difference is Cycles' own: its noise (another seed) and its pixel filter (a 0.01 px box)
    scene.cycles.seed = 1
    scene.render.filepath = str(work / f"{display}_seed1.png")
    bpy.ops.render.render(write_still=True)
    scene.cycles.seed, scene.cycles.filter_width = 0, 0.01
    scene.render.filepath = str(work / f"{display}_nofilter.png")
    bpy.ops.render.render(write_still=True)
    if exact:
        prefs = bpy.context.preferences.addons["bl_ext.user_default.livingworld"].preferences
        prefs.backend_python, prefs.workspace = str(BACKEND), str(work / "workspace")
        t0 = time.perf_counter()
        assert bpy.ops.lw.render_splats(animation=False) == {"FINISHED"}
        timings["exact_render_s"] = time.perf_counter() - t0
        image = bpy.data.images[lw.lw_blender.splats.render.RENDER_IMAGE]
        image.filepath_raw, image.file_format = str(work / "exact.png"), "PNG"
        image.save()
        bpy.ops.lw.backend_stop()
    timings[f"{display}_blender"] = bpy.app.version_string
    return timings


# --- what the exact renderer does differently (backend) -----------------------------------------------------

def explain(work: Path) -> dict:
    """The exact render again with one 3DGS convention changed at a time, and the PSNR of each Cycles render
    against it: blending in linear light (what Cycles does with sRGB-encoded splat colours) instead of on the
    stored values, and the 0.3 px^2 screen-space dilation compensated in opacity (Mip-Splatting's
    'antialiased' mode) instead of plain 3DGS, where it makes thin splats seen edge-on wider and as opaque."""
    import torch

    from backend.io.ply import read_ply
    from backend.render.cameras import BlenderCameraSpec, blender_to_opencv
    from backend.render.rasterize import RasterConfig, rasterize
    from backend.render.sh import sh_to_color

    g = read_ply(work / "scene.ply").to_torch()
    camera = blender_to_opencv(BlenderCameraSpec.from_dict(json.loads((work / "camera.json").read_text())))
    with torch.no_grad():
        variants = {"antialiased": rasterize(g, camera, RasterConfig(depth=False, antialiased=True)).color.numpy()}
        rgb = sh_to_color(g.sh_degree, g.means - torch.tensor(camera.center, dtype=torch.float32), g.sh).clamp(0, 1)
        linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        light = rasterize(g, camera, RasterConfig(depth=False), extra=linear).extra.numpy().clip(0, None)
        variants["linear_light"] = np.where(light <= 0.0031308, light * 12.92, 1.055 * light ** (1 / 2.4) - 0.055)
    return {f"psnr_{name}_vs_exact_{variant}_db": round(psnr(_rgb(work / f"{name}.png"), np.clip(image, 0, 1)), 2)
            for variant, image in variants.items() for name in ("native", "quads")}


# --- comparison ---------------------------------------------------------------------------------------------

def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    rgba = np.asarray(Image.open(path).convert("RGBA"), np.float64) / 255.0
    return rgba[..., :3] * rgba[..., 3:]  # composited on black (the Cycles renders are opaque already)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-12)))


def compare(work: Path, image: Path) -> dict:
    from PIL import Image

    exact = _rgb(work / "exact.png")
    result = {}
    panels = []
    for name in ("native", "exact", "quads"):
        rgb = _rgb(work / f"{name}.png")
        if name != "exact":
            result[f"psnr_{name}_db"] = round(psnr(rgb, exact), 2)
            result[f"psnr_{name}_vs_its_other_seed_db"] = round(psnr(rgb, _rgb(work / f"{name}_seed1.png")), 2)
            result[f"psnr_{name}_without_pixel_filter_db"] = round(psnr(_rgb(work / f"{name}_nofilter.png"), exact), 2)
        panels.append(rgb)
    gap = np.ones((exact.shape[0], 4, 3))
    top = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    bottom = np.concatenate([np.clip(4 * np.abs(panels[0] - exact), 0, 1), gap, np.zeros_like(exact), gap,
                             np.clip(4 * np.abs(panels[2] - exact), 0, 1)], axis=1)  # |difference| x 4
    strip = np.concatenate([top, np.ones((4, top.shape[1], 3)), bottom], axis=0)
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(strip, 0, 1) * 255).round().astype(np.uint8)).save(image, optimize=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40_000)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--image", type=Path, default=REPO / "docs" / "images" / "blender_parity.png")
    parser.add_argument("--work", type=Path, default=None, help="keep the files here (default: a temp folder)")
    parser.add_argument("--python53", type=Path, default=PY53, help="Python with bpy 5.3 (native splats)")
    parser.add_argument("--python52", type=Path, default=PY52, help="Python with bpy 5.2 (quads)")
    parser.add_argument("--step", choices=("scene", "ply", "native", "quads", "explain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "scene":
        make_scene(args.count, args.work / "scene.npz")
        return
    if args.step == "ply":
        from backend.gaussians import Gaussians
        from backend.io.ply import write_ply

        write_ply(args.work / "scene.ply", Gaussians(**dict(np.load(args.work / "scene.npz"))))
        return
    if args.step == "explain":
        (args.work / "explain.json").write_text(json.dumps(explain(args.work)))
        return
    if args.step in ("native", "quads"):
        timings = render_blender(args.work / "scene.ply", args.work, args.size, args.samples, args.step == "native")
        (args.work / f"{args.step}.json").write_text(json.dumps(timings))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="lw-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--work", str(work), "--count", str(args.count), "--size", str(args.size), "--samples", str(args.samples)]
    for python, step in ((args.python53, "scene"), (BACKEND, "ply"), (args.python53, "native"), (args.python52, "quads"),
                         (BACKEND, "explain")):
        subprocess.run([str(python), __file__, "--step", step, *common], cwd=REPO, check=True)
    result = {"count": args.count, "size": args.size, "samples": args.samples, "load_average": os.getloadavg()[0],
              **json.loads((work / "native.json").read_text()), **json.loads((work / "quads.json").read_text()),
              **json.loads((work / "explain.json").read_text())}
    result.update(compare(work, args.image))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
