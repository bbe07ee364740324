"""K-fold cross-validation by patient: every patient is a test patient once, in one fold.

For each fold the job writes the fold's split, preprocesses the data into the fold's folder,
trains, tunes on the fold's validation patients and evaluates on its test patients, with the same
functions as the single-split commands:

    <output>/fold-<k>/split.json                  train, validation and test patients of fold k
    <output>/fold-<k>/parquet/...                 the fold's preprocessed splits
    <output>/fold-<k>/runs/<run>/...              training run, model and checkpoints
    <output>/fold-<k>/evaluation/metrics.json     test metrics (with per_patient.csv or predictions.csv)
    <output>/fold-<k>/done.json                   written when fold k is complete
    <output>/settings.json                        task, folds, seed and training options of the run
    <output>/crossvalidation.json, .md            per-fold and pooled figures

A rerun skips the finished folds (those with `done.json`) and continues a fold's training from
its checkpoint. `settings.json` records the settings that made the folds, and a rerun with other
settings into the same folder is rejected, so folds of different runs are never pooled. Each fold's Parquet copy of the
data takes as much space as a single preprocessing run (about 660 MB for the 3,250 slices).
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from braintumor import locations
from braintumor.data.index import load_index, read_csv_table
from braintumor.data.split import fold_splits, load_split, save_split
from braintumor.evaluation import metrics
from braintumor.models.io import INFO_FILE

logger = logging.getLogger(__name__)

SUMMARY_JSON = "crossvalidation.json"
SUMMARY_MARKDOWN = "crossvalidation.md"
SETTINGS_JSON = "settings.json"  # the settings of the run that made the folds
FOLD_DONE = "done.json"  # written in a fold's folder once its evaluation is complete


@dataclass
class CrossValidationConfig:
    """Settings of a cross-validation: data, output folder, number of folds and training options."""

    data: str
    output: str
    task: str
    folds: int = 5
    seed: int = 0
    validation_fraction: float = 0.125
    # TrainConfig fields other than task, data, output and name, e.g. {"epochs": 20}.
    train_options: dict = field(default_factory=dict)


def fold_folder(output: str | Path, fold: int) -> str | Path:
    """Return the folder of fold `fold` (counted from 1)."""
    return locations.join(output, f"fold-{fold}")


def cross_validate(config: CrossValidationConfig) -> dict:
    """Run every fold that is not finished yet, then write and return the pooled figures.

    Raises:
        ValueError: invalid training options, too few patients for the folds, or an output folder
            of an earlier run with other settings (task, folds, seed, validation share, training
            options or patients).
    """
    from braintumor.evaluation.report import evaluate
    from braintumor.evaluation.tuning import tune
    from braintumor.preprocessing.pipeline import preprocess
    from braintumor.training.config import TrainConfig
    from braintumor.training.trainer import train

    # Built once here so that an invalid option stops the job before any fold is preprocessed.
    TrainConfig(task=config.task, **config.train_options)
    index = load_index(config.data).frame
    splits = fold_splits(index, config.folds, config.seed, config.validation_fraction)
    output = locations.as_location(config.output)
    locations.make_folder(output)
    _check_settings(config, locations.join(output, SETTINGS_JSON))

    for fold, split in enumerate(splits, start=1):
        folder = fold_folder(output, fold)
        _write_fold_split(split, locations.join(folder, "split.json"), config.seed)
        done_file = locations.join(folder, FOLD_DONE)
        if locations.is_file(done_file):
            logger.info("fold %d of %d: finished by an earlier run (%s), skipped", fold, config.folds, done_file)
            continue
        logger.info(
            "fold %d of %d: %d train, %d validation, %d test patients",
            fold, config.folds, len(split["train"]), len(split["validation"]), len(split["test"]),
        )
        preprocess(config.data, folder, seed=config.seed)
        train_config = TrainConfig(
            task=config.task, data=str(folder), output=str(locations.join(folder, "runs")),
            name=f"{config.task}-fold-{fold}", **config.train_options,
        )
        run_dir = train_config.run_dir
        model_dir = locations.join(run_dir, "model")
        # model_info.json is written after model.keras, so its presence means training finished.
        if locations.is_file(locations.join(model_dir, INFO_FILE)):
            logger.info("fold %d: training finished in an earlier run, using %s", fold, model_dir)
        else:
            train(train_config)
        tune(model_dir, folder)
        history = json.loads(locations.read_text(locations.join(run_dir, "history.json")))
        report = evaluate(model_dir, folder, locations.join(folder, "evaluation"), split="test", history=history)
        # Written after the whole evaluation folder, which S3 receives one object at a time.
        locations.write_text(done_file, json.dumps({"fold": fold, "version": report["model"]["version"]}) + "\n")

    summary = summarize_folds(output, config.folds)
    summary["settings"] = _settings(config)
    locations.write_text(locations.join(output, SUMMARY_JSON), json.dumps(summary, indent=2) + "\n")
    locations.write_text(locations.join(output, SUMMARY_MARKDOWN), summary_markdown(summary))
    logger.info("cross-validation over %d folds: %s", config.folds, _headline(summary))
    return summary


def _settings(config: CrossValidationConfig) -> dict:
    """Return the settings that decide the folds and their models, as JSON would read them back."""
    settings = {name: value for name, value in asdict(config).items() if name not in ("data", "output")}
    return json.loads(json.dumps(settings))


def _check_settings(config: CrossValidationConfig, path: str | Path) -> None:
    """Save the run's settings in its output folder, or check that an earlier run there used the same."""
    settings = _settings(config)
    if not locations.is_file(path):
        locations.write_text(path, json.dumps(settings, indent=2) + "\n")
        return
    earlier = json.loads(locations.read_text(path))
    changed = sorted(name for name in settings if earlier.get(name) != settings[name])
    if changed:
        raise ValueError(
            f"{path}: the folds in this folder were made with other settings ({', '.join(changed)} changed), "
            "so they cannot be pooled with this run; pass a new --output folder or run with the settings in that file"
        )


