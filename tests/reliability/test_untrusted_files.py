"""No untrusted file is unpickled, and saved models load only in Keras safe mode."""

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from braintumor.models.io import INFO_FILE, MODEL_FILE, ModelInfo, ModelLoadError, load_model

REPO_ROOT = Path(__file__).resolve().parents[2]
# Calls that can run code stored in a file: unpickling, and switching Keras safe mode off.
UNSAFE_CALLS = re.compile(
    r"\bpickle\b|allow_pickle\s*=\s*True|\bjoblib\b|read_pickle|torch\.load|safe_mode\s*=\s*False|enable_unsafe_deserialization"
)


def test_no_unpickling_in_library_or_jobs():
    sources = sorted([*(REPO_ROOT / "braintumor").rglob("*.py"), *(REPO_ROOT / "jobs").glob("*.py")])
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if UNSAFE_CALLS.search(line)
    ]

    assert sources
    assert found == []


def test_model_with_python_lambda_rejected(tmp_path):
    import tensorflow as tf

    inputs = tf.keras.Input((256, 256, 3))
    outputs = tf.keras.layers.Lambda(lambda images: images * 2.0)(inputs)
    tf.keras.Model(inputs, outputs).save(str(tmp_path / MODEL_FILE))
    info = ModelInfo(task="segment", architecture="unet", normalization="slice-zscore-v1")
    (tmp_path / INFO_FILE).write_text(json.dumps(asdict(info)))

    with pytest.raises(ModelLoadError) as caught:
        load_model(tmp_path)

    assert str(caught.value).startswith(f"{tmp_path / MODEL_FILE}: cannot load the model")
    assert "safe_mode" in str(caught.value)
