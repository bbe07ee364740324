import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import braintumor  # noqa: F401  (selects tf-keras before TensorFlow is imported)

from braintumor.models.io import load_model
from braintumor.training.config import TrainConfig
from braintumor.training.loop import PassGate, TrainingState, epoch_steps, finished_reason

# Tiny runs: 2 workers, 32 training slices in batches of 4 per worker, a 32x32 network inside the
# model. Nearly all their time is Ray Train and TensorFlow start-up in each worker process.
TINY = {
    "batch_size": 4,
    "input_size": 32,
    "base_filters": 4,
    "limit_train": 32,
    "limit_validation": 8,
    "shuffle_buffer": 8,
    "num_workers": 2,
}


def _config(preprocessed, tmp_path, **overrides) -> TrainConfig:
    result, _ = preprocessed
    values = dict(TINY, data=str(result.output), output=str(tmp_path / "runs"))
    values.update(overrides)
    return TrainConfig(**values)


# TrainConfig


def test_config_defaults():
    config = TrainConfig(task="classify")

    assert config.architecture == "smallcnn"
    assert config.name == "classify-smallcnn"


def test_config_run_dir():
    config = TrainConfig(output="runs", name="first")

    assert str(config.run_dir) == "runs/first"


def test_config_round_trip(tmp_path):
    config = TrainConfig(task="segment", architecture="resunet", epochs=3, limit_train=10)

    path = config.save(tmp_path / "run" / "config.json")

    assert TrainConfig.from_dict(json.loads(path.read_text())) == config
    assert not path.with_name("config.json.partial").exists()


def test_config_from_dict_ignores_unknown_keys():
    config = TrainConfig.from_dict({"task": "segment", "epochs": 2, "written_by": "an older version"})

    assert config.epochs == 2


def test_config_unknown_task():
    with pytest.raises(ValueError, match=r"task must be one of \('segment', 'classify'\), got 'detect'"):
        TrainConfig(task="detect")


def test_config_architecture_of_other_task():
    with pytest.raises(ValueError, match=r"architecture for task 'segment' must be one of \('unet', 'resunet'\), got 'densenet121'"):
        TrainConfig(task="segment", architecture="densenet121")


@pytest.mark.parametrize("field", ["epochs", "batch_size", "num_workers", "input_size", "base_filters"])
def test_config_counts_at_least_one(field):
    with pytest.raises(ValueError, match=f"{field} must be at least 1, got 0"):
        TrainConfig(**{field: 0})


@pytest.mark.parametrize("learning_rate", [0.0, 1.0, -0.1])
def test_config_learning_rate_range(learning_rate):
    with pytest.raises(ValueError, match=r"learning_rate must be in \(0, 1\), got"):
        TrainConfig(learning_rate=learning_rate)


def test_config_unknown_precision():
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="float16")


CPU_INFO = """processor\t: 0
model name\t: Test CPU
flags\t\t: fpu sse2 avx2 avx512f {extra}
"""


@pytest.mark.parametrize(
    ("extra", "use_gpu", "expected"),
    [
        ("avx512_bf16", False, "mixed_bfloat16"),
        ("amx_bf16 amx_tile", False, "mixed_bfloat16"),
        ("avx512_vnni", False, "float32"),
        ("avx512_bf16", True, "float32"),
    ],
)
def test_automatic_precision(tmp_path, extra, use_gpu, expected):
    from braintumor.training.config import automatic_precision

    cpu_info = tmp_path / "cpuinfo"
    cpu_info.write_text(CPU_INFO.format(extra=extra))

    assert automatic_precision(use_gpu, cpu_info) == expected


def test_automatic_precision_without_cpu_info(tmp_path):
    from braintumor.training.config import automatic_precision

    assert automatic_precision(False, tmp_path / "missing") == "float32"


def test_config_resolves_auto_precision(monkeypatch):
    from braintumor.training import config as config_module

    monkeypatch.setattr(config_module, "cpu_has_bfloat16", lambda cpu_info=None: True)
    assert TrainConfig(precision="auto").precision == "mixed_bfloat16"
    assert TrainConfig(precision="auto", use_gpu=True).precision == "float32"
    monkeypatch.setattr(config_module, "cpu_has_bfloat16", lambda cpu_info=None: False)
    assert TrainConfig(precision="auto").precision == "float32"
    # A saved config contains the resolved value, so reloading it does not decide again.
    assert TrainConfig.from_dict(TrainConfig(precision="mixed_bfloat16").to_dict()).precision == "mixed_bfloat16"


