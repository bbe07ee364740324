"""Losses and training metrics. Each takes probabilities in [0, 1], as the models return them."""

import tensorflow as tf

DICE_SMOOTH = 1.0


def soft_dice(y_true, y_pred, smooth: float = DICE_SMOOTH):
    """Soft Dice coefficient over a whole batch.

    Args:
        y_true: (N, H, W, 1) masks with values in {0, 1}.
        y_pred: (N, H, W, 1) probabilities.
        smooth: added to numerator and denominator. NOTE: with it, an empty mask predicted empty
            scores 1 instead of 0/0, and tiny masks are not scored too harshly.

    Returns:
        Scalar float32 tensor in (0, 1].
    """
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    intersection = tf.reduce_sum(y_true * y_pred)
    total = tf.reduce_sum(y_true) + tf.reduce_sum(y_pred)
    return (2.0 * intersection + smooth) / (total + smooth)


def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy per pixel plus (1 - soft Dice over the batch)."""
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    bce = tf.reduce_mean(tf.keras.losses.binary_crossentropy(y_true, y_pred))
    return bce + 1.0 - soft_dice(y_true, y_pred)


def dice(y_true, y_pred):
    """Training metric: soft Dice of a batch (the named function Keras logs as `dice`)."""
    return soft_dice(y_true, y_pred)
