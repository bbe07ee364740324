"""Save and load trained models with the facts a user of the model needs beside them.

A saved model is a folder with `model.keras` and `model_info.json`. The model uses built-in tf-keras
layers only, so it loads without braintumor. The JSON file records the task, architecture,
normalisation, decision threshold, sizes and where the model came from.
"""

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODEL_FILE = "model.keras"
INFO_FILE = "model_info.json"


@dataclass
class ModelInfo:
    """Facts about a saved model: its task, architecture, input normalisation and threshold."""

    task: str
    architecture: str
    normalization: str
    image_size: int = 256
    input_size: int = 256
    threshold: float = 0.5
    version: str = ""
    # Segmenters: how probabilities become masks besides the threshold (braintumor.postprocessing).
    postprocessing: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


class ModelLoadError(ValueError):
    """A path that does not hold a braintumor model, with what was found instead."""


def save_model(model, info: ModelInfo, folder: str | Path) -> Path:
    """Write `model` and `info` to `folder`; each file goes to a temporary name and is renamed when complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"partial-{MODEL_FILE}"
    model.save(str(partial))
    partial.replace(folder / MODEL_FILE)
    partial_info = folder / f"{INFO_FILE}.partial"
    partial_info.write_text(json.dumps(asdict(info), indent=2) + "\n")
    partial_info.replace(folder / INFO_FILE)
    return folder


def load_model(folder: str | Path):
    """Load a model saved by `save_model`, without compiling it and in Keras safe mode.

    Args:
        folder: the model folder, or its `model.keras` file.

    Returns:
        (model, ModelInfo).

    Raises:
        ModelLoadError: the folder or file is missing, or is not a Keras model archive.
    """
    import tensorflow as tf

    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    model_path, info_path = folder / MODEL_FILE, folder / INFO_FILE
    if not model_path.is_file():
        raise ModelLoadError(f"{folder}: no {MODEL_FILE} here; expected a folder written by braintumor training")
    if not zipfile.is_zipfile(model_path):
        raise ModelLoadError(f"{model_path}: not a Keras model archive (.keras files are zip archives)")
    if not info_path.is_file():
        raise ModelLoadError(f"{folder}: {INFO_FILE} is missing beside {MODEL_FILE}")

    info = ModelInfo(**json.loads(info_path.read_text()))
    try:
        model = tf.keras.models.load_model(str(model_path), compile=False, safe_mode=True)
    except (ValueError, OSError, KeyError) as error:
        raise ModelLoadError(f"{model_path}: cannot load the model ({error})") from None
    return model, info
