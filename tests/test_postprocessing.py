import numpy as np
import pytest

from braintumor.models.io import ModelInfo
from braintumor.postprocessing import (
    MaskSettings,
    mask_settings,
    masks_from_probabilities,
    pixel_probabilities,
    remove_small_components,
)


def _two_regions() -> np.ndarray:
    mask = np.zeros((1, 32, 32), bool)
    mask[0, 2:5, 2:5] = True  # 9 pixels
    mask[0, 10:20, 10:20] = True  # 100 pixels
    return mask


def test_small_region_removed():
    cleaned = remove_small_components(_two_regions(), 20)
    assert cleaned[0, 2:5, 2:5].sum() == 0
    assert cleaned[0, 10:20, 10:20].all()
    assert cleaned.sum() == 100


def test_zero_minimum_keeps_everything():
    masks = _two_regions()
    np.testing.assert_array_equal(remove_small_components(masks, 0), masks)


def test_diagonal_pixels_form_one_region():
    mask = np.zeros((1, 8, 8), bool)
    for i in range(5):
        mask[0, i, i] = True  # five pixels touching only at corners
    assert remove_small_components(mask, 5).sum() == 5
    assert remove_small_components(mask, 6).sum() == 0


class _RampModel:
    """Return a left-to-right ramp whatever the input, like a model with a left-right bias."""

    def predict_on_batch(self, inputs):
        n, height, width, _ = inputs.shape
        ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)
        return np.broadcast_to(ramp[None, None, :, None], (n, height, width, 1)).copy()


def test_flip_averaging_cancels_left_right_bias():
    inputs = np.zeros((2, 4, 6, 3), np.float32)
    plain = pixel_probabilities(_RampModel(), inputs)
    averaged = pixel_probabilities(_RampModel(), inputs, flip_averaging=True)
    assert plain.shape == (2, 4, 6)
    assert plain[0, 0, 0] == 0.0
    np.testing.assert_allclose(averaged, 0.5)


def test_threshold_then_removal():
    probability = np.zeros((1, 32, 32), np.float32)
    probability[0, 2:5, 2:5] = 0.9
    probability[0, 10:20, 10:20] = 0.45
    assert masks_from_probabilities(probability, MaskSettings(threshold=0.5)).sum() == 9
    assert masks_from_probabilities(probability, MaskSettings(threshold=0.4, min_component_pixels=20)).sum() == 100


def test_settings_from_model_info():
    old = ModelInfo(task="segment", architecture="unet", normalization="slice-zscore-v1", threshold=0.4)
    assert mask_settings(old) == MaskSettings(threshold=0.4)
    tuned = ModelInfo(task="segment", architecture="unet", normalization="slice-zscore-v1", threshold=0.3,
                      postprocessing={"flip_averaging": True, "min_component_pixels": 32})
    assert mask_settings(tuned) == MaskSettings(threshold=0.3, flip_averaging=True, min_component_pixels=32)
    assert MaskSettings(threshold=0.3, flip_averaging=True, min_component_pixels=32).postprocessing() == {
        "flip_averaging": True, "min_component_pixels": 32}


@pytest.mark.parametrize("values", [{"threshold": 0.0}, {"threshold": 1.0}, {"min_component_pixels": -1}])
def test_invalid_settings_rejected(values):
    with pytest.raises(ValueError):
        MaskSettings(**values)
