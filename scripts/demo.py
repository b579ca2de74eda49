"""The LivingWorld demo (`make demo`): one photo -> explorable 3D Gaussian world -> expansions -> motion -> loop,
all driven headless from Blender (the bpy wheel) through the installed extension, as an artist's script would.

    .venv-blender/bin/python scripts/demo.py --backend-python .venv/bin/python --out out

Steps (each printed with its time):
  1. build the extension zip with Blender's packaging tool and install it into a sandboxed Blender user config
     (BLENDER_USER_RESOURCES in a temp folder), set the preferences, start the backend
  2. bpy.ops.lw.world_new on the bundled sample (backend/world/samples/landscape.png) at --resolution px
  3. bpy.ops.lw.world_expand twice, the camera turned to the left, then to the right
  4. bpy.ops.lw.motion_region (clouds on the sky, water on the water, the ground held still) +
     bpy.ops.lw.motion_update for every view
  5. bpy.ops.lw.world_bake: a --frames loop, played on the "LW World" object
  6. the loop rendered with the camera panning left-right-left over it: on Blender 5.3+ by Blender itself (Cycles
     on the native splats, --percentage of the world's camera, i.e. 512x512 by default) into PNG frames and an
     H.264 MP4 (Blender's FFmpeg); before 5.3 by the backend rasterizer (bpy.ops.lw.render_splats, quads being
     an approximation); then one frame rendered by Blender (Cycles, --samples) as the final picture
  7. out/living_world.blend, out/living_world.mp4, out/*.png previews, and a summary with timings

Everything the backend writes (the world, the baked .lw4d, renders) stays under out/workspace, which the .blend
refers to.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "backend" / "world" / "samples" / "landscape.png"
ADDON_MODULE = "bl_ext.user_default.livingworld"


class Timer:
    """Prints each step as it starts and ends; keeps the timings for the summary (wall time, and the CPU time of
    this Blender process: on a shared machine the wall time mostly measures the other processes)."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, str]] = []
        self.t0 = time.perf_counter()

    def step(self, title: str, fn, describe=lambda _: ""):
        print(f"==> {title} ...", flush=True)
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        note = describe(out)
        print(f"    done in {dt:.1f} s (Blender CPU {dc:.1f} s){': ' + note if note else ''}", flush=True)
        self.rows.append((title, dt, dc, note))
        return out

    def summary(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        lines = [f"{'step'.ljust(width)}  seconds  Blender CPU s  result", f"{'-' * width}  -------  -------------  ------"]
        lines += [f"{title.ljust(width)}  {dt:7.1f}  {dc:13.1f}  {note}" for title, dt, dc, note in self.rows]
        lines.append(f"{'total'.ljust(width)}  {time.perf_counter() - self.t0:7.1f}  {time.process_time():13.1f}")
        lines.append(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend-python", type=Path, default=REPO / ".venv" / "bin" / "python",
                    help="Python of the backend environment")
    ap.add_argument("--out", type=Path, default=REPO / "out", help="output folder (created)")
    ap.add_argument("--image", type=Path, default=SAMPLE, help="the photo to start from")
    ap.add_argument("--resolution", type=int, default=256, help="long side of the world's working image (px)")
    ap.add_argument("--frames", type=int, default=48, help="frames of the baked loop")
    ap.add_argument("--turn", type=float, default=30.0, help="degrees the camera turns for each expansion")
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples of the final Blender frame")
    ap.add_argument("--loop-samples", type=int, default=2,
                    help="Cycles samples of each loop frame (Blender 5.3+; denoised by OpenImageDenoise, fast mode)")
    ap.add_argument("--percentage", type=int, default=200,
                    help="size of Blender's renders in percent of the world's camera (256 px: 512x512)")
    ap.add_argument("--movie-percentage", type=int, default=50,
                    help="before Blender 5.3: size of the backend MP4 in percent of the world's (the CPU rasterizer "
                         "is pixel-bound)")
    ap.add_argument("--fit-steps", type=int, default=30,
                    help="motion-field fit steps for the first view (later views: half, warm-started)")
    return ap.parse_args(argv)


def sandbox() -> Path:
    """Point Blender's user config and shader caches at a temp folder (before bpy is imported)."""
    root = Path(tempfile.mkdtemp(prefix="lw-demo-"))
    os.environ["BLENDER_USER_RESOURCES"] = str(root / "user")
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    return root


def install_extension(zip_path: Path, backend_python: Path, workspace: Path):
    import bpy

    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                      enable_on_install=True)
    if result != {"FINISHED"} or ADDON_MODULE not in bpy.context.preferences.addons:
        raise SystemExit(f"error: installing {zip_path} failed ({result})")
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.backend_python = str(backend_python)
    prefs.workspace = str(workspace)
    return prefs


