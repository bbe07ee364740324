"""Training, model loading, evaluation and tuning with data, runs and models in S3 (a moto server on 127.0.0.1)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import braintumor  # noqa: F401  (selects tf-keras before TensorFlow is imported)

from braintumor import s3
from braintumor.models.io import INFO_FILE, MODEL_FILE, ModelInfo, ModelLoadError, load_model, save_model
from braintumor.preprocessing.normalization import NORMALIZATION
from braintumor.training.config import TrainConfig
from braintumor.training.loop import CHECKPOINT_MODEL, CHECKPOINT_STATE, TrainingState

JOBS = Path(__file__).resolve().parents[2] / "jobs"

# The sizes of the tiny runs in tests/training: 2 workers, batches of 4 per worker, a 32x32
# network inside the model; 16 training and 8 validation slices.
TINY = {
    "batch_size": 4,
    "input_size": 32,
    "base_filters": 4,
    "limit_train": 16,
    "limit_validation": 8,
    "shuffle_buffer": 8,
    "num_workers": 2,
}


def _new_bucket(prefix: str) -> str:
    name = f"{prefix}-{os.urandom(3).hex()}"
    s3.client().create_bucket(Bucket=name)
    return f"s3://{name}"


def _keys(uri: str) -> list[str]:
    """Return the keys under the folder `uri`, relative to it."""
    folder_key = s3.S3Uri.parse(uri).folder_key
    return [s3.S3Uri.parse(item).key[len(folder_key):] for item in s3.list_objects(uri)]


def _read_json(uri: str):
    return json.loads(s3.read_bytes(uri))


def _numbers_equal(found, expected, path="metrics"):
    """Assert two JSON values are equal, floats to 1e-6 (batches may be cut differently between reads)."""
    if isinstance(expected, dict):
        assert sorted(found) == sorted(expected), path
        for key in expected:
            _numbers_equal(found[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(found) == len(expected), path
        for index, (item, expected_item) in enumerate(zip(found, expected)):
            _numbers_equal(item, expected_item, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert found == pytest.approx(expected, rel=1e-6, abs=1e-9), path
    else:
        assert found == expected, path


@pytest.fixture(scope="module")
def s3_data(s3_server, preprocessed):
    """The five preprocessed patients uploaded to a bucket; returns (S3 URI, local folder)."""
    result, _ = preprocessed
    bucket = _new_bucket("preprocessed")
    uri = f"{bucket}/pre"
    s3.upload_folder(result.output, uri)
    return uri, result.output


@pytest.fixture(scope="module")
def tiny_segmenter(tmp_path_factory):
    """An untrained segmenter saved locally as training saves it."""
    from braintumor.models.segmentation import build_segmenter

    return save_model(
        build_segmenter(input_size=32, base_filters=4, depth=2),
        ModelInfo(task="segment", architecture="unet", normalization=NORMALIZATION, input_size=32, version="tiny-seg"),
        tmp_path_factory.mktemp("models") / "segmenter",
    )


@pytest.fixture
def slices():
    return np.random.default_rng(0).standard_normal((2, 256, 256, 3)).astype(np.float32)


# Model folders in S3


def test_load_model_from_s3(tiny_segmenter, s3_bucket, slices):
    s3.upload_folder(tiny_segmenter, f"{s3_bucket}/models/seg")
    local_model, local_info = load_model(tiny_segmenter)

    model, info = load_model(f"{s3_bucket}/models/seg")

    assert info == local_info
    np.testing.assert_array_equal(model.predict(slices, verbose=0), local_model.predict(slices, verbose=0))


def test_load_model_from_s3_model_file(tiny_segmenter, s3_bucket):
    s3.upload_folder(tiny_segmenter, f"{s3_bucket}/seg")

    _, info = load_model(f"{s3_bucket}/seg/{MODEL_FILE}")

    assert info.version == "tiny-seg"


def test_save_model_to_s3(tiny_segmenter, s3_bucket, slices):
    local_model, local_info = load_model(tiny_segmenter)

    returned = save_model(local_model, local_info, f"{s3_bucket}/runs/a/model")

    assert returned == f"{s3_bucket}/runs/a/model"
    assert sorted(_keys(returned)) == sorted([INFO_FILE, MODEL_FILE])
    assert ModelInfo(**_read_json(f"{returned}/{INFO_FILE}")) == local_info
    model, _ = load_model(returned)
    np.testing.assert_array_equal(model.predict(slices, verbose=0), local_model.predict(slices, verbose=0))


def test_load_s3_text_named_model_keras(s3_bucket):
    s3.write_bytes(f"{s3_bucket}/model/{MODEL_FILE}", b"not a model\n")
    s3.write_bytes(f"{s3_bucket}/model/{INFO_FILE}", b"{}")

    with pytest.raises(ModelLoadError) as raised:
        load_model(f"{s3_bucket}/model")

    assert str(raised.value) == (
        f"{s3_bucket}/model/{MODEL_FILE}: not a Keras model archive (.keras files are zip archives)"
    )


def test_load_s3_folder_without_model(s3_bucket):
    s3.write_bytes(f"{s3_bucket}/model/notes.txt", b"weights are elsewhere\n")

    with pytest.raises(ModelLoadError) as raised:
        load_model(f"{s3_bucket}/model")

    assert str(raised.value) == f"{s3_bucket}/model: no {MODEL_FILE} here; expected a folder written by braintumor training"


def test_load_s3_model_without_info(tiny_segmenter, s3_bucket):
    s3.write_bytes(f"{s3_bucket}/model/{MODEL_FILE}", (tiny_segmenter / MODEL_FILE).read_bytes())

    with pytest.raises(ModelLoadError, match=f"^{s3_bucket}/model: {INFO_FILE} is missing beside {MODEL_FILE}$"):
        load_model(f"{s3_bucket}/model")


def test_load_missing_s3_prefix(s3_bucket):
    with pytest.raises(ModelLoadError, match=f"^{s3_bucket}/no/such/model: no {MODEL_FILE} here"):
        load_model(f"{s3_bucket}/no/such/model")


def test_load_model_missing_bucket(s3_server):
    with pytest.raises(s3.S3NotFoundError) as raised:
        load_model("s3://no-such-bucket-for-models/model")

    assert "no-such-bucket-for-models" in str(raised.value)
    assert "not found" in str(raised.value)


def test_evaluate_job_missing_s3_model(s3_bucket, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "BRAINTUMOR_DATA", "BRAINTUMOR_OUTPUT")}

    completed = subprocess.run(
        [sys.executable, str(JOBS / "evaluate.py"), "--model", f"{s3_bucket}/runs/missing/model", "--data", f"{s3_bucket}/pre"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280,
    )

    assert completed.returncode == 2
    errors = [line for line in completed.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, completed.stderr[-3000:]
    assert f"{s3_bucket}/runs/missing/model: no {MODEL_FILE} here" in errors[0]
    assert s3.list_objects(s3_bucket) == []


# Training configuration and input checks


def test_config_run_dir_in_s3():
    config = TrainConfig(output="s3://bucket/runs", name="first")

    assert config.run_dir == "s3://bucket/runs/first"


def test_config_save_to_s3(s3_bucket):
    config = TrainConfig(data=f"{s3_bucket}/pre", output=f"{s3_bucket}/runs", epochs=3)

    config.save(f"{config.run_dir}/config.json")

    assert TrainConfig.from_dict(_read_json(f"{s3_bucket}/runs/segment-unet/config.json")) == config


def test_train_s3_split_without_manifest(s3_bucket):
    from braintumor.training.trainer import train

    # Shards without _manifest.json: a split whose upload has not finished.
    s3.write_bytes(f"{s3_bucket}/pre/parquet/train/part-0.parquet", b"PAR1")
    config = TrainConfig(data=f"{s3_bucket}/pre", output=f"{s3_bucket}/runs", **TINY)

    with pytest.raises(FileNotFoundError) as raised:
        train(config)

    assert str(raised.value) == (
        f"{s3_bucket}/pre/parquet/train: preprocessed train split not found; "
        f"run jobs/preprocess.py --output {s3_bucket}/pre first"
    )
    assert _keys(s3_bucket) == ["pre/parquet/train/part-0.parquet"]


def test_train_missing_s3_checkpoint(s3_data):
    from braintumor.training.trainer import train

    data, _ = s3_data
    bucket = data.rsplit("/", 1)[0]
    config = TrainConfig(data=data, output=f"{bucket}/runs", resume=f"{bucket}/no/checkpoint", **TINY)

    with pytest.raises(FileNotFoundError, match=f"^{bucket}/no/checkpoint: not a checkpoint folder \\(no {CHECKPOINT_MODEL} inside\\)$"):
        train(config)


# Evaluation and tuning with S3 data, models and reports


def test_evaluate_s3_matches_local(s3_data, tiny_segmenter, s3_bucket, tmp_path):
    from braintumor.evaluation.report import evaluate

    data, local_data = s3_data
    model = f"{s3_bucket}/runs/seg/model"
    s3.upload_folder(tiny_segmenter, model)
    history = {"loss": [0.9, 0.7], "val_loss": [1.0, 0.8], "dice": [0.3, 0.5], "val_dice": [0.2, 0.4]}

    local = evaluate(tiny_segmenter, local_data, tmp_path / "local", split="test", history=history)
    report = evaluate(model, data, f"{s3_bucket}/runs/seg/evaluation", split="test", history=history)

    written = _read_json(f"{s3_bucket}/runs/seg/evaluation/metrics.json")
    local_written = json.loads((tmp_path / "local" / "metrics.json").read_text())
    for found in (written, local_written, report, local):
        found.pop("seconds")  # wall time, the one figure that differs
    _numbers_equal(written, local_written)
    _numbers_equal(report, local)

    assert sorted(_keys(f"{s3_bucket}/runs/seg/evaluation")) == sorted(path.name for path in (tmp_path / "local").iterdir())
    for name in ("per_patient.csv", "predictions.csv"):
        found = pd.read_csv(io.BytesIO(s3.read_bytes(f"{s3_bucket}/runs/seg/evaluation/{name}")))
        expected = pd.read_csv(tmp_path / "local" / name)
        pd.testing.assert_frame_equal(found, expected, rtol=1e-6)
    for name in ("overlays.png", "per_patient_dice.png", "training_curves.png"):
        assert s3.read_bytes(f"{s3_bucket}/runs/seg/evaluation/{name}")[:8] == b"\x89PNG\r\n\x1a\n", name


def test_evaluate_to_s3_keeps_other_objects(s3_data, tiny_segmenter, s3_bucket):
    from braintumor.evaluation.report import evaluate

    data, _ = s3_data
    s3.write_bytes(f"{s3_bucket}/report/notes.txt", b"kept\n")

    evaluate(tiny_segmenter, data, f"{s3_bucket}/report", split="validation")

    assert s3.read_bytes(f"{s3_bucket}/report/notes.txt") == b"kept\n"
    assert _read_json(f"{s3_bucket}/report/metrics.json")["split"] == "validation"


def test_evaluate_missing_s3_split(tiny_segmenter, s3_bucket):
    from braintumor.evaluation.report import evaluate

    with pytest.raises(FileNotFoundError, match=f"^{s3_bucket}/pre/parquet/test: preprocessed test split not found"):
        evaluate(tiny_segmenter, f"{s3_bucket}/pre", f"{s3_bucket}/report")

    assert s3.list_objects(s3_bucket) == []


def test_tune_s3_model_matches_local(s3_data, tiny_segmenter, s3_bucket, tmp_path):
    import shutil

    from braintumor.evaluation.tuning import TUNING_FILE, tune

    data, local_data = s3_data
    model = f"{s3_bucket}/models/seg"
    s3.upload_folder(tiny_segmenter, model)
    local_model = shutil.copytree(tiny_segmenter, tmp_path / "model")

    local = tune(local_model, local_data)
    summary = tune(model, data)

    _numbers_equal(summary, local)
    _numbers_equal(_read_json(f"{model}/{TUNING_FILE}"), json.loads((local_model / TUNING_FILE).read_text()))
    _, info = load_model(model)
    assert info.threshold == summary["chosen"]["threshold"]
    assert info.postprocessing["min_component_pixels"] == summary["chosen"]["min_component_pixels"]


# Ray Train runs with the data, checkpoints and model in S3


@pytest.fixture(scope="module")
def s3_run(s3_data):
    """A 1-epoch segmenter run from S3 data into S3; returns (config, result, run objects, history)."""
    from braintumor.training.trainer import train

    data, _ = s3_data
    bucket = data.rsplit("/", 1)[0]
    config = TrainConfig(task="segment", data=data, output=f"{bucket}/runs", name="seg", epochs=1, **TINY)
    result = train(config)
    return config, result, _keys(result.run_dir), _read_json(f"{result.run_dir}/history.json")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_run_checkpoint_in_s3(s3_run):
    config, result, keys, _ = s3_run

    assert result.run_dir == config.run_dir
    checkpoints = sorted(key.rsplit("/", 1)[0] for key in keys if key.endswith(f"/{CHECKPOINT_STATE}"))
    assert len(checkpoints) == 1, keys
    assert checkpoints[0].startswith("checkpoints/checkpoint_")
    assert f"{checkpoints[0]}/{CHECKPOINT_MODEL}" in keys
    assert "checkpoints/checkpoint_manager_snapshot.json" in keys
    state = TrainingState(**_read_json(f"{result.run_dir}/{checkpoints[0]}/{CHECKPOINT_STATE}"))
    assert state.epochs_done == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_run_files(s3_run, s3_data):
    config, result, keys, history = s3_run
    _, local_data = s3_data

    for name in ("config.json", "split.json", "history.json", f"model/{MODEL_FILE}", f"model/{INFO_FILE}"):
        assert name in keys, name
    saved = _read_json(f"{result.run_dir}/config.json")
    assert saved["data"] == config.data
    assert saved["output"] == config.output
    assert saved["epochs"] == 1
    assert s3.read_bytes(f"{result.run_dir}/split.json") == (local_data / "split.json").read_bytes()
    for key in ("loss", "dice", "val_loss", "val_dice"):
        assert len(history[key]) == 1, key
    assert result.epochs_done == 1
    assert result.model_dir == f"{config.run_dir}/model"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_run_model_loads_and_predicts(s3_run, slices):
    _, result, _, _ = s3_run

    model, info = load_model(result.model_dir)
    probability = model.predict(slices, verbose=0)

    assert probability.shape == (2, 256, 256, 1)
    assert probability.min() >= 0.0
    assert probability.max() <= 1.0
    assert info.task == "segment"
    assert info.input_size == 32
    assert info.extra["best_epoch"] == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_new_run_resumes_s3_checkpoint(s3_run, s3_data):
    from braintumor.training.trainer import train

    config, first, keys, first_history = s3_run
    _, local_data = s3_data
    checkpoint = next(key.rsplit("/", 1)[0] for key in keys if key.endswith(f"/{CHECKPOINT_STATE}"))
    other = TrainConfig.from_dict(
        dict(config.to_dict(), data=str(local_data), name="continued", epochs=2, resume=f"{first.run_dir}/{checkpoint}")
    )

    result = train(other)

    history = _read_json(f"{result.run_dir}/history.json")
    assert result.run_dir == f"{config.output}/continued"
    assert result.epochs_done == 2
    assert len(history["loss"]) == 2
    # Epoch 1 comes from the checkpoint: its wall time is copied, which a retrained epoch would not repeat.
    assert history["seconds"][:1] == first_history["seconds"]
    assert history["loss"][:1] == first_history["loss"]
    _, info = load_model(result.model_dir)
    assert info.version.startswith("braintumor-")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_run_rerun_continues(s3_run):
    from braintumor.training.trainer import train

    config, _, _, first_history = s3_run
    resumed_config = TrainConfig.from_dict(dict(config.to_dict(), epochs=2))

    result = train(resumed_config)

    history = _read_json(f"{result.run_dir}/history.json")
    assert result.epochs_done == 2
    assert len(history["loss"]) == 2
    assert history["seconds"][:1] == first_history["seconds"]
    assert history["loss"][:1] == first_history["loss"]
    assert _read_json(f"{result.run_dir}/config.json")["epochs"] == 2
