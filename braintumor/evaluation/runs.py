"""One table row per training run: architecture, size, epochs, training time and test metrics.

Reads what `jobs/train.py` and `jobs/evaluate.py` leave in a run folder (config.json,
history.json, model/ and an evaluation folder), so runs made at different times compare side by side.
"""

import json
import logging
import statistics
from dataclasses import dataclass

from braintumor import locations
from braintumor.locations import Location

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """Figures of one training run, read from its folder; None where the run has no such file."""

    name: str
    task: str
    architecture: str
    parameters: int
    input_size: int
    precision: str
    epochs: int
    best_epoch: int | None
    training_seconds: float | None  # None when history.json has no epoch times
    median_epoch_seconds: float | None
    metrics: dict | None  # the "segmentation" or "classification" part of metrics.json


def summarize_run(run: Location, evaluation: str = "evaluation") -> RunSummary:
    """Read a run folder (local or s3://) and its evaluation subfolder `evaluation`.

    Raises:
        FileNotFoundError: `run` lacks config.json, history.json or a model, so it is no finished run.
        ValueError: config.json, history.json or metrics.json is not a JSON object.
        ModelLoadError: the run's model file is not a model.
    """
    # NOTE: s3:// runs go through the same `locations` helpers as training, but only local
    # folders are tested here.
    from braintumor.models.io import load_model

    for required in ("config.json", "history.json", "model/model_info.json"):
        if not locations.is_file(locations.join(run, required)):
            raise FileNotFoundError(
                f"{run}: {required} not found; expected the folder of a jobs/train.py run whose training has finished"
            )
    config = _read_json_object(locations.join(run, "config.json"))
    history = _read_json_object(locations.join(run, "history.json"))
    model, info = load_model(locations.join(run, "model"))
    seconds = history.get("seconds") or []
    # Every metric has one value per epoch, so the longest list counts the epochs.
    epochs = max((len(values) for values in history.values() if isinstance(values, list)), default=0)

    metrics_file = locations.join(run, evaluation, "metrics.json")
    metrics = None
    if locations.is_file(metrics_file):
        report = _read_json_object(metrics_file)
        metrics = report.get("segmentation") or report.get("classification")
    else:
        logger.warning("%s not found, so the metrics of run %s are left empty", metrics_file, locations.name(run))

    return RunSummary(
        name=locations.name(run),
        task=info.task,
        architecture=info.architecture,
        parameters=int(model.count_params()),
        input_size=info.input_size,
        precision=info.extra.get("training_precision", config.get("precision", "float32")),
        epochs=epochs,
        best_epoch=info.extra.get("best_epoch"),
        training_seconds=float(sum(seconds)) if seconds else None,
        median_epoch_seconds=float(statistics.median(seconds)) if seconds else None,
        metrics=metrics,
    )


def _read_json_object(location: Location) -> dict:
    """Read a JSON file that must contain an object.

    Raises:
        ValueError: the file is not valid JSON or not an object, naming the file.
    """
    try:
        content = json.loads(locations.read_text(location))
    except json.JSONDecodeError as error:
        raise ValueError(f"{location}: invalid JSON ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"{location}: expected a JSON object, found {type(content).__name__}")
    return content


def format_runs_table(summaries: list[RunSummary]) -> str:
    """Return Markdown tables of the runs: one for segmenters, one for classifiers, each only if it has rows."""
    sections = []
    segmenters = [summary for summary in summaries if summary.task == "segment"]
    classifiers = [summary for summary in summaries if summary.task == "classify"]
    if segmenters:
        lines = [
            "| run | architecture | parameters | input | precision | epochs (best) | training s (median epoch) "
            "| Dice per patient, mean [95% CI] | median | IoU mean | FP rate on empty slices |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for summary in segmenters:
            metrics = summary.metrics
            if metrics:
                low, high = metrics["dice_mean_95ci"]
                quality = (
                    f"{_figure(metrics['dice_mean'])} [{_figure(low)}, {_figure(high)}] | {_figure(metrics['dice_median'])} | "
                    f"{_figure(metrics['iou_mean'])} | {_figure(metrics['false_positive_rate_empty'])}"
                )
            else:
                quality = "not evaluated | | |"
            lines.append(f"{_run_columns(summary)} | {quality} |")
        sections.append("\n".join(lines))
    if classifiers:
        lines = [
            "| run | architecture | parameters | input | precision | epochs (best) | training s (median epoch) "
            "| ROC AUC | F1 | accuracy | threshold |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for summary in classifiers:
            metrics = summary.metrics
            if metrics:
                quality = (
                    f"{_figure(metrics['roc_auc'])} | {_figure(metrics['f1'])} | {_figure(metrics['accuracy'])} | "
                    f"{metrics['threshold']:g}"
                )
            else:
                quality = "not evaluated | | |"
            lines.append(f"{_run_columns(summary)} | {quality} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _figure(value: float | None) -> str:
    """Format a metric with 3 decimals, or n/a where the evaluation could not compute it."""
    return "n/a" if value is None else f"{value:.3f}"


def _run_columns(summary: RunSummary) -> str:
    best = f" ({summary.best_epoch})" if summary.best_epoch is not None else ""
    if summary.training_seconds is None:
        seconds = "n/a"
    else:
        seconds = f"{summary.training_seconds:,.0f} ({summary.median_epoch_seconds:.0f})"
    return (
        f"| {summary.name} | {summary.architecture} | {summary.parameters / 1e6:.2f} M | {summary.input_size} "
        f"| {summary.precision} | {summary.epochs}{best} | {seconds}"
    )
