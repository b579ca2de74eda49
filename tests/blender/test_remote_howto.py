"""The README's remote-backend how-to, followed literally: its shell lines start the server (token from the
environment, all interfaces), the add-on connects with Remote URL + token, makes a world there, expands it,
imports the Gaussians it downloads, bakes a loop there that plays here and has the server render it."""

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import bpy
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "backend" / "world" / "samples" / "landscape.png"


def howto_lines() -> list[str]:
    """The shell block under the README's remote-howto marker."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- remote-howto:[^>]*-->\s*```sh\n(.*?)```", text, re.DOTALL)
    assert block, "README.md lost its remote-howto block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def lwb_client_cache(lw) -> Path:
    """The connected remote backend's download folder (the add-on's cache, one folder per server)."""
    return lw.lw_blender.connection.jobs.ensure_backend(bpy.context).cache_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, small_image):
    """The how-to's lines run by bash in the checkout, with a free port, a temporary workspace and the photo's
    folder as the shared inputs folder."""
    port = _free_port()
    lines = howto_lines()
    assert any("lw serve --host 0.0.0.0" in line and "--allow-path /mnt/lw-inputs" in line for line in lines)
    script = "\n".join(line.replace("--port 8765", f"--port {port}").replace("~/lw-workspace", str(tmp_path / "ws"))
                       .replace("/mnt/lw-inputs", str(small_image.parent)) for line in lines)
    proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            start_new_session=True, env={k: v for k, v in os.environ.items() if k != "LW_TOKEN"})
    try:
        token = proc.stdout.readline().strip()
        info = json.loads(proc.stdout.readline())
        yield {"token": token, "port": port, **info}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


@pytest.fixture
def small_image(tmp_path) -> Path:
    (tmp_path / "inputs").mkdir()
    out = tmp_path / "inputs" / "landscape64.png"
    image = bpy.data.images.load(str(SAMPLE))
    image.scale(64, 64)
    image.filepath_raw = str(out)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return out


def test_readme_remote_howto_serves_a_world_to_the_add_on(lw, prefs, clean_scene, server, small_image):
    bpy.ops.lw.backend_stop()
    assert len(server["token"]) >= 24 and server["url"] == f"http://0.0.0.0:{server['port']}"
    try:
        prefs.backend_url = f"http://127.0.0.1:{server['port']}"  # the laptop's view of the server
        prefs.backend_token = server["token"]
        assert bpy.ops.lw.backend_start() == {"FINISHED"}
        rt = bpy.context.window_manager.lw_runtime
        assert rt.connection == "CONNECTED" and rt.remote and rt.backend_pid == 0

        assert bpy.ops.lw.world_new(filepath=str(small_image), resolution=64) == {"FINISHED"}
        world = clean_scene.lw.world
        assert Path(world.directory).is_relative_to(Path(server["workspace"]))  # made on the server
        obj = bpy.data.objects["LW World"]
        assert len(obj.data.attributes["position"].data) == world.steps[0].gaussians >= 64 * 64 // 2
        camera = clean_scene.camera
        camera.rotation_euler.z += 0.5  # look elsewhere
        assert bpy.ops.lw.world_expand() == {"FINISHED"}
        assert len(world.steps) == 2 and world.steps[1].new_gaussians > 0
        assert len(bpy.data.objects["LW World"].data.attributes["position"].data) == world.steps[1].gaussians
        cache = lw.lw_blender.preferences.cache_dir()  # both steps' decoded arrays came over HTTP into the cache
        assert len(list(cache.rglob("decoded/position.npy"))) >= 2
        # motion and a baked loop made on the server play here from the downloaded .lw4d
        w = clean_scene.lw.world
        w.field_levels, w.field_table_log2, w.fit_steps, w.update_steps = 4, 12, 20, 10
        assert bpy.ops.lw.motion_region(preset="CLOUDS", direction=(1.0, 0.0), speed=2.0) == {"FINISHED"}
        assert bpy.ops.lw.motion_update() == {"FINISHED"}
        clean_scene.frame_start = 1
        clean_scene.frame_set(1)
        assert bpy.ops.lw.world_bake(frames=6, loop=True) == {"FINISHED"}
        obj = bpy.data.objects["LW World"]
        seq = Path(obj.lw_seq.path)
        assert seq.is_relative_to(cache) and (seq / "position.npy").is_file()  # the server's path is not used
        first = np.array([v.vector[:] for v in obj.data.attributes["position"].data])
        clean_scene.frame_set(4)
        later = np.array([v.vector[:] for v in obj.data.attributes["position"].data])
        assert (np.linalg.norm(later - first, axis=1) > 1e-4).sum() > 0  # the sky plays
        # the server renders the loop it baked: the local copy's path goes back as the server's artifact name
        bpy.context.view_layer.objects.active = obj
        assert bpy.ops.lw.render_splats(animation=False) == {"FINISHED"}
        image = bpy.data.images["LW Render"]
        assert tuple(image.size) == (clean_scene.render.resolution_x, clean_scene.render.resolution_y)
        assert np.array(image.pixels[:], np.float32).reshape(-1, 4)[:, 3].max() > 0.5
        render, server_cache = lw.lw_blender.splats.render, lwb_client_cache(lw)
        assert render.render_source(obj, None, server_cache) == seq.relative_to(server_cache).as_posix()
        elsewhere = bpy.data.objects.new("Elsewhere", obj.data)
        elsewhere.lw_seq.path = str(cache.parent / "elsewhere.lw4d")  # a sequence the server has no copy of
        with pytest.raises(lw.lw_blender.splats.data.GaussianDataError, match="remote backend cannot read"):
            render.render_source(elsewhere, None, server_cache)
        # a sequence imported by name on the server (as Import MoE does): its files come over and play here
        lwb = lw.lw_blender
        baked = next(Path(server["workspace"]).rglob("*.lw4d"))
        result = lwb.connection.jobs.run_job_blocking(bpy.context, "import_gaussians", {"path": str(baked)})
        other = lwb.splats.carrier.load_decoded(bpy.context, lwb.splats.carrier.decoded_folder(result), "Imported")
        assert Path(other.lw_seq.path).is_relative_to(cache) and other.lw_seq.frame_count == 6
    finally:
        prefs.backend_url, prefs.backend_token = "", ""
        bpy.ops.lw.backend_stop()
