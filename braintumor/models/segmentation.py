"""U-Net and ResUNet segmenters."""

import tensorflow as tf

from braintumor.models.layers import conv_block, layers, resize_input

SEGMENTERS = ("unet", "resunet")


def build_segmenter(
    architecture: str = "unet",
    image_size: int = 256,
    input_size: int = 128,
    base_filters: int = 16,
    depth: int = 4,
) -> tf.keras.Model:
    """Build a U-Net (`unet`) or a U-Net with residual blocks (`resunet`).

    Args:
        architecture: "unet" or "resunet".
        image_size: side of the slices the model receives and the masks it returns.
        input_size: side the network works at; the input is resized to it and the output back.
        base_filters: filters of the first level; each deeper level doubles them.
        depth: number of down-sampling steps; `input_size` must be divisible by 2**depth.

    Returns:
        A model mapping (N, image_size, image_size, 3) float32 normalised slices to
        (N, image_size, image_size, 1) float32 tumour probabilities.

    Raises:
        ValueError: unknown architecture, or `input_size` not divisible by 2**depth.
    """
    if architecture not in SEGMENTERS:
        raise ValueError(f"unknown segmenter '{architecture}', expected one of {SEGMENTERS}")
    if input_size % (2**depth):
        raise ValueError(f"input_size {input_size} must be divisible by 2**depth = {2**depth}")
    residual = architecture == "resunet"

    inputs = layers.Input((image_size, image_size, 3), name="slice")
    x = resize_input(inputs, input_size)
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, f"down{level}", residual)
        skips.append(x)
        x = layers.MaxPooling2D(name=f"down{level}_pool")(x)
    x = conv_block(x, base_filters * 2**depth, "bottleneck", residual)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}_transpose")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = conv_block(x, filters, f"up{level}", residual)

    logits = layers.Conv2D(1, 1, name="logits", dtype="float32")(x)
    if input_size != image_size:
        logits = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize_output", dtype="float32")(logits)
    probability = layers.Activation("sigmoid", name="probability", dtype="float32")(logits)
    return tf.keras.Model(inputs, probability, name=architecture)
