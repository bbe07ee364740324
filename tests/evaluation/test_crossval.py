import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import braintumor  # noqa: F401  (selects tf-keras before TensorFlow is imported)

from braintumor.data.split import save_split
from braintumor.evaluation.crossval import (
    SUMMARY_JSON,
    SUMMARY_MARKDOWN,
    FOLD_DONE,
    CrossValidationConfig,
    _write_fold_split,
    cross_validate,
    fold_folder,
    summarize_folds,
    summary_markdown,
)


def _write_fold(output, fold, task, table, threshold=0.5):
    """Write the evaluation files of one fold as the evaluation report does, with only the read fields."""
    evaluation = fold_folder(output, fold) / "evaluation"
    evaluation.mkdir(parents=True)
    report = {
        "model": {"task": task, "architecture": "unet" if task == "segment" else "smallcnn", "version": f"v{fold}", "threshold": threshold},
        "n_patients": int(table["patient_id"].nunique()),
        "n_slices": len(table),
    }
    if task == "segment":
        report["segmentation"] = {"dice_mean": table["dice"].mean(), "dice_median": table["dice"].median(), "iou_mean": table["iou"].mean()}
        table.to_csv(evaluation / "per_patient.csv", index=False)
    else:
        report["classification"] = {"roc_auc": 0.5, "f1": 0.5, "threshold": threshold}
        table.to_csv(evaluation / "predictions.csv", index=False)
    (evaluation / "metrics.json").write_text(json.dumps(report))


def test_summary_pools_segment_patients(tmp_path):
    _write_fold(tmp_path, 1, "segment", pd.DataFrame({"patient_id": ["A", "B"], "dice": [0.9, 0.7], "iou": [0.8, 0.5]}))
    _write_fold(tmp_path, 2, "segment", pd.DataFrame({"patient_id": ["C"], "dice": [0.2], "iou": [0.1]}))

    summary = summarize_folds(tmp_path, folds=2)

    assert summary["pooled"]["patients"] == 3
    assert summary["pooled"]["dice_mean"] == pytest.approx(0.6)
    assert summary["pooled"]["dice_median"] == pytest.approx(0.7)
    assert summary["pooled"]["dice_mean_95ci"][0] <= 0.6 <= summary["pooled"]["dice_mean_95ci"][1]
    assert [row["dice_mean"] for row in summary["per_fold"]] == pytest.approx([0.8, 0.2])
    assert summary["across_folds"]["dice_mean"]["mean"] == pytest.approx(0.5)
    assert summary["across_folds"]["dice_mean"]["std"] == pytest.approx(np.std([0.8, 0.2], ddof=1))


def test_summary_labels_with_fold_thresholds(tmp_path):
    # Fold 1 labels 0.6 positive at its threshold 0.5, fold 2 labels 0.6 negative at 0.7.
    _write_fold(tmp_path, 1, "classify", pd.DataFrame({"patient_id": ["A", "A"], "label": [1, 0], "probability": [0.6, 0.1]}), 0.5)
    _write_fold(tmp_path, 2, "classify", pd.DataFrame({"patient_id": ["B", "B"], "label": [1, 0], "probability": [0.6, 0.2]}), 0.7)

    summary = summarize_folds(tmp_path, folds=2)

    # One true positive, one false negative, no false positive: F1 = 2 / (2 + 1).
    assert summary["pooled"]["f1"] == pytest.approx(2 / 3)
    assert summary["pooled"]["roc_auc"] == pytest.approx(1.0)
    assert summary["pooled"]["slices"] == 4


def test_summary_markdown_lists_folds(tmp_path):
    _write_fold(tmp_path, 1, "segment", pd.DataFrame({"patient_id": ["A"], "dice": [0.9], "iou": [0.8]}))
    _write_fold(tmp_path, 2, "segment", pd.DataFrame({"patient_id": ["B"], "dice": [0.5], "iou": [0.4]}))

    text = summary_markdown(summarize_folds(tmp_path, folds=2))

    assert "| 1 | 1 | 1 | 0.900 | 0.900 | 0.800 |" in text
    assert "| 2 | 1 | 1 | 0.500 | 0.500 | 0.400 |" in text
    assert "Pooled over 2 test patients: mean Dice per patient 0.700" in text