def turn_camera(camera, degrees: float) -> None:
    """Turn the camera about the world Z axis through its own position (look to the side)."""
    from mathutils import Matrix

    loc = camera.matrix_world.translation.copy()
    camera.matrix_world = (Matrix.Translation(loc) @ Matrix.Rotation(math.radians(degrees), 4, "Z")
                           @ Matrix.Translation(-loc) @ camera.matrix_world)


def save_preview(name: str, out: Path) -> Path:
    """Copy the current step's preview (image "LW World Preview") to ``out``."""
    import bpy

    src = Path(bpy.path.abspath(bpy.data.images["LW World Preview"].filepath))
    shutil.copyfile(src, out / name)
    return out / name


def pan_camera(scene, camera, degrees: float) -> None:
    """Keyframe a pan over the loop: -degrees at the first frame, +degrees half-way, back at the end, so the
    rendered MP4 loops too."""
    base = camera.matrix_world.copy()
    first, last = scene.frame_start, scene.frame_end + 1  # last == first again in the loop
    for frame, angle in ((first, -degrees), ((first + last) // 2, degrees), (last, -degrees)):
        camera.matrix_world = base
        turn_camera(camera, angle)
        camera.keyframe_insert("location", frame=frame)
        camera.keyframe_insert("rotation_euler", frame=frame)
    camera.matrix_world = base


def use_cycles(scene, samples: int, percentage: int, denoise: str = "HIGH") -> None:
    """Cycles on the CPU at ``samples`` per pixel, ``percentage`` of the camera's size, opaque film, denoised by
    OpenImageDenoise at quality ``denoise`` ("FAST": colour only, no prefilter; at 512x512 it costs ~1 s of CPU
    where the default "HIGH" with albedo and normal passes costs ~8 s, more than the render of a frame)."""
    import bpy

    bpy.ops.preferences.addon_enable(module="cycles")
    scene.render.engine, scene.cycles.device, scene.cycles.samples = "CYCLES", "CPU", samples
    scene.cycles.use_denoising, scene.cycles.denoiser, scene.cycles.denoising_quality = True, "OPENIMAGEDENOISE", denoise
    # set both ways: a scene used for a FAST render (the loop's frames) and then a HIGH one (the still) must not
    # keep the colour-only passes
    passes, prefilter = ("RGB", "NONE") if denoise == "FAST" else ("RGB_ALBEDO_NORMAL", "ACCURATE")
    scene.cycles.denoising_input_passes, scene.cycles.denoising_prefilter = passes, prefilter
    scene.render.resolution_percentage = percentage
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"


def render_loop_cycles(scene, folder: Path, percentage: int, samples: int) -> list[Path]:
    """Render the scene's frame range with Cycles into ``folder/frame_####.png`` (the playback handler moves the
    splats every frame); returns the frames in order."""
    import bpy

    folder.mkdir(parents=True, exist_ok=True)
    use_cycles(scene, samples, percentage, denoise="FAST")
    scene.render.filepath = str(folder / "frame_")
    bpy.ops.render.render(animation=True)
    return [Path(scene.render.frame_path(frame=f)) for f in range(scene.frame_start, scene.frame_end + 1)]


def encode_mp4(frames: list[Path], scene, mp4: Path) -> Path:
    """H.264 MP4 of ``frames`` at the scene's frame rate, with Blender's own FFmpeg (a throwaway scene whose
    sequence editor plays the PNGs; Standard view transform so the colours pass through unchanged)."""
    import bpy

    encode = bpy.data.scenes.new("LW encode")
    try:
        render = encode.render
        width, height = (scene.render.resolution_x * scene.render.resolution_percentage // 100,
                         scene.render.resolution_y * scene.render.resolution_percentage // 100)
        render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
        render.fps, render.fps_base = scene.render.fps, scene.render.fps_base
        editor = encode.sequence_editor_create()
        strip = editor.strips.new_image(name="loop", filepath=str(frames[0]), channel=1, frame_start=1)
        for frame in frames[1:]:
            strip.elements.append(frame.name)
        encode.frame_start, encode.frame_end = 1, len(frames)
        encode.view_settings.view_transform = "Standard"
        render.image_settings.media_type, render.image_settings.file_format = "VIDEO", "FFMPEG"
        render.ffmpeg.format, render.ffmpeg.codec, render.ffmpeg.constant_rate_factor = "MPEG4", "H264", "HIGH"
        render.filepath = str(mp4)
        bpy.ops.render.render(animation=True, scene=encode.name)
    finally:
        bpy.data.scenes.remove(encode)
    return mp4


def render_loop_backend(scene, carrier, percentage: int, timer: Timer) -> tuple[list[Path], Path]:
    """Before Blender 5.3: the loop rendered by the backend rasterizer (``lw.render_splats``) at ``percentage``;
    returns its PNG frames and MP4."""
    import bpy

    def render():
        bpy.context.view_layer.objects.active = carrier
        full, scene.render.resolution_percentage = scene.render.resolution_percentage, percentage
        try:
            assert bpy.ops.lw.render_splats(animation=True) == {"FINISHED"}
        finally:
            scene.render.resolution_percentage = full
        strip = max(scene.sequence_editor.strips, key=lambda st: st.channel)
        return Path(bpy.path.abspath(strip.filepath))

    size = f"{scene.render.resolution_x * percentage // 100}x{scene.render.resolution_y * percentage // 100}"
    mp4 = timer.step(f"render the loop with the backend rasterizer ({scene.frame_end - scene.frame_start + 1} "
                     f"frames, {size})", render, lambda p: p.name)
    return sorted(mp4.parent.rglob("*.png")), mp4


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    workspace = out / "workspace"
    workspace.mkdir(exist_ok=True)
    backend_python = args.backend_python.absolute()
    if not backend_python.exists():
        print(f"error: backend Python {backend_python} not found (run `make envs`)", file=sys.stderr)
        return 1
    os.environ.setdefault("OMP_NUM_THREADS", str(min(os.cpu_count() or 1, 4)))
    root = sandbox()
    timer = Timer()
    print(f"LivingWorld demo: {args.image.name} -> {out} (world at {args.resolution} px, {args.frames}-frame loop)")

    sys.path.insert(0, str(REPO / "scripts"))
    import build_extension

    zip_path = timer.step("build the extension zip (Blender's blender_ext.py)",
                          lambda: build_extension.build(REPO, root / "dist"), lambda p: p.name)
    import bpy

    try:
        timer.step("install + enable it in a sandboxed Blender user config",
                   lambda: install_extension(zip_path, backend_python, workspace), lambda _: ADDON_MODULE)
        timer.step("start the backend", lambda: bpy.ops.lw.backend_start(),
                   lambda _: bpy.context.window_manager.lw_runtime.url)
        return run(args, out, timer)
    finally:
        if ADDON_MODULE in bpy.context.preferences.addons:
            bpy.ops.lw.backend_stop()
            bpy.ops.preferences.addon_disable(module=ADDON_MODULE)
        shutil.rmtree(root, ignore_errors=True)


def run(args, out: Path, timer: Timer) -> int:
    import bpy

    scene = bpy.context.scene
    for obj in list(scene.objects):  # the factory scene's cube, light and camera
        bpy.data.objects.remove(obj)
    # Cycles is on in every installed Blender (the bpy module starts without it): the add-on sets its options
    bpy.ops.preferences.addon_enable(module="cycles")
    s = scene.lw.world
    # A motion field sized for a CPU (the backend's defaults are for a GPU).
    s.field_levels, s.field_table_log2, s.fit_steps, s.update_steps = 4, 14, args.fit_steps, max(args.fit_steps // 2, 1)

    timer.step(f"new world from {args.image.name}",
               lambda: bpy.ops.lw.world_new(filepath=str(args.image), resolution=args.resolution),
               lambda _: f"{s.steps[-1].gaussians:,} Gaussians, camera {scene.camera.name!r}")
    previews = [save_preview("demo_step0_new.png", out)]
    camera = scene.camera
    photo_view = camera.matrix_world.copy()
    for k, angle in enumerate((args.turn, -2 * args.turn), start=1):
        turn_camera(camera, angle)
        timer.step(f"expand {k}: camera turned {angle:+.0f} deg",
                   lambda: bpy.ops.lw.world_expand(),
                   lambda _: f"+{s.steps[-1].new_gaussians:,} -> {s.steps[-1].gaussians:,} Gaussians")
        previews.append(save_preview(f"demo_step{k}_expand.png", out))

    views = [step.index for step in s.steps]
    for view in views:
        def update(view=view):
            bpy.ops.lw.motion_region(preset="CLOUDS", direction=(1.0, 0.1), speed=1.0)
            # the lake flows sideways, along its band: motion towards the viewer leaves it at 1 px/frame
            bpy.ops.lw.motion_region(preset="WATER", direction=(-1.0, 0.0), speed=0.5)
            # the ground holds still: zero-motion samples there keep the field from carrying the water's motion
            # onto the shore (the field is only fitted where cues are given)
            bpy.ops.lw.motion_region(preset="CLOUDS", region="GROUND", speed=0.0)
            return bpy.ops.lw.motion_update(view=view)

        timer.step(f"motion: clouds, water, still ground on view {view}", update, lambda _: s.motion_status)
    print(f"    motion field: {s.field_levels} levels x 2^{s.field_table_log2} rows, {s.fit_steps} + "
          f"{s.update_steps} fit steps per view")

    scene.frame_start = 1
    scene.frame_set(1)
    timer.step(f"bake a {args.frames}-frame loop", lambda: bpy.ops.lw.world_bake(frames=args.frames, loop=True),
               lambda _: f"{Path(s.sequence).name}, frames {scene.frame_start}-{scene.frame_end}")
    carrier = bpy.data.objects["LW World"]
    camera.matrix_world = photo_view  # back at the photo's view, then pan over the expanded world
    pan_camera(scene, camera, 0.75 * args.turn)

    if carrier.type == "POINTCLOUD":  # Blender 5.3+: Blender itself renders the native splats
        size = f"{scene.render.resolution_x * args.percentage // 100}x{scene.render.resolution_y * args.percentage // 100}"
        count = scene.frame_end - scene.frame_start + 1
        frames = timer.step(f"render the loop with Blender (Cycles on the native splats: {count} frames, {size}, "
                            f"{args.loop_samples} samples)",
                            lambda: render_loop_cycles(scene, out / "frames", args.percentage, args.loop_samples),
                            lambda f: f"{len(f)} PNG frames")
        timer.step("encode the MP4 (Blender's FFmpeg, H.264)", lambda: encode_mp4(frames, scene, out / "living_world.mp4"),
                   lambda p: p.name)
    else:
        frames, mp4 = render_loop_backend(scene, carrier, args.movie_percentage, timer)
        shutil.copyfile(mp4, out / "living_world.mp4")
        # the sequence editor would make Blender's own render show the movie instead of the 3D scene
        scene.sequence_editor_clear()
    for k, src in enumerate((frames[0], frames[len(frames) // 4], frames[len(frames) // 2])):
        previews.append(shutil.copyfile(src, out / f"demo_loop_{k}.png"))

    def render_blender():
        use_cycles(scene, args.samples, args.percentage)
        scene.frame_set(scene.frame_start + (scene.frame_end - scene.frame_start) // 4)
        scene.render.filepath = str(out / "demo_blender_cycles.png")
        bpy.ops.render.render(write_still=True)
        return out / "demo_blender_cycles.png"

    previews.append(timer.step(f"render one frame with Blender (Cycles, {args.samples} samples, {args.percentage} %)",
                               render_blender, lambda p: p.name))
    scene.frame_set(scene.frame_start)
    blend = out / "living_world.blend"
    timer.step("save the .blend", lambda: bpy.ops.wm.save_as_mainfile(filepath=str(blend)), lambda _: blend.name)

    print("\n" + timer.summary())
    print(f"\nworld:    {s.directory} ({len(s.steps)} steps: {', '.join(step.kind for step in s.steps)})")
    print(f"sequence: {s.sequence}")
    print(f"outputs:  {blend}\n          {out / 'living_world.mp4'}")
    for p in previews:
        print(f"          {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
