"""Compare three ways to say "this slice has a tumour": the classifier, the segmenter's mask, and both.

- classifier: its probability at the threshold stored with it;
- segmenter: the predicted mask (with the segmenter's stored mask settings) has at least
  `min_area` pixels, where `min_area` is chosen on the validation patients by F1;
- combined: the classifier and the segmenter rule joined by AND or by OR, whichever has the higher
  validation F1.

Every choice is made on the validation split; the test split is only scored.
"""

import logging
from pathlib import Path

import numpy as np

from braintumor.evaluation import metrics
from braintumor.models.io import load_model
from braintumor.postprocessing import mask_settings, masks_from_probabilities

logger = logging.getLogger(__name__)

MIN_AREAS = (1, 10, 25, 50, 100, 200, 400, 800)
SLICE_PIXELS = 256 * 256
DETECTION_FILE = "detection.json"


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


def combine(classifier_positive: np.ndarray, segmenter_positive: np.ndarray, join: str) -> np.ndarray:
    if join == "and":
        return classifier_positive & segmenter_positive
    return classifier_positive | segmenter_positive


def score_rules(labels, classifier_probability, classifier_threshold, areas, min_area, join) -> dict:
    """Score the three rules on one split.

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
    }


def compare_detection(segmenter_dir, classifier_dir, data, output) -> dict:
    """Choose the segmenter's area and the join on validation, score all three rules on test, write detection.json."""
    from braintumor.evaluation.report import predict_split, write_json

    segmenter, segmenter_info = load_model(segmenter_dir)
    classifier, classifier_info = load_model(classifier_dir)
    settings = mask_settings(segmenter_info)
    splits = {}
    for split in ("validation", "test"):
        rows, probability, _ = predict_split(segmenter, "segment", data, split, settings.flip_averaging)
        areas = masks_from_probabilities(probability, settings).sum(axis=(1, 2))
        classifier_rows, classifier_probability, _ = predict_split(classifier, "classify", data, split)
        # Both are sorted by patient and slice number; check that they list the same slices.
        if not rows[["patient_id", "slice_number"]].equals(classifier_rows[["patient_id", "slice_number"]]):
            raise RuntimeError(f"the {split} predictions of the two models list different slices")
        splits[split] = (rows["label"].to_numpy(), classifier_probability, areas)

    labels, classifier_probability, areas = splits["validation"]
    min_area = choose_min_area(areas, labels)
    classifier_positive = classifier_probability >= classifier_info.threshold
    join = choose_combination(classifier_positive, areas >= min_area, labels)

    report = {
        "segmenter_version": segmenter_info.version,
        "classifier_version": classifier_info.version,
        "classifier_threshold": classifier_info.threshold,
        "segmenter_min_area": min_area,
        "combination": join,
        "chosen_on": "validation",
        "validation": score_rules(*_arguments(splits["validation"], classifier_info.threshold, min_area, join)),
        "test": score_rules(*_arguments(splits["test"], classifier_info.threshold, min_area, join)),
    }
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    write_json(report, output / DETECTION_FILE)
    for rule, summary in report["test"].items():
        logger.info("test detection by %s: F1 %.3f, precision %.3f, recall %.3f", rule, summary["f1"], summary["precision"], summary["recall"])
    return report


def _arguments(split, classifier_threshold, min_area, join):
    labels, classifier_probability, areas = split
    return labels, classifier_probability, classifier_threshold, areas, min_area, join