def test_fold_split_of_other_run_rejected(tmp_path):
    path = tmp_path / "fold-1" / "split.json"
    save_split({"train": ["A"], "validation": ["B"], "test": ["C"]}, path)

    with pytest.raises(ValueError, match=r"fold-1/split.json contains another patient split"):
        _write_fold_split({"train": ["B"], "validation": ["A"], "test": ["C"]}, path, seed=0)


def _fake_train(calls):
    """Return a stand-in for `train` that saves an untrained tiny segmenter, as a finished run would."""
    from braintumor.models.io import ModelInfo, save_model
    from braintumor.models.segmentation import build_segmenter
    from braintumor.preprocessing.normalization import NORMALIZATION

    def train(config):
        calls.append(config.data)
        info = ModelInfo(task="segment", architecture="unet", normalization=NORMALIZATION, input_size=32, version="untrained")
        save_model(build_segmenter(input_size=32, base_filters=4), info, Path(config.run_dir) / "model")
        (Path(config.run_dir) / "history.json").write_text(json.dumps({"loss": [1.0]}))

    return train


@pytest.mark.slow
def test_cross_validate_two_folds_then_resume(make_fake_dataset, ray_local, tmp_path, monkeypatch):
    # Training is replaced by an untrained model (tests/training covers it), so this checks the
    # folds, the preprocessing, tuning and evaluation of each fold, the summary and the rerun.
    calls = []
    monkeypatch.setattr("braintumor.training.trainer.train", _fake_train(calls))
    # Six fake patients, each with a tumour on slice 2: each fold tests 3, validates on 1 and trains on 2.
    data = make_fake_dataset(n_patients=6, n_slices=3)
    output = tmp_path / "cv"
    config = CrossValidationConfig(data=str(data), output=str(output), task="segment", folds=2)

    summary = cross_validate(config)

    tested = [json.loads((fold_folder(output, fold) / "split.json").read_text())["test"] for fold in (1, 2)]
    assert sorted(tested[0] + tested[1]) == [f"FAKE_{number}" for number in range(6)]
    assert not set(tested[0]) & set(tested[1])
    assert summary["pooled"]["patients"] == 6
    assert [row["patients"] for row in summary["per_fold"]] == [3, 3]
    assert json.loads((output / SUMMARY_JSON).read_text()) == summary
    assert summary["settings"]["seed"] == 0
    assert (output / SUMMARY_MARKDOWN).is_file()
    assert calls == [str(fold_folder(output, 1)), str(fold_folder(output, 2))]

    # A rerun after a kill during fold 2's evaluation: fold 1 is skipped, fold 2 is evaluated
    # again without training again.
    fold_1_metrics = fold_folder(output, 1) / "evaluation" / "metrics.json"
    written = fold_1_metrics.stat().st_mtime_ns
    shutil.rmtree(fold_folder(output, 2) / "evaluation")
    (fold_folder(output, 2) / FOLD_DONE).unlink()

    assert cross_validate(config) == summary
    assert fold_1_metrics.stat().st_mtime_ns == written
    assert (fold_folder(output, 2) / "evaluation" / "metrics.json").is_file()
    assert len(calls) == 2

    # Folds made with one seed are never pooled with a run of another.
    other_seed = CrossValidationConfig(data=str(data), output=str(output), task="segment", folds=2, seed=1)
    with pytest.raises(ValueError, match=r"settings.json: the folds in this folder were made with other settings \(seed changed\)"):
        cross_validate(other_seed)


def test_invalid_training_option_stops_first(tmp_path):
    config = CrossValidationConfig(
        data=str(tmp_path / "no-data"), output=str(tmp_path / "cv"), task="segment", train_options={"architecture": "unnet"}
    )

    with pytest.raises(ValueError, match="architecture for task 'segment' must be one of"):
        cross_validate(config)
    assert not (tmp_path / "cv").exists()
