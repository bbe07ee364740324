"""Compare ways to say "this slice has a tumour": the classifier, the segmenter's mask, and both.

- classifier: its probability at the threshold stored with it;
- segmenter: the predicted mask (with the segmenter's stored mask settings) has at least
  `min_area` pixels, where `min_area` is chosen on the validation patients by F1;
- combined: the classifier and the segmenter rule joined by AND or by OR, whichever has the higher
  validation F1;
- averaged: the mean of the classifier's probability and the segmenter's highest pixel
  probability, at the threshold with the best validation F1. Unlike the AND/OR join, it ranks
  slices, so its ROC AUC is that of a score.

Every choice is made on the validation split; the test split is only scored. `pool_detection`
pools the test slices of several comparisons, one per cross-validation fold.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from braintumor import locations
from braintumor.evaluation import metrics
from braintumor.models.io import load_model
from braintumor.postprocessing import mask_settings, masks_from_probabilities

logger = logging.getLogger(__name__)

MIN_AREAS = (1, 10, 25, 50, 100, 200, 400, 800)
AVERAGE_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20))  # 0.05 to 0.95
SLICE_PIXELS = 256 * 256
DETECTION_FILE = "detection.json"
SLICES_FILE = "detection_slices.csv"  # each slice's scores and decisions, for pooling folds
RULES = ("classifier", "segmenter", "combined", "averaged")


def choose_min_area(areas: np.ndarray, labels: np.ndarray) -> int:
    """Return the area of MIN_AREAS with the best F1 of "area >= min_area"; ties go to the smaller area."""
    scores = [metrics.classification_summary(labels, (areas >= area).astype(float), 0.5)["f1"] for area in MIN_AREAS]
    return MIN_AREAS[int(np.argmax(np.round(scores, 4)))]


def choose_combination(classifier_positive: np.ndarray, segmenter_positive: np.ndarray, labels: np.ndarray) -> str:
    """Return "and" or "or", the join of the two rules with the better F1; ties go to "and"."""
    scores = {
        join: metrics.classification_summary(labels, combine(classifier_positive, segmenter_positive, join).astype(float), 0.5)["f1"]
        for join in ("and", "or")
    }
    return "and" if round(scores["and"], 4) >= round(scores["or"], 4) else "or"


def choose_average_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Return the threshold of AVERAGE_THRESHOLDS with the best F1 of "score >= threshold"; ties go to the one nearest 0.5."""
    f1 = [round(metrics.classification_summary(labels, scores, threshold)["f1"], 4) for threshold in AVERAGE_THRESHOLDS]
    best = [threshold for threshold, value in zip(AVERAGE_THRESHOLDS, f1) if value == max(f1)]
    return min(best, key=lambda threshold: abs(threshold - 0.5))


def average_score(classifier_probability: np.ndarray, segmenter_peak: np.ndarray) -> np.ndarray:
    """Return the mean of the classifier's probability and the segmenter's highest pixel probability of each slice."""
    return (np.asarray(classifier_probability, dtype=np.float64) + np.asarray(segmenter_peak, dtype=np.float64)) / 2.0


def combine(classifier_positive: np.ndarray, segmenter_positive: np.ndarray, join: str) -> np.ndarray:
    if join == "and":
        return classifier_positive & segmenter_positive
    return classifier_positive | segmenter_positive


def score_rules(labels, classifier_probability, classifier_threshold, areas, min_area, join, segmenter_peak, average_threshold) -> dict:
    """Score the four rules on one split.

    The segmenter rule's ROC AUC and average precision rank slices by predicted area. The combined
    rule is a yes/no decision, so its curve metrics are those of that decision alone.
    """
    classifier_positive = classifier_probability >= classifier_threshold
    segmenter_positive = areas >= min_area
    combined = combine(classifier_positive, segmenter_positive, join)
    return {
        "classifier": metrics.classification_summary(labels, classifier_probability, classifier_threshold),
        "segmenter": metrics.classification_summary(labels, areas / SLICE_PIXELS, min_area / SLICE_PIXELS),
        "combined": metrics.classification_summary(labels, combined.astype(float), 0.5),
        "averaged": metrics.classification_summary(labels, average_score(classifier_probability, segmenter_peak), average_threshold),
    }


