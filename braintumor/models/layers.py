"""Building blocks shared by the networks. Built-in Keras layers only, so saved models load without this code."""

import tensorflow as tf

layers = tf.keras.layers


def resize_input(inputs, input_size: int):
    """Resize (N, H, W, C) inputs to (N, input_size, input_size, C) when the sizes differ."""
    if inputs.shape[1] == input_size and inputs.shape[2] == input_size:
        return inputs
    return layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize_input")(inputs)


def conv_block(x, filters: int, name: str, residual: bool = False):
    """Two 3x3 convolutions with batch normalisation and ReLU; with `residual`, a 1x1 shortcut is added."""
    shortcut = x
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = layers.BatchNormalization(name=f"{name}_bn1")(x)
    x = layers.Activation("relu", name=f"{name}_relu1")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(name=f"{name}_bn2")(x)
    if residual:
        shortcut = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_shortcut")(shortcut)
        shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
        x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.Activation("relu", name=f"{name}_relu2")(x)
