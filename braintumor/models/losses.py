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


class PooledDice(tf.keras.metrics.Metric):
    """Dice of thresholded masks pooled over every pixel seen in an epoch, logged as `dice`.

    A mean of per-batch Dice misleads on validation data, whose batches follow the slice order: a
    batch of empty top-of-head slices scores near 0 for a few stray pixels. Pooling counts over the
    epoch gives the Dice of the split as a whole.
    """

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs):
        # float32 under any mixed precision policy. bfloat16 counts pixels exactly only up to 256,
        # and with tf-keras 2.21 reading a mixed-precision metric variable under a distribution
        # strategy raises NotImplementedError (sync-on-read context) at the end of the epoch.
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.intersection = self.add_weight(name="intersection", initializer="zeros")
        self.total = self.add_weight(name="total", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true > 0.5, tf.float32)
        y_pred = tf.cast(y_pred >= self.threshold, tf.float32)
        self.intersection.assign_add(tf.reduce_sum(y_true * y_pred))
        self.total.assign_add(tf.reduce_sum(y_true) + tf.reduce_sum(y_pred))

    def result(self):
        return tf.math.divide_no_nan(2.0 * self.intersection, self.total)

    def reset_state(self):
        self.intersection.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
