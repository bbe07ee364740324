"""Random changes to training batches that move each slice and its mask together.

Every slice of a batch gets its own draw: a left-right flip, a small rotation and scaling about
the slice centre, and a per-channel change of contrast and brightness. The geometric part is one
projective transform per slice, applied to the slice with bilinear sampling and to the mask with
nearest-neighbour sampling, so the mask stays binary and lines up with the slice. Up-down flips are
left out: axial MR slices are never seen upside down.

The functions run inside a tf.data pipeline on normalised float32 batches.
"""

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random changes; all zero means no change."""

    flip: bool = True
    max_rotation_degrees: float = 10.0
    max_scale_change: float = 0.1  # zoom factor drawn from [1 - x, 1 + x]
    max_contrast_change: float = 0.1  # per-channel factor drawn from [1 - x, 1 + x]
    max_brightness_shift: float = 0.1  # per-channel shift in normalised units, from [-x, x]


def _transforms(batch, height, width, augmentation: Augmentation):
    """Per-slice projective transforms (B, 8) mapping output pixels to input pixels.

    A rotation by `angle` and a zoom by `scale` about the centre, optionally after a left-right
    flip. The transform is the inverse map, as ImageProjectiveTransformV3 expects.
    """
    angle = tf.random.uniform((batch,), -1.0, 1.0) * (augmentation.max_rotation_degrees * math.pi / 180.0)
    scale = 1.0 + tf.random.uniform((batch,), -1.0, 1.0) * augmentation.max_scale_change
    if augmentation.flip:
        mirror = tf.where(tf.random.uniform((batch,)) < 0.5, -1.0, 1.0)
    else:
        mirror = tf.ones((batch,))
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    cx, cy = (tf.cast(width, tf.float32) - 1.0) / 2.0, (tf.cast(height, tf.float32) - 1.0) / 2.0
    # Inverse map: input = mirror(R(-angle) / scale * (output - centre)) + centre, with the mirror
    # acting on x only.
    a0, a1 = mirror * cos, mirror * sin
    b0, b1 = -sin, cos
    a2 = cx - a0 * cx - a1 * cy
    b2 = cy - b0 * cx - b1 * cy
    zeros = tf.zeros((batch,))
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _warp(images, transforms, interpolation: str, fill_mode: str):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        interpolation=interpolation,
        fill_mode=fill_mode,
        fill_value=0.0,
    )


def augment(slices, masks=None, augmentation: Augmentation = Augmentation()):
    """Apply one random draw per slice to a batch of slices and, when given, their masks.

    Args:
        slices: (B, H, W, C) float32 normalised slices.
        masks: (B, H, W, 1) float32 masks of 0 and 1, or None for classification batches.
        augmentation: the ranges to draw from.

    Returns:
        The changed slices, or a (slices, masks) pair when masks were given.
    """
    shape = tf.shape(slices)
    batch, height, width = shape[0], shape[1], shape[2]
    transforms = _transforms(batch, height, width, augmentation)
    # Edge pixels are background, so repeating them fills the corners a rotation uncovers.
    slices = _warp(slices, transforms, "BILINEAR", "NEAREST")
    channels = shape[3]
    contrast = 1.0 + tf.random.uniform((batch, 1, 1, channels), -1.0, 1.0) * augmentation.max_contrast_change
    brightness = tf.random.uniform((batch, 1, 1, channels), -1.0, 1.0) * augmentation.max_brightness_shift
    slices = slices * contrast + brightness
    if masks is None:
        return slices
    masks = _warp(masks, transforms, "NEAREST", "CONSTANT")
    return slices, masks
