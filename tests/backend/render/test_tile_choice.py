"""The tile size of display frames, chosen from the splats' screen footprints (``gsplat_backend.choose_tile_size``)."""

import math

import numpy as np
import pytest
import torch

from backend.gaussians import Gaussians
from backend.render import reference
from backend.render.cameras import Camera
from backend.render.gsplat_backend import choose_tile_size
from backend.render.rasterize import AUTO_TILE, RasterConfig, rasterize
from backend.render.reference import tile_pairs

torch.set_num_threads(1)


def splats(n, radius_px, width=320, height=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(n, 2, generator=g) * torch.tensor([width, height], dtype=torch.float32)
    radii = torch.full((n, 2), radius_px, dtype=torch.int32)
    return means2d, radii


@pytest.mark.parametrize("tile", [16, 32])
def test_pair_count_is_the_length_of_the_tile_lists(tile):
    g = torch.Generator().manual_seed(3)
    n, w, h = 400, 200, 120
    means2d = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.4, h * 1.4]) - torch.tensor([w * 0.2, h * 0.2])
    radii = torch.randint(0, 70, (n, 2), generator=g, dtype=torch.int32)
    radii[::7] = 0  # culled
    proj = reference.Projection(means2d=means2d, conics=torch.zeros(n, 3), depths=torch.rand(n, generator=g),
                                opacities=torch.ones(n), radii=radii, valid=(radii > 0).all(-1))
    tiles, _, _ = reference.tile_intersections(proj, w, h, tile)
    assert int(tile_pairs(means2d, radii, w, h, tile)) == len(tiles) > 0


def test_small_splats_keep_16_pixel_tiles_and_large_ones_take_32():
    assert choose_tile_size(*splats(20000, 2), 1920, 1080) == 16
    assert choose_tile_size(*splats(20000, 60), 1920, 1080) == 32
    small16, small32 = (float(tile_pairs(*splats(20000, 2), 1920, 1080, t)) for t in (16, 32))
    large16, large32 = (float(tile_pairs(*splats(20000, 60), 1920, 1080, t)) for t in (16, 32))
    assert small16 / small32 < 1.5  # the footprints the choice reads
    assert large16 / large32 > 2.5


def test_auto_tile_renders_what_16_pixel_tiles_render_on_the_reference():
    g = torch.Generator().manual_seed(1)
    n = 60
    gs = Gaussians(means=torch.randn(n, 3, generator=g) * 0.4 + torch.tensor([0.0, 0.0, 3.0]),
                   quats=torch.randn(n, 4, generator=g), log_scales=torch.full((n, 3), math.log(0.1)),
                   opacity_logits=torch.randn(n, generator=g), sh=torch.randn(n, 1, 3, generator=g) * 0.5)
    cam = Camera(K=np.array([[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]]), world_to_cam=np.eye(4), width=48, height=32,
                 near=0.01, far=100.0)
    auto = rasterize(gs, cam, RasterConfig(tile_size=AUTO_TILE, depth=False))
    fixed = rasterize(gs, cam, RasterConfig(tile_size=16, depth=False))
    assert auto.meta["tile_size"] == 16
    assert auto.alpha.max() > 0.5
    torch.testing.assert_close(auto.color, fixed.color)
    torch.testing.assert_close(auto.alpha, fixed.alpha)


def test_culled_splats_with_unwritten_means_do_not_decide_the_tile():
    # gsplat leaves the projected means of culled splats unwritten: NaN, inf or anything; found on an H100, where
    # they turned the cost into NaN and the choice into whichever tile argmin met first
    means2d, radii = splats(20000, 60)
    means2d[:500] = float("nan")
    means2d[500:1000] = float("inf")
    means2d[1000:1500] = -3e38
    radii[:1500] = 0
    assert choose_tile_size(means2d, radii, 1920, 1080) == 32
    assert torch.isfinite(tile_pairs(means2d, radii, 1920, 1080, 16))
    small_means, small_radii = splats(20000, 2)
    small_means[:100], small_radii[:100] = float("nan"), 0
    assert choose_tile_size(small_means, small_radii, 1920, 1080) == 16


def test_the_render_job_keeps_the_tile_its_first_frame_chose(monkeypatch, tmp_path):
    from backend.io.ply import write_ply
    from backend.jobs import JobContext
    from backend.render import sequence_render
    from backend.render.cameras import camera_from_fov, opencv_to_blender
    from backend.render.jobs import RenderSplatsParams, render_splats

    configs = []
    real = sequence_render.rasterize

    def spy(gaussians, camera, config, extra=None):
        configs.append(config.tile_size)
        return real(gaussians, camera, config, extra)

    monkeypatch.setattr(sequence_render, "rasterize", spy)
    g = Gaussians(means=np.zeros((1, 3), np.float32), quats=np.array([[1, 0, 0, 0]], np.float32),
                  log_scales=np.full((1, 3), np.log(0.2), np.float32), opacity_logits=np.array([3.0], np.float32),
                  sh=np.full((1, 1, 3), 0.5, np.float32))
    write_ply(tmp_path / "one.ply", g)
    cam = opencv_to_blender(camera_from_fov(eye=[0, -4, 0], target=[0, 0, 0], width=32, height=24, fov_deg=40))
    params = RenderSplatsParams(source=str(tmp_path / "one.ply"), cameras=[cam.to_dict()] * 3, frames=[1, 2, 3])
    arts = render_splats(JobContext(workspace=tmp_path, job_dir=tmp_path / "jobs" / "t"), params)
    assert len(arts) == 3
    assert configs == [AUTO_TILE, 16, 16]  # the reference's choice is 16; chosen once, then fixed
