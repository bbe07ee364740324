import math

import numpy as np
import pytest

import braintumor  # noqa: F401  (selects tf-keras before TensorFlow is imported)
import tensorflow as tf

from braintumor.models.losses import DICE_SMOOTH, PooledDice, bce_dice_loss, soft_dice


def _batch(values) -> tf.Tensor:
    """A (1, 2, 2, 1) float32 tensor from four values in row order."""
    return tf.constant(np.asarray(values, dtype=np.float32).reshape(1, 2, 2, 1))


Y_TRUE = _batch([1, 1, 0, 0])
Y_PRED = _batch([1.0, 0.5, 0.5, 0.0])


def test_soft_dice_smooth_is_one():
    assert DICE_SMOOTH == 1.0


def test_soft_dice_hand_computed():
    # intersection 1 + 0.5 = 1.5; sums 2 + 2 = 4; (2 * 1.5 + 1) / (4 + 1) = 0.8
    assert float(soft_dice(Y_TRUE, Y_PRED)) == pytest.approx(0.8)


def test_soft_dice_without_smoothing():
    # 2 * 1.5 / 4
    assert float(soft_dice(Y_TRUE, Y_PRED, smooth=0.0)) == pytest.approx(0.75)


def test_soft_dice_perfect_prediction():
    assert float(soft_dice(Y_TRUE, Y_TRUE)) == pytest.approx(1.0)


def test_soft_dice_empty_mask_predicted_empty():
    # Smoothing turns 0/0 into 1/1.
    empty = _batch([0, 0, 0, 0])

    assert float(soft_dice(empty, empty)) == pytest.approx(1.0)


def test_soft_dice_disjoint():
    # No overlap: (0 + 1) / (2 + 2 + 1)
    assert float(soft_dice(Y_TRUE, _batch([0, 0, 1, 1]))) == pytest.approx(0.2)


def test_soft_dice_pools_the_batch():
    # Two slices pooled: intersections 1 + 0, sums (1 + 1) + (1 + 0); (2 * 1 + 1) / (3 + 1)
    y_true = tf.constant(np.array([[1, 0], [1, 0]], dtype=np.float32).reshape(2, 1, 2, 1))
    y_pred = tf.constant(np.array([[1, 0], [0, 0]], dtype=np.float32).reshape(2, 1, 2, 1))

    assert float(soft_dice(y_true, y_pred)) == pytest.approx(0.75)


def test_soft_dice_accepts_uint8_masks():
    y_true = tf.constant(np.array([1, 1, 0, 0], dtype=np.uint8).reshape(1, 2, 2, 1))

    assert float(soft_dice(y_true, Y_PRED)) == pytest.approx(0.8)


def test_bce_dice_loss_hand_computed():
    y_true = _batch([1, 0, 1, 0])
    y_pred = _batch([0.8, 0.2, 0.6, 0.4])
    # BCE per pixel: -ln 0.8 twice and -ln 0.6 twice, so the mean is -(ln 0.8 + ln 0.6) / 2.
    bce = -(math.log(0.8) + math.log(0.6)) / 2
    # Dice: intersection 0.8 + 0.6 = 1.4, sums 2 + 2 = 4; (2.8 + 1) / (4 + 1) = 0.76.
    expected = bce + 1.0 - 0.76

    assert float(bce_dice_loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.606985, abs=1e-6)


def test_bce_dice_loss_lower_for_better_prediction():
    y_true = _batch([1, 0, 1, 0])

    good = float(bce_dice_loss(y_true, _batch([0.9, 0.1, 0.9, 0.1])))
    bad = float(bce_dice_loss(y_true, _batch([0.1, 0.9, 0.1, 0.9])))

    assert good < bad


# PooledDice, the training metric


def test_pooled_dice_pools_batches():
    # Batch 1 thresholded at 0.5: prediction [1, 0, 1, 0] against [1, 1, 0, 0], so intersection 1
    # and sums 2 + 2. Batch 2: an empty mask with one false-positive pixel, sums 0 + 1.
    # Pooled: 2 * 1 / (4 + 1) = 0.4, where the mean of per-batch Dice would be (0.5 + 0) / 2.
    metric = PooledDice()

    metric.update_state(_batch([1, 1, 0, 0]), _batch([0.9, 0.4, 0.6, 0.1]))
    metric.update_state(_batch([0, 0, 0, 0]), _batch([0.7, 0.0, 0.0, 0.0]))

    assert float(metric.result()) == pytest.approx(0.4)


def test_pooled_dice_threshold_inclusive():
    metric = PooledDice()

    metric.update_state(_batch([1, 0, 0, 0]), _batch([0.5, 0.49, 0.0, 0.0]))

    assert float(metric.result()) == pytest.approx(1.0)


def test_pooled_dice_other_threshold():
    # At 0.8 only the 0.9 pixel is positive: 2 * 1 / (2 + 1)
    metric = PooledDice(threshold=0.8)

    metric.update_state(_batch([1, 1, 0, 0]), _batch([0.9, 0.6, 0.0, 0.0]))

    assert float(metric.result()) == pytest.approx(2 / 3)


def test_pooled_dice_reset():
    metric = PooledDice()
    metric.update_state(Y_TRUE, Y_PRED)

    metric.reset_state()

    # Nothing seen: 0 / 0 is reported as 0.
    assert float(metric.result()) == 0.0


def test_pooled_dice_name_and_config():
    metric = PooledDice(threshold=0.3)

    assert metric.name == "dice"
    assert metric.get_config()["threshold"] == 0.3


def test_pooled_dice_under_bfloat16_strategy():
    # A training run under mixed_bfloat16 failed at the end of its first epoch when the metric's
    # variables took the bfloat16 policy.
    from braintumor.training.config import TrainConfig
    from braintumor.training.loop import build_model, compile_model

    config = TrainConfig(task="segment", input_size=32, base_filters=4)
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        with tf.distribute.MirroredStrategy().scope():
            model = build_model(config)
            compile_model(model, config, learning_rate=1e-3)
        metric = PooledDice()
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    slices = np.random.default_rng(0).standard_normal((4, 256, 256, 3)).astype(np.float32)
    masks = (np.random.default_rng(1).random((4, 256, 256, 1)) > 0.5).astype(np.float32)

    history = model.fit(slices, masks, validation_data=(slices, masks), epochs=1, batch_size=4, verbose=0)

    assert 0.0 <= history.history["val_dice"][0] <= 1.0
    assert metric.intersection.dtype == tf.float32
    # 70,000 pixels: a bfloat16 count would round it.
    metric.update_state(np.ones((1, 280, 250, 1)), np.ones((1, 280, 250, 1)))
    assert float(metric.intersection.numpy()) == 70000.0
