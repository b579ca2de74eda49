"""The render_splats job (CPU) and the on-device 4D frame gather."""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from backend.errors import InvalidInput, JobCancelled
from backend.gaussians import Gaussians, rgb_to_sh_dc
from backend.io.lw4d import gaussians_at, read_sequence, write_sequence
from backend.io.ply import write_ply
from backend.jobs import JobContext, run_inline
from backend.render.cameras import camera_from_fov, opencv_to_blender
from backend.render.frames import gather_frame, sequence_to_device
from backend.render.jobs import RenderSplatsParams, render_splats

torch.set_num_threads(1)
CAM = camera_from_fov(eye=[0, -4, 0], target=[0, 0, 0], width=33, height=25, fov_deg=40)  # odd size on purpose


def red_gaussian(point, scale=0.05) -> Gaussians:
    return Gaussians(means=np.array([point], np.float32), quats=np.array([[1, 0, 0, 0]], np.float32),
                     log_scales=np.full((1, 3), np.log(scale), np.float32), opacity_logits=np.array([4.0], np.float32),
                     sh=rgb_to_sh_dc(np.array([[[1.0, 0.0, 0.0]]], np.float32)))


def pixel_of(point):
    pc = CAM.world_to_cam @ np.append(point, 1.0)
    u, v = (CAM.K @ pc[:3])[:2] / pc[2]
    return int(v), int(u)  # row, column of the pixel containing the projection


def peak(png):
    img = imageio.imread(png)
    return np.unravel_index(np.argmax(img[..., 3]), img.shape[:2]), img


def test_static_ply_renders_the_gaussian_where_it_projects_and_writes_an_mp4(tmp_path):
    point = [0.3, 0.0, 0.2]
    write_ply(tmp_path / "red.ply", red_gaussian(point, scale=0.15))  # a few pixels wide: survives yuv420p chroma
    spec = opencv_to_blender(CAM).to_dict()
    seen = []
    arts = run_inline("render_splats", {"source": "red.ply", "cameras": [spec, spec], "frames": [3, 4],
                                        "write_mp4": True, "fps": 12, "background": [0, 0, 1]}, tmp_path,
                      on_progress=lambda f, m: seen.append(f))
    assert [a.rsplit("/", 1)[1] for a in arts] == ["frame_0003.png", "frame_0004.png", "render.mp4"]
    (row, col), img = peak(tmp_path / arts[0])
    assert img.shape == (25, 33, 4) and (row, col) == pixel_of(point)
    assert tuple(img[row, col])[:3] == (255, 0, 0) and img[row, col, 3] > 150  # straight (not premultiplied) colour
    assert img[0, 0, 3] == 0  # nothing there: transparent
    video = imageio.mimread(tmp_path / arts[2])
    assert len(video) == 2 and video[0].shape == (26, 34, 3)  # padded to even size for yuv420p
    assert video[0][1, 1, 2] > 200 and video[0][1, 1, 0] < 50  # blue background
    assert video[0][row, col, 0] > 150 and video[0][row, col, 2] < 80  # red splat (H.264 is lossy)
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_lw4d_sequence_moves_the_gaussian(tmp_path):
    start, end = np.array([-0.4, 0.0, 0.0]), np.array([0.4, 0.0, 0.3])
    positions = np.stack([start, end])[:, None, :].astype(np.float32)  # (T=2, M=1, 3)
    write_sequence(tmp_path / "move.lw4d", red_gaussian(start), np.array([0]), {"position": positions,
                   "opacity": np.array([[0.99], [0.99]], np.float32)})
    spec = opencv_to_blender(CAM).to_dict()
    arts = run_inline("render_splats", {"source": "move.lw4d", "cameras": [spec] * 3, "frames": [1, 2, 3],
                                        "times": [0.0, 1.0, 0.5]}, tmp_path)
    for art, point in zip(arts, [start, end, (start + end) / 2]):
        assert peak(tmp_path / art)[0] == pixel_of(point)


def test_cancel_between_frames(tmp_path):
    write_ply(tmp_path / "red.ply", red_gaussian([0, 0, 0]))
    ctx = JobContext(workspace=tmp_path, job_dir=tmp_path / "jobs" / "c")
    ctx.job_dir.mkdir(parents=True)
    cancel = ctx.cancel_event

    def progress(fraction, message):
        if fraction > 0:  # the user cancels while frame 2 renders: frame 3 never starts
            cancel.set()

    ctx.on_progress = progress
    spec = opencv_to_blender(CAM).to_dict()
    with pytest.raises(JobCancelled):
        render_splats(ctx, RenderSplatsParams(source="red.ply", cameras=[spec] * 3, frames=[1, 2, 3]))
    assert sorted(p.name for p in (ctx.job_dir / "render").iterdir()) == ["frame_0001.png", "frame_0002.png"]


def test_bad_parameters_are_rejected(tmp_path):
    spec = opencv_to_blender(CAM).to_dict()
    with pytest.raises(ValidationError):
        RenderSplatsParams(source="x.ply", cameras=[spec], frames=[1, 2])
    with pytest.raises(ValidationError):
        RenderSplatsParams(source="x.ply", cameras=[spec], frames=[1], times=[0.0, 1.0])
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(InvalidInput):
        run_inline("render_splats", {"source": "x.txt", "cameras": [spec], "frames": [1]}, tmp_path)
    with pytest.raises(InvalidInput):
        run_inline("render_splats", {"source": "x.txt", "cameras": [{"lens": 50}], "frames": [1]}, tmp_path)


def test_gather_frame_equals_the_io_reader(tmp_path):
    rng = np.random.default_rng(0)
    n, m, t = 20, 7, 3
    base = Gaussians(means=rng.normal(size=(n, 3)).astype(np.float32), quats=rng.normal(size=(n, 4)).astype(np.float32),
                     log_scales=rng.normal(size=(n, 3)).astype(np.float32) - 3,
                     opacity_logits=rng.normal(size=n).astype(np.float32), sh=rng.normal(size=(n, 4, 3)).astype(np.float32))
    q = rng.normal(size=(t, m, 4))
    channels = {"position": rng.normal(size=(t, m, 3)), "opacity": rng.uniform(0, 1, (t, m)),
                "rotation": q / np.linalg.norm(q, axis=-1, keepdims=True), "scale": rng.uniform(0.01, 0.1, (t, m, 3)),
                "color": rng.uniform(0, 1, (t, m, 3))}
    seq = read_sequence(write_sequence(tmp_path / "s.lw4d", base, rng.choice(n, m, replace=False),
                                       {k: v.astype(np.float32) for k, v in channels.items()}, loop=True))
    dseq = sequence_to_device(seq, "cpu")
    for time in (0.0, 2.0, 1.25, 2.5):  # 2.5 wraps from the last frame into the first (loop)
        want = gaussians_at(seq, time)
        got = gather_frame(dseq, time).to_numpy()
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-5, err_msg=name)