def _write_fold_split(split: dict[str, list[str]], path: str | Path, seed: int) -> None:
    """Save the fold's split, or check that the one saved by an earlier run is the same."""
    if not locations.is_file(path):
        save_split(split, path, seed)
        return
    if load_split(path) != split:
        raise ValueError(
            f"{path} contains another patient split than this fold's (the dataset changed since that run); "
            "pass a new --output folder"
        )


def summarize_folds(output: str | Path, folds: int) -> dict:
    """Read each fold's evaluation and return per-fold figures and figures pooled over all test patients.

    For a segmenter the pooled figures are the mean and median Dice per patient over every
    patient (each is a test patient in one fold) with a bootstrap interval over patients. For a
    classifier they are the ROC AUC of all test slices' probabilities and the F1 of their labels,
    each slice labelled with its own fold's threshold.
    """
    reports, tables = [], []
    for fold in range(1, folds + 1):
        evaluation = locations.join(fold_folder(output, fold), "evaluation")
        report = json.loads(locations.read_text(locations.join(evaluation, "metrics.json")))
        segment = report["model"]["task"] == "segment"
        table = read_csv_table(locations.join(evaluation, "per_patient.csv" if segment else "predictions.csv"))
        table["fold"] = fold
        if not segment:
            table["predicted"] = (table["probability"] >= report["model"]["threshold"]).astype(int)
        reports.append(report)
        tables.append(table)
    pooled = pd.concat(tables, ignore_index=True)
    task = reports[0]["model"]["task"]
    summary = {"task": task, "architecture": reports[0]["model"]["architecture"], "folds": folds, "per_fold": []}

    for fold, report in enumerate(reports, start=1):
        row = {"fold": fold, "patients": report["n_patients"], "slices": report["n_slices"], "version": report["model"]["version"]}
        if task == "segment":
            figures = report["segmentation"]
            row.update(dice_mean=figures["dice_mean"], dice_median=figures["dice_median"], iou_mean=figures["iou_mean"])
        else:
            figures = report["classification"]
            row.update(roc_auc=figures["roc_auc"], f1=figures["f1"], threshold=figures["threshold"])
        summary["per_fold"].append(row)

    if task == "segment":
        dice = pooled["dice"].to_numpy()
        low, high = metrics.bootstrap_interval(dice)
        summary["pooled"] = {
            "patients": len(pooled),
            "dice_mean": float(dice.mean()),
            "dice_mean_95ci": [low, high],
            "dice_median": float(np.median(dice)),
            "iou_mean": float(pooled["iou"].mean()),
        }
    else:
        figures = metrics.classification_summary(pooled["label"], pooled["probability"])
        summary["pooled"] = {
            "slices": len(pooled),
            "roc_auc": figures["roc_auc"],
            "f1": float(f1_score(pooled["label"], pooled["predicted"], zero_division=0)),
        }
    fold_values = pd.DataFrame(summary["per_fold"])
    headline = ["dice_mean"] if task == "segment" else ["roc_auc", "f1"]
    summary["across_folds"] = {
        name: {"mean": float(fold_values[name].mean()), "std": float(fold_values[name].std(ddof=1))} for name in headline
    }
    return summary


def summary_markdown(summary: dict) -> str:
    """Return the cross-validation summary as Markdown tables."""
    task = summary["task"]
    columns = ["dice_mean", "dice_median", "iou_mean"] if task == "segment" else ["roc_auc", "f1", "threshold"]
    lines = [
        f"# Cross-validation: {summary['architecture']} {task}, {summary['folds']} folds by patient",
        "",
        "| fold | test patients | test slices | " + " | ".join(columns) + " |",
        "|---" * (3 + len(columns)) + "|",
    ]
    for row in summary["per_fold"]:
        lines.append(f"| {row['fold']} | {row['patients']} | {row['slices']} | " + " | ".join(f"{row[name]:.3f}" for name in columns) + " |")
    lines += ["", _headline(summary), ""]
    return "\n".join(lines)


def _headline(summary: dict) -> str:
    pooled = summary["pooled"]
    spread = "; ".join(
        f"{name} across folds {values['mean']:.3f} +/- {values['std']:.3f} (mean +/- sd)"
        for name, values in summary["across_folds"].items()
    )
    if summary["task"] == "segment":
        low, high = pooled["dice_mean_95ci"]
        return (
            f"Pooled over {pooled['patients']} test patients: mean Dice per patient {pooled['dice_mean']:.3f} "
            f"[95% CI {low:.3f}, {high:.3f}], median {pooled['dice_median']:.3f}; {spread}"
        )
    return f"Pooled over {pooled['slices']} test slices: ROC AUC {pooled['roc_auc']:.3f}, F1 {pooled['f1']:.3f}; {spread}"
