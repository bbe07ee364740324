import numpy as np
import tensorflow as tf

from braintumor.training.augmentation import Augmentation, augment

NONE = Augmentation(flip=False, max_rotation_degrees=0, max_scale_change=0, max_contrast_change=0, max_brightness_shift=0)


def _batch(size=8):
    """Slices whose first channel is an off-centre square that is also the mask."""
    masks = np.zeros((size, 64, 64, 1), np.float32)
    masks[:, 10:30, 5:20] = 1.0
    slices = np.concatenate([masks, -masks, np.zeros_like(masks)], axis=-1)
    return tf.constant(slices), tf.constant(masks)


def test_no_change_when_every_range_is_zero():
    slices, masks = _batch()
    out_slices, out_masks = augment(slices, masks, NONE)
    np.testing.assert_allclose(out_slices.numpy(), slices.numpy(), atol=1e-5)
    np.testing.assert_array_equal(out_masks.numpy(), masks.numpy())


def test_flip_mirrors_left_and_right_only():
    tf.random.set_seed(1)
    slices, masks = _batch(32)
    out_slices, out_masks = augment(slices, masks, Augmentation(max_rotation_degrees=0, max_scale_change=0,
                                                                max_contrast_change=0, max_brightness_shift=0))
    mirrored = masks.numpy()[:, :, ::-1]
    flipped = [np.array_equal(m, mirrored[i]) for i, m in enumerate(out_masks.numpy())]
    kept = [np.array_equal(m, masks.numpy()[i]) for i, m in enumerate(out_masks.numpy())]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 32
    np.testing.assert_allclose(out_slices.numpy()[..., :1], out_masks.numpy(), atol=1e-5)


def test_mask_moves_with_the_slice_and_stays_binary():
    tf.random.set_seed(2)
    slices, masks = _batch(16)
    geometric = Augmentation(max_rotation_degrees=15, max_scale_change=0.2, max_contrast_change=0, max_brightness_shift=0)
    out_slices, out_masks = augment(slices, masks, geometric)
    out_masks = out_masks.numpy()
    assert set(np.unique(out_masks)) <= {0.0, 1.0}
    moved = 0
    for image, mask, original in zip(out_slices.numpy(), out_masks, masks.numpy()):
        warped = image[..., 0] > 0.5
        overlap = np.logical_and(warped, mask[..., 0] > 0).sum() / np.logical_or(warped, mask[..., 0] > 0).sum()
        assert overlap > 0.85
        moved += not np.array_equal(mask, original)
    assert moved > 0


def test_intensity_change_without_masks():
    tf.random.set_seed(3)
    slices = tf.ones((4, 16, 16, 3))
    out = augment(slices, augmentation=Augmentation(flip=False, max_rotation_degrees=0, max_scale_change=0,
                                                    max_contrast_change=0.1, max_brightness_shift=0.1))
    assert out.shape == (4, 16, 16, 3)
    values = out.numpy()
    assert values.min() >= 0.9 - 0.1 - 1e-6
    assert values.max() <= 1.1 + 0.1 + 1e-6
    assert not np.allclose(values, 1.0)
    # One draw per slice and channel: constant within a channel of a slice.
    assert np.allclose(values, values[:, :1, :1, :])
