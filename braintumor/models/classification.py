"""Slice classifiers: tumour present or not."""

from pathlib import Path

import tensorflow as tf

from braintumor.models.layers import conv_block, layers, resize_input

CLASSIFIERS = ("smallcnn", "densenet121", "resnet50")


def build_classifier(
    architecture: str = "smallcnn",
    image_size: int = 256,
    input_size: int = 128,
    base_filters: int = 16,
    weights: str | Path | None = None,
    dropout: float = 0.3,
) -> tf.keras.Model:
    """Build a slice classifier.

    Args:
        architecture: "smallcnn" (four convolution blocks), "densenet121" or "resnet50"
            (from `tf.keras.applications`, without their ImageNet top).
        image_size: side of the slices the model receives.
        input_size: side the network works at; the input is resized to it.
        base_filters: filters of the small CNN's first block (ignored by the others).
        weights: None to start from random weights, or the path of a local weights file for
            the application's backbone without its top (for example the `..._notop.h5` file).
            Nothing is downloaded.
        dropout: dropout rate before the output layer.

    Returns:
        A model mapping (N, image_size, image_size, 3) float32 normalised slices to (N, 1)
        float32 tumour probabilities.

    Raises:
        ValueError: unknown architecture, or weights given for the small CNN.
        FileNotFoundError: the weights file does not exist.
    """
    if architecture not in CLASSIFIERS:
        raise ValueError(f"unknown classifier '{architecture}', expected one of {CLASSIFIERS}")
    if weights is not None:
        if architecture == "smallcnn":
            raise ValueError("--weights applies to densenet121 and resnet50, not to smallcnn")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: weights file not found")

    inputs = layers.Input((image_size, image_size, 3), name="slice")
    x = resize_input(inputs, input_size)
    if architecture == "smallcnn":
        for level in range(4):
            x = conv_block(x, base_filters * 2**level, f"block{level}")
            x = layers.MaxPooling2D(name=f"block{level}_pool")(x)
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        application = {
            "densenet121": tf.keras.applications.DenseNet121,
            "resnet50": tf.keras.applications.ResNet50,
        }[architecture]
        backbone = application(
            include_top=False,
            weights=str(weights) if weights is not None else None,
            input_shape=(input_size, input_size, 3),
            pooling="avg",
        )
        x = backbone(x)

    x = layers.Dropout(dropout, name="dropout")(x)
    probability = layers.Dense(1, activation="sigmoid", name="probability", dtype="float32")(x)
    return tf.keras.Model(inputs, probability, name=architecture)
