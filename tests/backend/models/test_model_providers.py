"""Model providers: tiny randomly initialised models of the real architectures saved with save_pretrained and
loaded through the same provider code as real weights; the built-in fallbacks on the sample landscape."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from backend.errors import InvalidInput, ModelUnavailable, NotFound
from backend.models.config import ModelConfig, make_depth, make_outpaint, make_segmentation
from backend.models.depth import DepthMapFile, LandscapeDepth, TransformersDepth
from backend.models.outpaint import DiffusersInpaint, PyramidInpaint, push_pull_fill
from backend.models.segmentation import HeuristicSegmentation, TransformersSegmentation, estimate_horizon
from backend.world.samples.make_landscape import SAMPLE_PATH

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def landscape() -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(str(SAMPLE_PATH)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    return cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)


def test_transformers_depth_loads_a_saved_depth_anything_and_predicts_full_size_inverse_depth(tiny_depth_anything,
                                                                                              landscape):
    provider = TransformersDepth(str(tiny_depth_anything), device="cpu")
    a = provider.predict(landscape, 125.0)
    b = provider.predict(landscape, 125.0)
    assert a.kind == "inverse_relative"
    assert a.values.shape == landscape.shape[:2] and a.values.dtype == np.float32
    assert np.isfinite(a.values).all() and a.valid.all()
    np.testing.assert_array_equal(a.values, b.values)  # deterministic


def test_depth_config_with_a_model_folder_uses_it_and_a_missing_one_raises_with_where_to_put_weights(
        tiny_depth_anything, tmp_path):
    assert make_depth(ModelConfig(depth=str(tiny_depth_anything), device="cpu")).name.startswith("transformers:")
    with pytest.raises(ModelUnavailable, match="builtin"):
        make_depth(ModelConfig(depth=str(tmp_path / "nowhere")))
    with pytest.raises(ModelUnavailable, match="hf download"):
        make_depth(ModelConfig(depth="no-such-org/no-such-depth-model"))


def test_auto_falls_back_to_builtin_only_when_weights_are_absent(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: the default models are not present
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = ModelConfig()
    assert isinstance(make_segmentation(cfg), HeuristicSegmentation)
    assert isinstance(make_depth(cfg), LandscapeDepth)
    assert isinstance(make_outpaint(cfg), PyramidInpaint)


def test_transformers_segmentation_maps_ade_labels_to_sky_water_ground(tiny_segformer, landscape):
    provider = TransformersSegmentation(str(tiny_segformer), device="cpu")
    assert provider.sky_ids.tolist() == [False, True, False, False, False]
    assert provider.water_ids.tolist() == [False, False, False, True, True]
    r = provider.segment(landscape)
    assert r.sky.shape == landscape.shape[:2]
    total = r.sky.astype(int) + r.water + r.ground
    assert (total == 1).all()  # a partition
    r2 = provider.segment(landscape)
    np.testing.assert_array_equal(r.sky, r2.sky)


def test_diffusers_inpaint_loads_a_saved_sd2_inpainting_pipeline_and_fills_only_the_hole(tiny_sd2_inpainting,
                                                                                          landscape):
    provider = DiffusersInpaint(str(tiny_sd2_inpainting), device="cpu", steps=2, size=64)
    hole = np.zeros(landscape.shape[:2], bool)
    hole[:, 80:] = True  # the right third is missing, as after turning the camera
    a = provider.outpaint(landscape, hole, prompt="a lake at dusk", seed=3)
    assert a.shape == landscape.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a[~hole], landscape[~hole])  # known pixels are returned unchanged
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert np.abs(a[hole] - landscape[hole]).mean() > 0.02  # the hole holds the pipeline's output, not the input
    np.testing.assert_array_equal(a, provider.outpaint(landscape, hole, prompt="a lake at dusk", seed=3))
    assert np.abs(a[hole] - provider.outpaint(landscape, hole, prompt="a lake at dusk", seed=4)[hole]).max() > 1e-3


def test_outpaint_config_with_a_pipeline_folder_uses_it_and_a_missing_one_says_where_to_put_weights(
        tiny_sd2_inpainting, tmp_path):
    provider = make_outpaint(ModelConfig(outpaint=str(tiny_sd2_inpainting), device="cpu", outpaint_steps=3))
    assert provider.name.startswith("diffusers:") and provider.steps == 3
    with pytest.raises(ModelUnavailable, match="builtin"):
        make_outpaint(ModelConfig(outpaint=str(tmp_path / "nowhere")))
    (tmp_path / "half").mkdir()  # a folder without a pipeline in it
    with pytest.raises(ModelUnavailable, match="inpainting model"):
        make_outpaint(ModelConfig(outpaint=str(tmp_path / "half")))


def test_heuristic_segmentation_finds_the_sample_sky_on_top_and_ground_at_the_bottom(landscape):
    r = HeuristicSegmentation().segment(landscape)
    assert r.sky[:40].mean() > 0.97  # top third: sky (clouds included)
    assert r.sky[90:].mean() == 0.0 and r.ground[95:].mean() > 0.97
    horizon = estimate_horizon(r.sky)
    assert 55 <= horizon <= 70  # the lake's far shore is at row 68 of 128


def test_landscape_depth_recedes_to_the_horizon_and_puts_sky_far(landscape):
    r = HeuristicSegmentation().segment(landscape)
    d = LandscapeDepth().predict(landscape, 125.0)
    assert d.kind == "metric" and d.values.shape == (128, 128)
    assert np.all(d.values[r.sky] == 1000.0)
    rows = np.median(np.where(r.ground, d.values, np.nan)[90:], axis=1)
    assert np.all(np.diff(rows) < 0)  # ground gets nearer towards the bottom row
    assert 1.0 < rows[-1] < 5.0  # a 1.6 m high camera sees the ground a few metres ahead


def test_depth_map_file_reads_npy_metres_and_16bit_png_millimetres(tmp_path, landscape):
    d = np.linspace(1, 10, 64 * 64, dtype=np.float32).reshape(64, 64)
    np.save(tmp_path / "d.npy", d)
    cv2.imwrite(str(tmp_path / "d.png"), (d * 1000).astype(np.uint16))
    a = DepthMapFile(tmp_path / "d.npy").predict(landscape, 125.0)
    b = DepthMapFile(tmp_path / "d.png").predict(landscape, 125.0)
    assert a.values.shape == (128, 128)
    np.testing.assert_allclose(a.values, b.values, atol=1e-3)
    with pytest.raises(NotFound):
        DepthMapFile(tmp_path / "missing.npy")
    cv2.imwrite(str(tmp_path / "bad.png"), (d * 20).astype(np.uint8))
    with pytest.raises(InvalidInput, match="16-bit"):
        DepthMapFile(tmp_path / "bad.png").predict(landscape, 125.0)


def test_push_pull_fill_keeps_known_pixels_and_continues_rows_sideways():
    img = np.zeros((32, 32, 3), np.float32)
    img[:16] = [0.2, 0.4, 0.9]  # upper half blue, lower half green
    img[16:] = [0.2, 0.7, 0.1]
    known = np.ones((32, 32), bool)
    known[:, 20:] = False
    out = push_pull_fill(img, known)
    np.testing.assert_array_equal(out[known], img[known])
    np.testing.assert_allclose(out[2:14, 20:], img[2:14, 20:], atol=0.02)  # rows continued, not averaged
    np.testing.assert_allclose(out[18:30, 20:], img[18:30, 20:], atol=0.02)


def test_pyramid_inpaint_fills_a_large_hole_with_textured_plausible_colour(landscape):
    mask = np.zeros(landscape.shape[:2], bool)
    mask[:, 80:] = True
    out = PyramidInpaint().outpaint(landscape, mask, seed=1)
    np.testing.assert_array_equal(out[~mask], landscape[~mask])
    assert out.min() >= 0 and out.max() <= 1
    # Sky stays sky-coloured, grass stays green; the fill is not flat (texture noise).
    sky = out[5:30, 90:].mean((0, 1))
    assert sky[2] > sky[0] + 0.2 and sky[2] > 0.7
    assert np.abs(out[100:, 90:].mean((0, 1)) - landscape[100:, :70].mean((0, 1))).max() < 0.08
    assert out[100:, 90:].std() > 0.3 * landscape[100:, :70].std()
    np.testing.assert_array_equal(out, PyramidInpaint().outpaint(landscape, mask, seed=1))


def test_cached_prompt_embeddings_give_the_pipeline_s_own_image(tiny_sd2_inpainting, landscape):
    from PIL import Image

    from backend.models.outpaint import NEGATIVE_PROMPT

    provider = DiffusersInpaint(str(tiny_sd2_inpainting), device="cpu", steps=2, size=64)
    assert provider.accel == "off"
    hole = np.zeros(landscape.shape[:2], bool)
    hole[:, 80:] = True
    a = provider.outpaint(landscape, hole, prompt="a lake at dusk", seed=3)
    assert list(provider._embeds) == ["a lake at dusk"]
    # the pipeline encoding the prompt itself, as before the cache
    img = Image.fromarray((landscape * 255 + 0.5).astype(np.uint8)).resize((64, 64), Image.BICUBIC)
    msk = Image.fromarray(hole.astype(np.uint8) * 255).resize((64, 64), Image.NEAREST)
    ref = provider.pipe(prompt="a lake at dusk", negative_prompt=NEGATIVE_PROMPT, image=img, mask_image=msk, height=64,
                        width=64, num_inference_steps=2, guidance_scale=7.5,
                        generator=torch.Generator().manual_seed(3), output_type="np").images[0]
    ref = cv2.resize(ref.astype(np.float32), (128, 128), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(a[hole], np.clip(ref, 0, 1)[hole], atol=1e-6)


def test_outpaint_acceleration_modes_are_checked_up_front(tiny_sd2_inpainting):
    with pytest.raises(InvalidInput, match="needs CUDA"):
        DiffusersInpaint(str(tiny_sd2_inpainting), device="cpu", accel="graphs")
    with pytest.raises(InvalidInput, match="choose auto, off, graphs, inductor"):
        DiffusersInpaint(str(tiny_sd2_inpainting), device="cpu", accel="fast")


def test_half_precision_depth_matches_float32_and_falls_back_when_it_overflows(tiny_depth_anything, landscape):
    def provider(half, head_gain):
        p = TransformersDepth(str(tiny_depth_anything), device="cpu", half=half)
        with torch.no_grad():  # the tiny random model's depth is ~1e-7, below float16's normal range: scale the head
            for name, prm in p.model.head.named_parameters():
                if name.startswith(("conv2.", "conv3.")):
                    prm.mul_(head_gain)
        return p

    full = provider(False, 100.0).predict(landscape, 125.0).values
    half = provider(True, 100.0)
    assert half.dtype == torch.float16
    out = half.predict(landscape, 125.0).values
    assert np.abs(full).max() > 1e-4 and np.abs(out - full).max() / np.abs(full).max() < 1e-2
    half = provider(True, 1e6)  # float16's largest value is 65504
    with pytest.warns(RuntimeWarning, match="float16 depth overflowed; running it in float32"):
        out = half.predict(landscape, 125.0).values
    assert half.dtype == torch.float32 and np.isfinite(out).all()
    ref = provider(False, 1e6).predict(landscape, 125.0).values  # the same model; its weights were float16 once
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-2
