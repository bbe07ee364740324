import numpy as np
import pytest

import braintumor  # noqa: F401  (selects tf-keras before TensorFlow is imported)
import tensorflow as tf

from braintumor.models.classification import build_classifier
from braintumor.models.segmentation import build_segmenter

# Small networks keep these tests fast: the models still take and return full 256x256 slices.
SMALL = {"input_size": 32, "base_filters": 4}


def _slices(n: int = 2, size: int = 256) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, size, size, 3)).astype(np.float32)


def test_tf_keras_is_legacy_keras():
    # Ray's MultiWorkerMirroredStrategy training needs the Keras 2 API, which tf-keras provides.
    assert tf.keras.Model.__module__.startswith("tf_keras")


# Segmenters


@pytest.mark.parametrize("architecture", ["unet", "resunet"])
def test_segmenter_output_shape_and_range(architecture):
    model = build_segmenter(architecture, depth=2, **SMALL)

    probability = model.predict(_slices(2), verbose=0)

    assert model.input_shape == (None, 256, 256, 3)
    assert probability.shape == (2, 256, 256, 1)
    assert probability.dtype == np.float32
    assert probability.min() >= 0.0
    assert probability.max() <= 1.0


def test_segmenter_other_image_size():
    model = build_segmenter("unet", image_size=64, depth=2, **SMALL)

    assert model.predict(_slices(1, size=64), verbose=0).shape == (1, 64, 64, 1)


def test_segmenter_without_resize():
    model = build_segmenter("unet", image_size=32, depth=2, **SMALL)

    layer_names = [layer.name for layer in model.layers]
    assert "resize_input" not in layer_names
    assert "resize_output" not in layer_names
    assert model.predict(_slices(1, size=32), verbose=0).shape == (1, 32, 32, 1)


def test_resunet_has_residual_shortcuts():
    unet = build_segmenter("unet", depth=2, **SMALL)
    resunet = build_segmenter("resunet", depth=2, **SMALL)

    assert not any(layer.name.endswith("_shortcut") for layer in unet.layers)
    assert any(layer.name.endswith("_shortcut") for layer in resunet.layers)


def test_segmenter_unknown_architecture():
    with pytest.raises(ValueError, match=r"unknown segmenter 'vnet', expected one of \('unet', 'resunet'\)"):
        build_segmenter("vnet")


def test_segmenter_input_size_not_divisible():
    with pytest.raises(ValueError, match=r"input_size 30 must be divisible by 2\*\*depth = 4"):
        build_segmenter("unet", input_size=30, depth=2)


# Classifiers


@pytest.mark.parametrize("architecture", ["smallcnn", "densenet121", "resnet50"])
def test_classifier_output_shape_and_range(architecture):
    model = build_classifier(architecture, **SMALL)

    probability = model.predict(_slices(2), verbose=0)

    assert model.input_shape == (None, 256, 256, 3)
    assert probability.shape == (2, 1)
    assert probability.min() >= 0.0
    assert probability.max() <= 1.0


def test_classifier_loads_local_backbone_weights(tmp_path):
    backbone = tf.keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights_path = tmp_path / "x.h5"
    backbone.save_weights(str(weights_path))
    saved = backbone.get_layer("conv1/conv").get_weights()[0]

    model = build_classifier("densenet121", input_size=32, weights=weights_path)

    loaded = model.get_layer("densenet121").get_layer("conv1/conv").get_weights()[0]
    np.testing.assert_array_equal(loaded, saved)


def test_classifier_unknown_architecture():
    with pytest.raises(ValueError, match=r"unknown classifier 'vgg16', expected one of \('smallcnn', 'densenet121', 'resnet50'\)"):
        build_classifier("vgg16")


def test_classifier_weights_for_smallcnn(tmp_path):
    weights_path = tmp_path / "x.h5"
    weights_path.write_bytes(b"")

    with pytest.raises(ValueError, match="--weights applies to densenet121 and resnet50, not to smallcnn"):
        build_classifier("smallcnn", weights=weights_path)


def test_classifier_missing_weights_file(tmp_path):
    missing = tmp_path / "missing.h5"

    with pytest.raises(FileNotFoundError, match="missing.h5: weights file not found"):
        build_classifier("densenet121", input_size=32, weights=missing)