def test_cli_precision_default_auto(monkeypatch):
    import argparse

    from braintumor.training import config as config_module
    from braintumor.training.arguments import add_training_arguments, training_options

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    options = training_options(parser.parse_args(["--task", "segment"]))
    assert options["precision"] == "auto"
    monkeypatch.setattr(config_module, "cpu_has_bfloat16", lambda cpu_info=None: True)
    assert TrainConfig(**options).precision == "mixed_bfloat16"
    options = training_options(parser.parse_args(["--task", "segment", "--precision", "float32"]))
    assert TrainConfig(**options).precision == "float32"


def test_precision_change_warning(tmp_path, caplog):
    import logging

    from braintumor.training.trainer import _warn_if_precision_changes

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    TrainConfig(precision="float32").save(run_dir / "config.json")

    with caplog.at_level(logging.WARNING, logger="braintumor.training.trainer"):
        _warn_if_precision_changes(run_dir, TrainConfig(precision="float32"))
        assert caplog.text == ""
        _warn_if_precision_changes(run_dir, TrainConfig(precision="mixed_bfloat16", name="segment-unet"))

    assert "run segment-unet trained its earlier epochs in float32 and continues in mixed_bfloat16" in caplog.text
    assert "--precision float32" in caplog.text


@pytest.mark.parametrize(("task", "architecture"), [("segment", "unet"), ("segment", "resunet"), ("classify", "smallcnn")])
def test_float32_copy_of_bfloat16_model(task, architecture):
    import tensorflow as tf

    from braintumor.training.loop import build_model, float32_copy

    config = TrainConfig(task=task, architecture=architecture, input_size=32, base_filters=4)
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_model(config)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    slices = np.random.default_rng(0).standard_normal((2, 256, 256, 3)).astype(np.float32)

    copy = float32_copy(mixed, config)

    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in mixed.layers}
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    for mixed_weight, copied_weight in zip(mixed.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(mixed_weight, copied_weight)
    # bfloat16 keeps 8 bits of mantissa, so the two differ by rounding only.
    np.testing.assert_allclose(copy.predict(slices, verbose=0), mixed.predict(slices, verbose=0), atol=0.05)
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_training_state_load(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"epochs_done": 2, "history": {"loss": [0.9, 0.7]}}))

    state = TrainingState.load(tmp_path)

    assert state.epochs_done == 2
    assert state.history == {"loss": [0.9, 0.7]}
    assert state.stopped_early is False


def test_finished_reason_all_epochs_done():
    state = TrainingState(epochs_done=20, stopped_early=False)

    reason = finished_reason(state, TrainConfig(task="segment", epochs=20))

    assert reason == "the checkpoint already finished epoch 20 of 20; raise --epochs to train further"


def test_finished_reason_stopped_early_same_patience():
    state = TrainingState(epochs_done=10, early_stopping_wait=6, stopped_early=True)

    reason = finished_reason(state, TrainConfig(task="segment", epochs=20, early_stopping_patience=6))

    assert reason is not None
    assert "stopped early after epoch 10, 6 epochs without a better val_dice" in reason
    assert "raise --patience above 6" in reason


def test_finished_reason_stopped_early_larger_patience():
    state = TrainingState(epochs_done=10, early_stopping_wait=6, stopped_early=True)

    assert finished_reason(state, TrainConfig(task="segment", epochs=20, early_stopping_patience=7)) is None


def test_finished_reason_fresh_run():
    assert finished_reason(TrainingState(), TrainConfig(task="classify", epochs=1)) is None


def test_finished_reason_last_epoch_stopped_early():
    state = TrainingState(epochs_done=20, early_stopping_wait=6, stopped_early=True)

    reason = finished_reason(state, TrainConfig(task="classify", epochs=20, early_stopping_patience=6))

    assert reason is not None
    assert "raise --epochs above 20 and --patience above 6" in reason


def test_resume_finished_checkpoint_rejected(tmp_path):
    from braintumor.training.trainer import _check_something_to_train

    (tmp_path / "state.json").write_text(json.dumps({"epochs_done": 5}))
    config = TrainConfig(task="classify", epochs=5)

    with pytest.raises(ValueError, match=r"nothing to train from --resume .*: the checkpoint already finished epoch 5 of 5"):
        _check_something_to_train(str(tmp_path), config)


