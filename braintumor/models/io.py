"""Save and load trained models with the facts a user of the model needs beside them.

A saved model is a folder with `model.keras` and `model_info.json`, on the local disk or under an
`s3://` prefix. The model uses built-in tf-keras layers only, so it loads without braintumor. The
JSON file records the task, architecture, normalisation, decision threshold, sizes and where the
model came from.
"""

import dataclasses
import json
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from braintumor import locations, s3

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


def save_model(model, info: ModelInfo, folder: str | Path) -> str | Path:
    """Write `model` and `info` to the folder or S3 prefix `folder`; each file is replaced whole.

    Locally each file goes to a temporary name and is renamed when complete. For S3 the files are
    written to a temporary folder, then uploaded one object each, `model.keras` first.

    Returns:
        `folder`, as a Path locally and as a URI string for S3.
    """
    if s3.is_s3(folder):
        with tempfile.TemporaryDirectory(prefix="braintumor-model-") as staging:
            _save_local(model, info, Path(staging))
            for name in (MODEL_FILE, INFO_FILE):
                locations.write_bytes(locations.join(folder, name), (Path(staging) / name).read_bytes())
        return str(folder)
    return _save_local(model, info, Path(folder))


def _save_local(model, info: ModelInfo, folder: Path) -> Path:
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
        folder: the model folder or its `model.keras` file, local or `s3://`. An S3 model is
            downloaded to a temporary folder first.

    Returns:
        (model, ModelInfo).

    Raises:
        ModelLoadError: the folder or file is missing, or is not a Keras model archive.
        s3.S3Error: the bucket is missing or S3 cannot be read, naming the bucket and key.
    """
    if s3.is_s3(folder):
        return _load_from_s3(str(folder))
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    return _load_local(folder, location=folder)


def _load_from_s3(uri: str):
    if locations.name(uri) == MODEL_FILE:
        uri = str(locations.parent(uri))
    with tempfile.TemporaryDirectory(prefix="braintumor-model-") as staging:
        for name in (MODEL_FILE, INFO_FILE):
            # is_file() is False for a missing object but raises for a missing bucket, so a wrong
            # bucket name is reported as such rather than as a missing model file.
            source = locations.join(uri, name)
            if locations.is_file(source):
                (Path(staging) / name).write_bytes(locations.read_bytes(source))
        return _load_local(Path(staging), location=uri)


def _load_local(folder: Path, location: str | Path):
    """Load the model in the local `folder`. Error messages name `location`, the folder or S3 prefix the caller gave."""
    import tensorflow as tf

    model_path, info_path = folder / MODEL_FILE, folder / INFO_FILE
    model_location = locations.join(location, MODEL_FILE)
    if not model_path.is_file():
        raise ModelLoadError(f"{location}: no {MODEL_FILE} here; expected a folder written by braintumor training")
    if not zipfile.is_zipfile(model_path):
        raise ModelLoadError(f"{model_location}: not a Keras model archive (.keras files are zip archives)")
    if not info_path.is_file():
        raise ModelLoadError(f"{location}: {INFO_FILE} is missing beside {MODEL_FILE}")

    info = parse_model_info(info_path.read_text(), locations.join(location, INFO_FILE))
    try:
        model = tf.keras.models.load_model(str(model_path), compile=False, safe_mode=True)
    except (ValueError, OSError, KeyError) as error:
        raise ModelLoadError(f"{model_location}: cannot load the model ({error})") from None
    return model, info


ARCHITECTURE_FILE = "architecture.txt"


def architecture_summary(model, info: ModelInfo) -> str:
    """Return a text summary of `model`: its version and task, then Keras's table of layers, output shapes and parameters."""
    table = []
    model.summary(line_length=120, print_fn=lambda text, *args, **kwargs: table.extend(text.splitlines()))
    # Keras pads every line to the full width and separates the layers with blank lines.
    rows = [row.rstrip() for row in table if row.strip()]
    return "\n".join([f"{info.version}: {info.architecture} {info.task} model", "", *rows]) + "\n"


def parse_model_info(text: str, info_location: str | Path) -> ModelInfo:
    """Parse the contents of a model_info.json. Errors name `info_location`, the file it came from.

    Raises:
        ModelLoadError: the text is not valid JSON, not an object, misses a required field or has
            a field this version does not know.
    """
    try:
        fields = json.loads(text)
    except ValueError as error:
        raise ModelLoadError(f"{info_location}: invalid JSON ({error})") from None
    if not isinstance(fields, dict):
        raise ModelLoadError(f"{info_location}: expected a JSON object, found {type(fields).__name__}")
    known = {item.name for item in dataclasses.fields(ModelInfo)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ModelLoadError(
            f"{info_location}: unknown field(s) {unknown}; the model may come from a newer braintumor version"
        )
    required = {
        item.name
        for item in dataclasses.fields(ModelInfo)
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(fields))
    if missing:
        raise ModelLoadError(f"{info_location}: required field(s) {missing} missing")
    return ModelInfo(**fields)


WEIGHTS_ENTRY = "model.weights.h5"
FLOAT16_MAX = 65504.0


def store_weights_as_float16(model_file: Path) -> tuple[int, int]:
    """Rewrite a local `model.keras` so that its float32 weights are stored as float16, in place.

    Keras casts them back to float32 when it loads the model, so the model still computes in
    float32. Only the stored values lose precision (float16 keeps about three significant
    digits), and the file is about half as large. Arrays with a value outside float16's range
    stay float32. The file is replaced whole, after the new one is complete.

    Returns:
        (arrays stored as float16, arrays kept as they were).

    Raises:
        FileNotFoundError: `model_file` does not exist.
        ModelLoadError: the file is not a Keras archive with a weights file.
    """
    import io

    import h5py
    import numpy as np

    if not model_file.exists():
        raise FileNotFoundError(f"{model_file}: model file not found")
    if not zipfile.is_zipfile(model_file):
        raise ModelLoadError(f"{model_file}: not a Keras model archive (.keras files are zip archives)")
    with zipfile.ZipFile(model_file) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    if WEIGHTS_ENTRY not in entries:
        raise ModelLoadError(f"{model_file}: no {WEIGHTS_ENTRY} inside, so it is not a Keras model archive")

    counts = {"float16": 0, "kept": 0}
    rewritten = io.BytesIO()
    with h5py.File(io.BytesIO(entries[WEIGHTS_ENTRY]), "r") as source, h5py.File(rewritten, "w") as target:
        target.attrs.update(source.attrs)

        def copy(name: str, item) -> None:
            if isinstance(item, h5py.Group):
                target.require_group(name).attrs.update(item.attrs)
                return
            values = item[()]
            in_range = values.dtype == np.float32 and np.all(np.isfinite(values)) and np.all(np.abs(values) <= FLOAT16_MAX)
            if in_range:
                values = values.astype(np.float16)
            counts["float16" if in_range else "kept"] += 1
            target.create_dataset(name, data=values).attrs.update(item.attrs)

        source.visititems(copy)
    entries[WEIGHTS_ENTRY] = rewritten.getvalue()

    partial = model_file.with_name(f"partial-{model_file.name}")
    with zipfile.ZipFile(partial, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    partial.replace(model_file)
    return counts["float16"], counts["kept"]
