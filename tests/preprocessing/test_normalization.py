import re

import numpy as np
import pytest

from braintumor.preprocessing.normalization import STD_FLOOR, normalize_slices


def _random_slices(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)


def test_normalize_zero_mean_unit_std_per_channel():
    images = _random_slices(2)

    normalized = normalize_slices(images)

    assert normalized.dtype == np.float32
    assert normalized.shape == images.shape
    for slice_index in range(2):
        for channel in range(3):
            values = normalized[slice_index, :, :, channel]
            assert values.mean() == pytest.approx(0.0, abs=1e-4)
            assert values.std() == pytest.approx(1.0, abs=1e-4)


def test_normalize_single_slice_shape():
    image = _random_slices(1)[0]

    normalized = normalize_slices(image)

    assert normalized.shape == (64, 64, 3)
    assert normalized.dtype == np.float32


def test_normalize_hand_computed_values():
    # One channel of values 0 and 255, half each: scaled mean 0.5, std 0.5, so -1 and +1.
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[0, :, :] = 255

    normalized = normalize_slices(image)

    np.testing.assert_allclose(normalized[0], np.ones((2, 3)), rtol=1e-6)
    np.testing.assert_allclose(normalized[1], -np.ones((2, 3)), rtol=1e-6)


def test_normalize_std_floor_on_near_constant_slice():
    # Values 100 and 101, half each: on the [0, 1] scale the std is 0.5 / 255, under the floor,
    # so each pixel ends (0.5 / 255) / STD_FLOOR from the mean instead of 1 std from it.
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    image[:2] = 101
    expected = (0.5 / 255) / STD_FLOOR

    normalized = normalize_slices(image)

    assert STD_FLOOR == 0.05
    np.testing.assert_allclose(normalized[:2], expected, rtol=1e-4)
    np.testing.assert_allclose(normalized[2:], -expected, rtol=1e-4)
    assert np.abs(normalized).max() < 0.04


def test_normalize_constant_slice_is_zero():
    image = np.full((8, 8, 3), 37, dtype=np.uint8)

    normalized = normalize_slices(image)

    assert np.isfinite(normalized).all()
    np.testing.assert_allclose(normalized, 0.0, atol=1e-6)


def test_normalize_channels_independent():
    # Channel 1 is dark and channel 2 bright; each still ends with mean 0.
    images = _random_slices(1)
    images[..., 1] //= 2
    images[..., 2] = 255 - images[..., 2] // 2

    normalized = normalize_slices(images)

    for channel in range(3):
        assert normalized[0, :, :, channel].mean() == pytest.approx(0.0, abs=1e-4)
        assert normalized[0, :, :, channel].std() == pytest.approx(1.0, abs=1e-4)


def test_normalize_slice_alone_equals_slice_in_batch():
    # Per-slice statistics: the other slices of a batch (or of a volume) change nothing.
    batch = _random_slices(4)
    batch[1] //= 4  # a darker neighbour would shift batch-wide statistics

    in_batch = normalize_slices(batch)

    for slice_index in range(4):
        alone = normalize_slices(batch[slice_index])
        np.testing.assert_array_equal(in_batch[slice_index], alone)


def test_normalize_rejects_float_input():
    with pytest.raises(ValueError, match="expected uint8 slices, got float32"):
        normalize_slices(np.zeros((64, 64, 3), dtype=np.float32))


def test_normalize_rejects_uint16_input():
    with pytest.raises(ValueError, match="expected uint8 slices, got uint16"):
        normalize_slices(np.zeros((64, 64, 3), dtype=np.uint16))


@pytest.mark.parametrize("shape", [(64, 64), (1, 1, 64, 64, 3)])
def test_normalize_rejects_bad_shape(shape):
    expected = r"expected \(N, H, W, C\) or \(H, W, C\) slices, got shape " + re.escape(str(shape))
    with pytest.raises(ValueError, match=expected):
        normalize_slices(np.zeros(shape, dtype=np.uint8))


def test_normalize_matches_float64_reference():
    # Float32 reductions over the 65,536 pixels of a full-size slice lose precision, so compare with float64.
    images = _random_slices(2, seed=3)
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)  # 256 x 256, as the dataset
    images[1, :128] //= 8  # a dark half, so the mean is far from the midpoint
    scaled = images.astype(np.float64) / 255.0
    mean = scaled.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(scaled.std(axis=(1, 2), keepdims=True), STD_FLOOR)

    normalized = normalize_slices(images)

    np.testing.assert_allclose(normalized, (scaled - mean) / std, atol=1e-5)