def test_resume_unfinished_checkpoint_accepted(tmp_path):
    from braintumor.training.trainer import _check_something_to_train

    (tmp_path / "state.json").write_text(json.dumps({"epochs_done": 5}))

    assert _check_something_to_train(str(tmp_path), TrainConfig(task="classify", epochs=6)) is None


@pytest.mark.timeout(600)
def test_train_without_preprocessed_data(ray_local, tmp_path):
    from braintumor.training.trainer import train

    config = TrainConfig(data=str(tmp_path / "empty"), output=str(tmp_path / "runs"), **TINY)

    with pytest.raises(FileNotFoundError, match=r"preprocessed train split not found; run jobs/preprocess.py --output .*empty first"):
        train(config)


# End-to-end runs through Ray Train


@pytest.fixture(scope="module")
def segment_run(preprocessed, tmp_path_factory):
    """A 2-epoch segmenter run; returns (config, result, history read right after the run)."""
    from braintumor.training.trainer import train

    config = _config(preprocessed, tmp_path_factory.mktemp("segment"), task="segment", name="seg", epochs=2)
    result = train(config)
    history = json.loads((result.run_dir / "history.json").read_text())
    return config, result, history


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_segment_run_outputs(segment_run):
    config, result, history = segment_run

    assert result.run_dir == config.run_dir.resolve()
    assert result.epochs_done == 2
    assert result.best_epoch in (1, 2)
    for name in ("config.json", "split.json", "history.json"):
        assert (result.run_dir / name).is_file(), name
    assert json.loads((result.run_dir / "config.json").read_text())["epochs"] == 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_segment_run_history(segment_run):
    _, _, history = segment_run

    for key in ("loss", "dice", "val_loss", "val_dice", "learning_rate", "seconds", "seconds_between_epochs"):
        assert len(history[key]) == 2, key
    assert all(np.isfinite(history["loss"]))
    # The checkpoint between the two epochs takes time; the first epoch of a process has no gap.
    assert history["seconds_between_epochs"][0] == 0.0
    assert history["seconds_between_epochs"][1] > 0.0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_segment_run_split_copied(segment_run, preprocessed):
    result, _ = preprocessed
    _, run, _ = segment_run

    assert (run.run_dir / "split.json").read_text() == (result.output / "split.json").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_segment_run_model_loads(segment_run):
    _, result, _ = segment_run
    slices = np.random.default_rng(0).standard_normal((2, 256, 256, 3)).astype(np.float32)

    model, info = load_model(result.model_dir)
    probability = model.predict(slices, verbose=0)

    assert probability.shape == (2, 256, 256, 1)
    assert probability.min() >= 0.0
    assert probability.max() <= 1.0
    assert info.task == "segment"
    assert info.architecture == "unet"
    assert info.input_size == 32
    assert info.extra["best_epoch"] == result.best_epoch


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_segment_run_resumes(segment_run):
    from braintumor.training.trainer import train

    config, _, first_history = segment_run
    resumed_config = TrainConfig.from_dict(dict(config.to_dict(), epochs=3))

    result = train(resumed_config)

    history = json.loads((result.run_dir / "history.json").read_text())
    assert result.epochs_done == 3
    assert len(history["loss"]) == 3
    assert history["loss"][:2] == first_history["loss"]
    assert history["seconds_between_epochs"][2] == 0.0
    assert json.loads((result.run_dir / "config.json").read_text())["epochs"] == 3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_classify_run(preprocessed, tmp_path):
    from braintumor.training.trainer import train

    # Trained under mixed_bfloat16, so this run also checks that the saved model computes in float32.
    config = _config(
        preprocessed, tmp_path, task="classify", name="cls", epochs=1, limit_train=16, limit_validation=8,
        precision="mixed_bfloat16",
    )

    result = train(config)

    history = json.loads((result.run_dir / "history.json").read_text())
    for key in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"):
        assert len(history[key]) == 1, key
    model, info = load_model(result.model_dir)
    slices = np.random.default_rng(0).standard_normal((3, 256, 256, 3)).astype(np.float32)
    probability = model.predict(slices, verbose=0)
    assert probability.shape == (3, 1)
    assert probability.min() >= 0.0
    assert probability.max() <= 1.0
    assert info.task == "classify"
    assert info.architecture == "smallcnn"
    assert info.extra["training_precision"] == "mixed_bfloat16"
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}


# The training datasets