def compare_detection(segmenter_dir, classifier_dir, data, output) -> dict:
    """Choose the segmenter's area, the join and the averaged threshold on validation, score every rule on test, write detection.json."""
    from braintumor.evaluation.report import predict_split, write_json

    segmenter, segmenter_info = load_model(segmenter_dir)
    classifier, classifier_info = load_model(classifier_dir)
    settings = mask_settings(segmenter_info)
    splits, keys = {}, {}
    for split in ("validation", "test"):
        rows, probability, _ = predict_split(segmenter, "segment", data, split, settings.flip_averaging)
        areas = masks_from_probabilities(probability, settings).sum(axis=(1, 2))
        classifier_rows, classifier_probability, _ = predict_split(classifier, "classify", data, split)
        # Both are sorted by patient and slice number; check that they list the same slices.
        if not rows[["patient_id", "slice_number"]].equals(classifier_rows[["patient_id", "slice_number"]]):
            raise RuntimeError(f"the {split} predictions of the two models list different slices")
        peaks = probability.max(axis=(1, 2))
        splits[split] = (rows["label"].to_numpy(), classifier_probability, areas, peaks)
        keys[split] = rows[["patient_id", "slice_number"]]

    labels, classifier_probability, areas, peaks = splits["validation"]
    min_area = choose_min_area(areas, labels)
    classifier_positive = classifier_probability >= classifier_info.threshold
    join = choose_combination(classifier_positive, areas >= min_area, labels)
    average_threshold = choose_average_threshold(average_score(classifier_probability, peaks), labels)
    chosen = (classifier_info.threshold, min_area, join, average_threshold)

    report = {
        "segmenter_version": segmenter_info.version,
        "classifier_version": classifier_info.version,
        "classifier_threshold": classifier_info.threshold,
        "segmenter_min_area": min_area,
        "combination": join,
        "average_threshold": average_threshold,
        "chosen_on": "validation",
        "validation": score_rules(*_arguments(splits["validation"], *chosen)),
        "test": score_rules(*_arguments(splits["test"], *chosen)),
    }
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    write_json(report, output / DETECTION_FILE)
    slices = pd.concat([_slice_table(split, keys[split], splits[split], *chosen) for split in ("validation", "test")])
    locations.write_text(output / SLICES_FILE, slices.to_csv(index=False))
    for rule, summary in report["test"].items():
        logger.info("test detection by %s: F1 %.3f, precision %.3f, recall %.3f", rule, summary["f1"], summary["precision"], summary["recall"])
    return report


def _arguments(split, classifier_threshold, min_area, join, average_threshold):
    labels, classifier_probability, areas, peaks = split
    return labels, classifier_probability, classifier_threshold, areas, min_area, join, peaks, average_threshold


def _slice_table(split: str, keys: pd.DataFrame, arrays, classifier_threshold, min_area, join, average_threshold) -> pd.DataFrame:
    """Return one row per slice of `split`: its scores and each rule's decision."""
    labels, classifier_probability, areas, peaks = arrays
    table = keys.reset_index(drop=True).assign(
        split=split,
        label=labels,
        classifier_probability=classifier_probability,
        segmenter_area=areas,
        segmenter_peak=peaks,
        averaged_score=average_score(classifier_probability, peaks),
    )
    classifier_positive = classifier_probability >= classifier_threshold
    segmenter_positive = areas >= min_area
    table["classifier"] = classifier_positive.astype(int)
    table["segmenter"] = segmenter_positive.astype(int)
    table["combined"] = combine(classifier_positive, segmenter_positive, join).astype(int)
    table["averaged"] = (table["averaged_score"] >= average_threshold).astype(int)
    return table


def pool_detection(folders: list[str | Path]) -> dict:
    """Score every rule on the test slices of several comparisons together, such as one per cross-validation fold.

    Each slice keeps the decision of its own comparison's validation choices. The ROC AUC of a rule
    ranks all slices by its score (none for the combined rule). Per-comparison F1 is listed too.

    Raises:
        FileNotFoundError: a folder has no detection_slices.csv.
        ValueError: a patient is a test patient in two folders, so the folders are not disjoint folds.
    """
    tables = []
    for index, folder in enumerate(folders, start=1):
        path = Path(folder) / SLICES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run jobs/compare_detection.py with --output {folder} first")
        table = pd.read_csv(path)
        tables.append(table[table["split"] == "test"].assign(comparison=index))
    pooled = pd.concat(tables, ignore_index=True)

    folders_per_patient = pooled.groupby("patient_id")["comparison"].nunique()
    shared = sorted(folders_per_patient[folders_per_patient > 1].index)
    if shared:
        raise ValueError(f"patients {shared[:5]} are test patients in more than one folder; pool only disjoint folds")

    summary = {
        "comparisons": [str(folder) for folder in folders],
        "slices": len(pooled),
        "patients": int(pooled["patient_id"].nunique()),
        "rules": {},
    }
    labels = pooled["label"].to_numpy()
    # The score each rule ranks slices by, as score_rules has it. The combined rule has none.
    scores = {
        "classifier": pooled["classifier_probability"].to_numpy(dtype=float),
        "segmenter": pooled["segmenter_area"].to_numpy(dtype=float) / SLICE_PIXELS,
        "averaged": pooled["averaged_score"].to_numpy(dtype=float),
    }
    for rule in RULES:
        figures = metrics.classification_summary(labels, pooled[rule].to_numpy(dtype=float), 0.5)
        del figures["threshold"]
        ranked = metrics.classification_summary(labels, scores[rule], 0.5) if rule in scores else {}
        figures["roc_auc"] = ranked.get("roc_auc")
        figures["average_precision"] = ranked.get("average_precision")
        figures["f1_per_comparison"] = [
            metrics.classification_summary(group["label"], group[rule].astype(float), 0.5)["f1"]
            for _, group in pooled.groupby("comparison")
        ]
        summary["rules"][rule] = figures
    return summary
