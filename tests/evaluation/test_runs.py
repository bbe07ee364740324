"""Run summaries read from run folders laid out as jobs/train.py writes them, with tiny models."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from braintumor.evaluation.runs import format_runs_table, summarize_run
from braintumor.models.io import ModelInfo, save_model
from braintumor.preprocessing.normalization import NORMALIZATION

JOBS = Path(__file__).resolve().parents[2] / "jobs"

SEGMENTATION_METRICS = {
    "dice_mean": 0.7512, "dice_median": 0.8, "dice_mean_95ci": [0.7, 0.81], "iou_mean": 0.64,
    "false_positive_rate_empty": 0.05,
}
CLASSIFICATION_METRICS = {"roc_auc": 0.9661, "f1": 0.8921, "accuracy": 0.94, "threshold": 0.55}


def _write_run(folder: Path, task: str, architecture: str, metrics: dict | None, precision: str = "float32") -> Path:
    from braintumor.models.classification import build_classifier
    from braintumor.models.segmentation import build_segmenter

    if task == "segment":
        model = build_segmenter(architecture, input_size=32, base_filters=4, depth=2)
    else:
        model = build_classifier(architecture, input_size=32, base_filters=4)
    info = ModelInfo(
        task=task, architecture=architecture, normalization=NORMALIZATION, input_size=32,
        extra={"best_epoch": 2, "training_precision": precision},
    )
    save_model(model, info, folder / "model")
    (folder / "config.json").write_text(json.dumps({"task": task, "architecture": architecture, "precision": precision}))
    (folder / "history.json").write_text(json.dumps({"loss": [0.9, 0.7, 0.6], "seconds": [100.0, 40.0, 50.0]}))
    if metrics is not None:
        part = "segmentation" if task == "segment" else "classification"
        report = {"model": {"task": task}, part: metrics}
        (folder / "evaluation").mkdir()
        (folder / "evaluation" / "metrics.json").write_text(json.dumps(report))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "segment": _write_run(root / "segment-resunet", "segment", "resunet", SEGMENTATION_METRICS, "mixed_bfloat16"),
        "classify": _write_run(root / "classify-smallcnn", "classify", "smallcnn", CLASSIFICATION_METRICS),
        "unevaluated": _write_run(root / "classify-plain", "classify", "smallcnn", None),
    }


def test_summary_reads_run_files(runs):
    from braintumor.models.io import load_model

    summary = summarize_run(runs["segment"])

    model, _ = load_model(runs["segment"] / "model")
    assert summary.name == "segment-resunet"
    assert summary.architecture == "resunet"
    assert summary.parameters == model.count_params()
    assert summary.input_size == 32
    assert summary.precision == "mixed_bfloat16"
    assert summary.epochs == 3
    assert summary.best_epoch == 2
    assert summary.training_seconds == 190.0
    assert summary.median_epoch_seconds == 50.0
    assert summary.metrics == SEGMENTATION_METRICS


def test_summary_without_evaluation(runs):
    summary = summarize_run(runs["unevaluated"])

    assert summary.metrics is None
    assert "| classify-plain | smallcnn |" in format_runs_table([summary])
    assert "| not evaluated |" in format_runs_table([summary])


def test_summary_of_folder_without_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found; expected the folder of a jobs/train.py run"):
        summarize_run(tmp_path)


def test_table_has_one_section_per_task(runs):
    table = format_runs_table([summarize_run(folder) for folder in runs.values()])

    sections = table.strip().split("\n\n")
    assert len(sections) == 2
    assert "Dice per patient" in sections[0]
    assert "| segment-resunet | resunet |" in sections[0]
    assert "| 3 (2) | 190 (50) | 0.751 [0.700, 0.810] | 0.800 | 0.640 | 0.050 |" in sections[0]
    assert "ROC AUC" in sections[1]
    assert "| 0.966 | 0.892 | 0.940 | 0.55 |" in sections[1]
    assert len(sections[1].splitlines()) == 4


@pytest.mark.timeout(300)
def test_job_skips_folder_that_is_no_run(runs, tmp_path):
    output = tmp_path / "table.md"
    command = [sys.executable, str(JOBS / "summarize_runs.py"), str(runs["classify"]), str(tmp_path / "missing"),
               "--output", str(output)]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=280)

    assert completed.returncode == 1
    assert "| classify-smallcnn | smallcnn |" in completed.stdout
    assert output.read_text() == completed.stdout
    assert f"skipped: {tmp_path / 'missing'}: config.json not found" in completed.stderr
    assert "1 of 2 folders skipped" in completed.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "invalid JSON"), ("[]", "expected a JSON object, found list")],
)
def test_summary_of_invalid_history(tmp_path, content, message):
    run = _write_run(tmp_path / "classify-broken", "classify", "smallcnn", None)
    (run / "history.json").write_text(content)

    with pytest.raises(ValueError, match=f"history.json: {message}"):
        summarize_run(run)


def test_summary_of_history_without_times(tmp_path):
    run = _write_run(tmp_path / "classify-untimed", "classify", "smallcnn", None)
    (run / "history.json").write_text(json.dumps({"loss": [0.9, 0.7, 0.6]}))

    summary = summarize_run(run)

    assert summary.epochs == 3
    assert summary.training_seconds is None
    assert "| 3 (2) | n/a |" in format_runs_table([summary])


def test_table_of_metric_not_computed(tmp_path):
    metrics = dict(CLASSIFICATION_METRICS, roc_auc=None)
    run = _write_run(tmp_path / "classify-one-class", "classify", "smallcnn", metrics)

    table = format_runs_table([summarize_run(run)])

    assert "| n/a | 0.892 | 0.940 | 0.55 |" in table