def _epoch_rows(dataset) -> list[tuple[str, int]]:
    rows = dataset.select_columns(["patient_id", "slice_number"]).take_all()
    return sorted((row["patient_id"], row["slice_number"]) for row in rows)


def _split_folders(preprocessed) -> dict:
    from braintumor.evaluation.report import preprocessed_split

    result, _ = preprocessed
    return {split: preprocessed_split(result.output, split) for split in ("train", "validation")}


def test_training_datasets_without_repeats(preprocessed, tmp_path):
    from braintumor.training.trainer import training_datasets

    folders = _split_folders(preprocessed)
    config = _config(preprocessed, tmp_path, task="classify", tumour_copies=0, limit_train=None, limit_validation=None)

    datasets = training_datasets(config, folders)

    stored = pq.read_table(folders["train"], columns=["patient_id", "slice_number"]).to_pylist()
    expected = sorted((row["patient_id"], row["slice_number"]) for row in stored)
    assert _epoch_rows(datasets["train"]) == expected
    # Every epoch reads the whole split again.
    assert _epoch_rows(datasets["train"]) == expected


def test_training_datasets_repeat_tumours(preprocessed, tmp_path):
    from braintumor.training.trainer import training_datasets

    folders = _split_folders(preprocessed)
    config = _config(preprocessed, tmp_path, task="segment", tumour_copies=2, limit_train=None, limit_validation=None)

    rows = _epoch_rows(training_datasets(config, folders)["train"])

    stored = pq.read_table(folders["train"], columns=["patient_id", "slice_number", "label"]).to_pylist()
    counts = {(row["patient_id"], row["slice_number"]): rows.count((row["patient_id"], row["slice_number"])) for row in stored}
    assert all(counts[(row["patient_id"], row["slice_number"])] == (3 if row["label"] else 1) for row in stored)
    assert len(rows) == len(stored) + 2 * sum(row["label"] for row in stored)


def test_epoch_steps_full_batches():
    config = TrainConfig(task="segment", batch_size=16, num_workers=2)

    # 201 rows: 100 per worker, 3 batches of 32 (4 rows dropped), each 2 steps of 16.
    assert epoch_steps(201, config) == 6
    assert epoch_steps(64, config) == 2
    # Counts that runs with a new finite dataset every epoch logged: 2,206 slices without tumour
    # copies, and a fold of 2,197 slices whose 757 tumour slices were copied once.
    assert epoch_steps(2206, config) == 68
    assert epoch_steps(2197 + 757, config) == 92


def test_epoch_steps_partial_batch():
    config = TrainConfig(task="segment", batch_size=16, num_workers=2)

    assert epoch_steps(10, config) is None


def test_epoch_steps_too_few_rows():
    config = TrainConfig(task="segment", batch_size=16, num_workers=2)

    with pytest.raises(ValueError, match="1 training slice"):
        epoch_steps(1, config)


def test_epoch_rows_tumour_copies(preprocessed, tmp_path):
    from braintumor.training.trainer import epoch_rows

    folder = _split_folders(preprocessed)["train"]
    labels = pq.read_table(folder, columns=["label"])["label"].to_pylist()
    config = _config(preprocessed, tmp_path, task="segment", tumour_copies=2, limit_train=None)

    assert sum(labels) > 0
    assert epoch_rows(config, folder) == len(labels) + 2 * sum(labels)


def test_epoch_rows_limit(preprocessed, tmp_path):
    from braintumor.training.trainer import epoch_rows

    folder = _split_folders(preprocessed)["train"]
    labels = pq.read_table(folder, columns=["label"])["label"].to_pylist()
    config = _config(preprocessed, tmp_path, task="segment", tumour_copies=1, limit_train=10)

    assert epoch_rows(config, folder) == 10 + sum(labels[:10])


def test_pass_gate_decisions_in_order():
    gate = PassGate()

    gate.epoch_ended(True)
    gate.epoch_ended(False)

    assert gate.another_pass() is True
    assert gate.another_pass() is False


def test_pass_gate_close_ends_waiting_pass():
    gate = PassGate()

    gate.close()

    assert gate.another_pass() is False


def test_training_datasets_limits(preprocessed, tmp_path):
    from braintumor.training.trainer import training_datasets

    config = _config(preprocessed, tmp_path, task="classify", tumour_copies=0, limit_train=10, limit_validation=4)

    datasets = training_datasets(config, _split_folders(preprocessed))

    assert datasets["train"].count() == 10
    assert datasets["validation"].count() == 4
