import json
import os
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import asdict

import numpy as np
import pytest

import braintumor  # noqa: F401  (selects tf-keras before TensorFlow is imported)

from braintumor.models.io import (
    INFO_FILE,
    MODEL_FILE,
    ModelInfo,
    ModelLoadError,
    load_model,
    save_model,
    store_weights_as_float16,
)
from braintumor.models.segmentation import build_segmenter

INFO = ModelInfo(
    task="segment",
    architecture="unet",
    normalization="slice-zscore-v1",
    input_size=32,
    threshold=0.4,
    version="test",
    extra={"best_epoch": 3},
)


@pytest.fixture(scope="module")
def slices():
    return np.random.default_rng(0).standard_normal((2, 256, 256, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, slices):
    """A small U-Net saved with save_model, and its predictions on `slices` before saving."""
    model = build_segmenter("unet", input_size=32, base_filters=4, depth=2)
    folder = save_model(model, INFO, tmp_path_factory.mktemp("model") / "model")
    return folder, model.predict(slices, verbose=0)


def test_save_model_files(saved):
    folder, _ = saved

    assert sorted(path.name for path in folder.iterdir()) == [MODEL_FILE, INFO_FILE]
    assert zipfile.is_zipfile(folder / MODEL_FILE)
    assert json.loads((folder / INFO_FILE).read_text()) == asdict(INFO)


def test_round_trip_same_predictions(saved, slices):
    folder, expected = saved

    model, _ = load_model(folder)

    np.testing.assert_array_equal(model.predict(slices, verbose=0), expected)


def test_round_trip_info(saved):
    folder, _ = saved

    _, info = load_model(folder)

    assert info == INFO


def test_load_model_from_model_file(saved):
    folder, _ = saved

    _, info = load_model(folder / MODEL_FILE)

    assert info.architecture == "unet"


def test_load_model_is_not_compiled(saved):
    folder, _ = saved

    model, _ = load_model(folder)

    assert model.optimizer is None


@pytest.mark.timeout(300)
def test_loads_in_plain_tf_keras(saved, slices, tmp_path):
    # A user of the model needs only TensorFlow and tf-keras: the subprocess never imports braintumor.
    folder, expected = saved
    np.save(tmp_path / "slices.npy", slices)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf

        model = tf.keras.models.load_model({str(folder / MODEL_FILE)!r}, compile=False)
        np.save({str(tmp_path / "predicted.npy")!r}, model.predict(np.load({str(tmp_path / "slices.npy")!r}), verbose=0))
        print("braintumor imported:", "braintumor" in sys.modules)
        """
    )
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")

    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "braintumor imported: False" in completed.stdout
    np.testing.assert_allclose(np.load(tmp_path / "predicted.npy"), expected, rtol=1e-5, atol=1e-6)


def test_load_missing_folder(tmp_path):
    missing = tmp_path / "no_model"

    with pytest.raises(ModelLoadError, match="no_model: no model.keras here; expected a folder written by braintumor training"):
        load_model(missing)


def test_load_text_file_named_model_keras(tmp_path):
    (tmp_path / MODEL_FILE).write_text("not a model\n")
    (tmp_path / INFO_FILE).write_text(json.dumps(asdict(INFO)))

    with pytest.raises(ModelLoadError, match=r"model.keras: not a Keras model archive \(.keras files are zip archives\)"):
        load_model(tmp_path)


def test_load_missing_info(saved, tmp_path):
    folder, _ = saved
    (tmp_path / MODEL_FILE).write_bytes((folder / MODEL_FILE).read_bytes())

    with pytest.raises(ModelLoadError, match="model_info.json is missing beside model.keras"):
        load_model(tmp_path)


def test_load_zip_that_is_not_a_model(tmp_path):
    with zipfile.ZipFile(tmp_path / MODEL_FILE, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    (tmp_path / INFO_FILE).write_text(json.dumps(asdict(INFO)))

    with pytest.raises(ModelLoadError, match="model.keras: cannot load the model"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "invalid JSON"),
        ("[]", "expected a JSON object, found list"),
        (json.dumps({**asdict(INFO), "notes": "x"}), r"unknown field\(s\) \['notes'\]; the model may come from a newer"),
        (json.dumps({"task": "segment"}), r"required field\(s\) \['architecture', 'normalization'\] missing"),
    ],
)
def test_load_invalid_info(saved, tmp_path, content, message):
    folder, _ = saved
    (tmp_path / MODEL_FILE).write_bytes((folder / MODEL_FILE).read_bytes())
    (tmp_path / INFO_FILE).write_text(content)

    with pytest.raises(ModelLoadError, match=f"model_info.json: {message}"):
        load_model(tmp_path)


def weight_dtypes(model_file) -> set[str]:
    """Return the dtypes of the weight arrays stored in a model.keras file (test_release.py uses it too)."""
    import io

    import h5py

    with zipfile.ZipFile(model_file) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
        found = set()
        weights.visititems(lambda name, item: found.add(str(item.dtype)) if isinstance(item, h5py.Dataset) else None)
    return found


def _weights_bytes(model_file) -> int:
    with zipfile.ZipFile(model_file) as archive:
        return archive.getinfo("model.weights.h5").file_size


def test_float16_weights_load_as_float32(saved, slices, tmp_path):
    folder, expected = saved
    copy = tmp_path / "model"
    copy.mkdir()
    for name in (MODEL_FILE, INFO_FILE):
        (copy / name).write_bytes((folder / name).read_bytes())

    converted, unchanged = store_weights_as_float16(copy / MODEL_FILE)
    model, _ = load_model(copy)

    assert converted > 0
    assert unchanged == 0
    assert weight_dtypes(copy / MODEL_FILE) == {"float16"}
    assert {weight.dtype.name for weight in model.weights} == {"float32"}
    np.testing.assert_allclose(model.predict(slices, verbose=0), expected, atol=1e-2)
    # float16 saves two bytes per parameter, and the HDF5 layout around the arrays takes back a little.
    assert _weights_bytes(folder / MODEL_FILE) - _weights_bytes(copy / MODEL_FILE) >= 1.5 * model.count_params()


def test_float16_weights_keep_large_values(tmp_path):
    model = build_segmenter("unet", input_size=32, base_filters=4, depth=2)
    weights = model.get_weights()
    weights[0][...] = 1e6
    model.set_weights(weights)
    folder = save_model(model, INFO, tmp_path / "model")

    converted, unchanged = store_weights_as_float16(folder / MODEL_FILE)
    loaded, _ = load_model(folder)

    assert unchanged == 1
    assert converted == len(weights) - 1
    assert weight_dtypes(folder / MODEL_FILE) == {"float16", "float32"}
    np.testing.assert_array_equal(loaded.get_weights()[0], weights[0])


def test_float16_weights_of_non_archive(tmp_path):
    bogus = tmp_path / MODEL_FILE
    bogus.write_text("not a model")

    with pytest.raises(ModelLoadError, match="not a Keras model archive"):
        store_weights_as_float16(bogus)

    assert bogus.read_text() == "not a model"


def test_float16_weights_of_missing_file(tmp_path):
    missing = tmp_path / MODEL_FILE

    with pytest.raises(FileNotFoundError, match="model file not found") as raised:
        store_weights_as_float16(missing)

    assert str(missing) in str(raised.value)
    assert list(tmp_path.iterdir()) == []
