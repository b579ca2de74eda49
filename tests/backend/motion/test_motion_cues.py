"""Motion cues: presets, hints, fallback, the Eulerian U-Net provider."""

import numpy as np
import pytest
import torch

from backend.errors import InvalidInput, ModelUnavailable
from backend.world.motion.cues import (
    MATERIAL_CODE,
    PRESETS,
    combine_cues,
    fallback_cue,
    fallback_cue_from_image,
    hint_cue,
    preset_cue,
)
from backend.world.motion.eulerian import EulerianFlowConfig, EulerianFlowNet, EulerianMotionProvider


def _mask(h=40, w=60):
    m = np.zeros((h, w), bool)
    m[5:35, 10:50] = True
    return m


def test_cloud_preset_is_a_uniform_drift_in_the_screen_direction():
    cue = preset_cue("clouds", _mask(), direction=(1.0, 1.0), speed=2.0)
    inside = cue.flow[cue.mask]
    expect = 2.0 * np.array([1.0, -1.0]) / np.sqrt(2)  # screen y up -> image y down
    np.testing.assert_allclose(inside, np.broadcast_to(expect, inside.shape), atol=1e-6)
    assert np.all(cue.flow[~cue.mask] == 0)
    assert np.all(cue.material[cue.mask] == MATERIAL_CODE["clouds"])


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_moves_inside_its_mask_only(preset):
    cue = preset_cue(preset, _mask(), direction=(1.0, 0.0), speed=1.5, seed=3)
    speed = np.linalg.norm(cue.flow, axis=-1)
    assert speed[cue.mask].mean() > 0.3
    assert np.all(speed[~cue.mask] == 0)


def test_preset_characters_differ_as_described():
    m = _mask()
    water = preset_cue("water", m, (1, 0), 1.0).flow[m]
    smoke = preset_cue("smoke", m, (1, 0), 1.0).flow[m]
    fire = preset_cue("fire", m, (1, 0), 1.0).flow[m]
    fog = preset_cue("fog", m, (1, 0), 1.0).flow[m]
    # water follows the direction with small turbulence
    assert water[:, 0].mean() > 0.9 and water.std(axis=0).max() < 0.3
    # smoke and fire rise (negative image y); fire's speed varies much more (flicker)
    assert smoke[:, 1].mean() < -0.8 and fire[:, 1].mean() < -0.5
    assert np.linalg.norm(fire, axis=1).std() > 2 * np.linalg.norm(water, axis=1).std()
    # fog is slow
    assert np.linalg.norm(fog, axis=1).mean() < 0.5


def test_preset_rejects_unknown_names_and_zero_direction():
    with pytest.raises(InvalidInput):
        preset_cue("lava", _mask())
    with pytest.raises(InvalidInput):
        preset_cue("water", _mask(), direction=(0, 0))


def test_hint_strokes_densify_along_their_tangent():
    h, w = 40, 60
    strokes = [[(5, 10), (30, 10), (55, 10)], [(5, 30), (55, 30)]]  # two strokes to the right
    cue = hint_cue(strokes, (h, w), speed=2.0)
    assert cue.mask[10, 30] and cue.mask[20, 30]
    np.testing.assert_allclose(cue.flow[20, 30], [2.0, 0.0], atol=1e-3)  # between the strokes
    # opposite strokes: left half goes up (image y down), right half goes down
    cue = hint_cue([[(10, 35), (10, 5)], [(50, 5), (50, 35)]], (h, w), speed=1.0, mask=np.ones((h, w), bool))
    assert cue.flow[20, 5, 1] < -0.9 and cue.flow[20, 55, 1] > 0.9
    assert np.all(np.isfinite(cue.flow)) and cue.mask.all()


def test_hint_rejects_degenerate_strokes():
    with pytest.raises(InvalidInput):
        hint_cue([[(3, 3)]], (10, 10))
    with pytest.raises(InvalidInput):
        hint_cue([[(3, 3), (3, 3)]], (10, 10))


def test_fallback_animates_sky_and_water_and_combine_overlays():
    sky = np.zeros((30, 40), bool)
    sky[:10] = True
    water = np.zeros((30, 40), bool)
    water[20:] = True
    cue = fallback_cue(sky, water, speed=2.0)
    assert np.all(cue.material[:10] == MATERIAL_CODE["clouds"]) and np.all(cue.material[20:] == MATERIAL_CODE["water"])
    np.testing.assert_allclose(cue.flow[:10, :, 0], 1.0, atol=1e-6)  # clouds at half speed, to the right
    assert cue.flow[20:, :, 1].mean() > 1.5  # water towards the viewer (down the screen)
    assert not cue.mask[10:20].any()
    over = combine_cues([cue, preset_cue("smoke", water, (0, 1), 1.0)])
    assert np.all(over.material[20:] == MATERIAL_CODE["smoke"]) and np.all(over.material[:10] == MATERIAL_CODE["clouds"])


def test_fallback_from_image_finds_a_blue_sky():
    img = np.zeros((40, 50, 3), np.float32)
    img[:15] = [0.4, 0.6, 0.95]  # sky
    img[15:] = [0.35, 0.3, 0.2]  # brown ground
    cue = fallback_cue_from_image(img)
    assert cue.mask[:10].mean() > 0.9 and not cue.mask[30:].any()


def test_eulerian_unet_saves_loads_and_predicts_masked_flow(tmp_path):
    torch.manual_seed(0)
    net = EulerianFlowNet(EulerianFlowConfig(base_channels=4, depth=2, flow_scale=3.0))
    net.save_pretrained(tmp_path / "m")
    provider = EulerianMotionProvider.from_pretrained(tmp_path / "m")
    img = np.random.default_rng(0).random((21, 30, 3)).astype(np.float32)  # not a multiple of 4: padded
    mask = np.zeros((21, 30), bool)
    mask[3:15] = True
    cue = provider.predict(img, mask)
    assert cue.flow.shape == (21, 30, 2) and np.abs(cue.flow[mask]).max() > 0
    assert np.all(cue.flow[~mask] == 0) and np.all(cue.material[mask] == MATERIAL_CODE["model"])
    # the loaded weights are the saved ones: same output as the original network
    x = torch.rand(1, 7, 16, 16)
    torch.testing.assert_close(provider.model(x), net.eval()(x))


def test_eulerian_missing_weights_is_model_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable):
        EulerianMotionProvider.from_pretrained(tmp_path / "nothing")
