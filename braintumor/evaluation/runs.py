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
    training_seconds: float
    median_epoch_seconds: float
    metrics: dict | None  # the "segmentation" or "classification" part of metrics.json


def summarize_run(run: Location, evaluation: str = "evaluation") -> RunSummary:
    """Read a run folder (local or s3://) and its evaluation subfolder `evaluation`.

    Raises:
        FileNotFoundError: `run` lacks config.json, history.json or a model, so it is no finished run.
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
    config = json.loads(locations.read_text(locations.join(run, "config.json")))
    history = json.loads(locations.read_text(locations.join(run, "history.json")))
    model, info = load_model(locations.join(run, "model"))
    seconds = history.get("seconds", [])

    metrics_file = locations.join(run, evaluation, "metrics.json")
    metrics = None
    if locations.is_file(metrics_file):
        report = json.loads(locations.read_text(metrics_file))
        metrics = report.get("segmentation") or report.get("classification")
    else:
        logger.warning("%s: %s not found, so its metrics are left empty", run, metrics_file)

    return RunSummary(
        name=locations.name(run),
        task=info.task,
        architecture=info.architecture,
        parameters=int(model.count_params()),
        input_size=info.input_size,
        precision=info.extra.get("training_precision", config.get("precision", "float32")),
        epochs=len(seconds),
        best_epoch=info.extra.get("best_epoch"),
        training_seconds=float(sum(seconds)),
        median_epoch_seconds=float(statistics.median(seconds)) if seconds else 0.0,
        metrics=metrics,
    )


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
                    f"{metrics['dice_mean']:.3f} [{low:.3f}, {high:.3f}] | {metrics['dice_median']:.3f} | "
                    f"{metrics['iou_mean']:.3f} | {metrics['false_positive_rate_empty']:.3f}"
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
                    f"{metrics['roc_auc']:.3f} | {metrics['f1']:.3f} | {metrics['accuracy']:.3f} | {metrics['threshold']:g}"
                )
            else:
                quality = "not evaluated | | |"
            lines.append(f"{_run_columns(summary)} | {quality} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _run_columns(summary: RunSummary) -> str:
    best = f" ({summary.best_epoch})" if summary.best_epoch is not None else ""
    return (
        f"| {summary.name} | {summary.architecture} | {summary.parameters / 1e6:.2f} M | {summary.input_size} "
        f"| {summary.precision} | {summary.epochs}{best} | {summary.training_seconds:,.0f} ({summary.median_epoch_seconds:.0f})"
    )
