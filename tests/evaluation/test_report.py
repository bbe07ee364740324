"""The evaluation report and the detection comparison on five real patients, with tiny untrained models saved as training saves them."""

import json

import pandas as pd
import pytest

from braintumor.evaluation.report import evaluate
from braintumor.evaluation.tuning import TUNING_FILE, tune
from braintumor.models.io import ModelInfo, load_model, save_model
from braintumor.postprocessing import MaskSettings
from braintumor.preprocessing.normalization import NORMALIZATION


@pytest.fixture(scope="module")
def tiny_segmenter(tmp_path_factory):
    from braintumor.models.segmentation import build_segmenter

    return save_model(
        build_segmenter(input_size=32, base_filters=4, depth=2),
        ModelInfo(task="segment", architecture="unet", normalization=NORMALIZATION, input_size=32, version="tiny-seg"),
        tmp_path_factory.mktemp("models") / "segmenter",
    )


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    from braintumor.models.classification import build_classifier

    return save_model(
        build_classifier("smallcnn", input_size=32, base_filters=4),
        ModelInfo(task="classify", architecture="smallcnn", normalization=NORMALIZATION, input_size=32, version="tiny-cls"),
        tmp_path_factory.mktemp("models") / "classifier",
    )


def test_segmenter_report_files(preprocessed, tiny_segmenter, tmp_path):
    result, _ = preprocessed
    history = {"loss": [0.9, 0.7], "val_loss": [1.0, 0.8], "dice": [0.3, 0.5], "val_dice": [0.2, 0.4]}
    report = evaluate(tiny_segmenter, result.output, tmp_path, split="test", history=history)

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["split"] == "test"
    assert written["model"]["postprocessing"] == {"flip_averaging": False, "min_component_pixels": 0}
    segmentation = written["segmentation"]
    assert 0.0 <= segmentation["dice_mean"] <= 1.0
    assert segmentation["dice_mean_95ci"][0] <= segmentation["dice_mean"] <= segmentation["dice_mean_95ci"][1]
    assert report["n_patients"] == len(written["patients"])

    per_patient = pd.read_csv(tmp_path / "per_patient.csv")
    assert sorted(per_patient["patient_id"]) == written["patients"]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == written["n_slices"]
    for name in ("overlays.png", "per_patient_dice.png", "training_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    architecture = (tmp_path / "architecture.txt").read_text()
    assert architecture.startswith("tiny-seg: unet segment model")
    assert "Total params" in architecture


def test_settings_change_the_masks(preprocessed, tiny_segmenter, tmp_path):
    result, _ = preprocessed
    low = evaluate(tiny_segmenter, result.output, tmp_path / "low", settings=MaskSettings(threshold=0.01))
    high = evaluate(tiny_segmenter, result.output, tmp_path / "high", settings=MaskSettings(threshold=0.99))
    low_area = pd.read_csv(tmp_path / "low" / "per_patient.csv")["pred_area"].sum()
    high_area = pd.read_csv(tmp_path / "high" / "per_patient.csv")["pred_area"].sum()
    assert low_area > high_area
    assert low["model"]["threshold"] == 0.01


def test_classifier_report_files(preprocessed, tiny_classifier, tmp_path):
    result, _ = preprocessed
    evaluate(tiny_classifier, result.output, tmp_path, split="test")

    written = json.loads((tmp_path / "metrics.json").read_text())
    classification = written["classification"]
    assert sum(map(sum, classification["confusion_matrix"])) == written["n_slices"]
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert "Total params" in (tmp_path / "architecture.txt").read_text()


def test_tuning_reads_validation_and_stores_choice(preprocessed, tiny_segmenter, tmp_path):
    import shutil

    result, _ = preprocessed
    model_dir = shutil.copytree(tiny_segmenter, tmp_path / "model")
    summary = tune(model_dir, result.output)

    split = json.loads((result.output / "split.json").read_text())
    assert summary["split"] == "validation"
    assert set(summary["patients"]) <= set(split["validation"])
    assert (model_dir / TUNING_FILE).is_file()
    _, info = load_model(model_dir)
    assert info.threshold == summary["chosen"]["threshold"]
    assert info.postprocessing["min_component_pixels"] == summary["chosen"]["min_component_pixels"]


def test_detection_comparison_files(preprocessed, tiny_segmenter, tiny_classifier, tmp_path):
    from braintumor.evaluation.detection import compare_detection, pool_detection

    result, _ = preprocessed
    report = compare_detection(tiny_segmenter, tiny_classifier, result.output, tmp_path)

    assert json.loads((tmp_path / "detection.json").read_text())["average_threshold"] == report["average_threshold"]
    slices = pd.read_csv(tmp_path / "detection_slices.csv")
    assert sorted(slices["split"].unique()) == ["test", "validation"]
    test_slices = slices[slices["split"] == "test"]
    assert len(test_slices) == sum(map(sum, report["test"]["averaged"]["confusion_matrix"]))
    assert (test_slices["averaged"] == (test_slices["averaged_score"] >= report["average_threshold"])).all()
    assert pool_detection([tmp_path])["slices"] == len(test_slices)
