"""Score tumour masks by Dice and IoU, per slice and per patient volume, and score tumour/no-tumour
classification from predicted probabilities.

Segmentation is reported per patient volume as well as per slice, because most slices of a volume
are empty background: a per-slice mean is dominated by those easy slices, while the volume score
weighs every tumour pixel once.
"""

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as sklearn_metrics


def dice_score(pred: np.ndarray, true: np.ndarray) -> float:
    """Compute the Dice coefficient 2|P∩T| / (|P| + |T|) of two masks.

    Args:
        pred: predicted mask, bool array of any shape (non-zero values count as True).
        true: reference mask with the same shape as ``pred``.

    Returns:
        Dice in [0, 1].

    Raises:
        ValueError: if the shapes differ.
    """
    intersection, pred_area, true_area = _overlap_counts(pred, true)

    # NOTE: two empty masks agree perfectly, so their Dice is 1.0. When exactly one is empty the
    # intersection is 0 and the formula gives 0.0 without a special case.
    if pred_area + true_area == 0:
        return 1.0
    return 2.0 * intersection / (pred_area + true_area)


def iou_score(pred: np.ndarray, true: np.ndarray) -> float:
    """Compute the intersection over union (Jaccard index) |P∩T| / |P∪T| of two masks.

    Args:
        pred: predicted mask, bool array of any shape (non-zero values count as True).
        true: reference mask with the same shape as ``pred``.

    Returns:
        IoU in [0, 1].

    Raises:
        ValueError: if the shapes differ.
    """
    intersection, pred_area, true_area = _overlap_counts(pred, true)
    union = pred_area + true_area - intersection

    # NOTE: two empty masks agree perfectly, so their IoU is 1.0. When exactly one is empty the
    # intersection is 0 and the formula gives 0.0 without a special case.
    if union == 0:
        return 1.0
    return intersection / union


def per_patient_segmentation(
    pred_masks: np.ndarray, true_masks: np.ndarray, patient_ids: Sequence[str] | np.ndarray
) -> pd.DataFrame:
    """Compute Dice and IoU over each patient's whole volume.

    All voxels of a patient are pooled before the scores are computed, so a patient's Dice is not
    the mean of its slices' Dice values.

    Args:
        pred_masks: (N, H, W) bool predicted masks.
        true_masks: (N, H, W) bool reference masks.
        patient_ids: (N,) patient id of each slice.

    Returns:
        One row per patient, sorted by patient_id, with columns patient_id, n_slices,
        n_tumour_slices (slices whose reference mask is non-empty), dice, iou, true_area and
        pred_area (pixel counts summed over the volume).

    Raises:
        ValueError: if the masks are not (N, H, W) with equal shapes, or patient_ids is not (N,).
    """
    pred_masks, true_masks, patient_ids = _check_mask_stack(pred_masks, true_masks, patient_ids)
    intersection, pred_area, true_area = _per_slice_counts(pred_masks, true_masks)

    slices = pd.DataFrame(
        {
            "patient_id": patient_ids,
            "intersection": intersection,
            "pred_area": pred_area,
            "true_area": true_area,
            "has_tumour": true_area > 0,
        }
    )
    table = (
        slices.groupby("patient_id", sort=True)
        .agg(
            n_slices=("has_tumour", "size"),
            n_tumour_slices=("has_tumour", "sum"),
            intersection=("intersection", "sum"),
            true_area=("true_area", "sum"),
            pred_area=("pred_area", "sum"),
        )
        .reset_index()
    )

    total_area = table["pred_area"] + table["true_area"]
    union = total_area - table["intersection"]
    # Same convention as dice_score and iou_score: a patient with empty reference and prediction scores 1.0.
    table["dice"] = np.where(total_area > 0, 2.0 * table["intersection"] / total_area.clip(lower=1), 1.0)
    table["iou"] = np.where(union > 0, table["intersection"] / union.clip(lower=1), 1.0)

    columns = ["patient_id", "n_slices", "n_tumour_slices", "dice", "iou", "true_area", "pred_area"]
    integer_columns = {"n_slices": int, "n_tumour_slices": int, "true_area": int, "pred_area": int}
    return table[columns].astype(integer_columns)


def segmentation_summary(
    pred_masks: np.ndarray, true_masks: np.ndarray, patient_ids: Sequence[str] | np.ndarray
) -> dict:
    """Summarise segmentation quality over patients and over slices.

    Args:
        pred_masks: (N, H, W) bool predicted masks.
        true_masks: (N, H, W) bool reference masks.
        patient_ids: (N,) patient id of each slice.

    Returns:
        JSON-serialisable dict with these keys:

        - n_patients, n_slices, n_tumour_slices, n_empty_slices: int counts.
        - dice_mean, dice_median, iou_mean, iou_median: float, over the patients' volume scores.
        - dice_tumour_slices: mean per-slice Dice over slices with a non-empty reference mask,
          None when no slice has a tumour.
        - false_positive_rate_empty: fraction of slices with an empty reference mask whose
          predicted mask has at least one pixel, None when every slice has a tumour.

    Raises:
        ValueError: if the masks are not (N, H, W) with equal shapes, or patient_ids is not (N,).
    """
    table = per_patient_segmentation(pred_masks, true_masks, patient_ids)
    intersection, pred_area, true_area = _per_slice_counts(
        np.asarray(pred_masks, dtype=bool), np.asarray(true_masks, dtype=bool)
    )

    tumour = true_area > 0
    empty = ~tumour
    n_tumour_slices = int(tumour.sum())
    n_empty_slices = int(empty.sum())

    # Slices with a tumour have a non-zero denominator, so the Dice formula needs no empty case here.
    slice_dice = 2.0 * intersection[tumour] / (pred_area[tumour] + true_area[tumour])
    dice_tumour_slices = float(slice_dice.mean()) if n_tumour_slices else None
    false_positive_rate_empty = float((pred_area[empty] > 0).mean()) if n_empty_slices else None

    return {
        "n_patients": int(len(table)),
        "n_slices": int(len(true_area)),
        "dice_mean": float(table["dice"].mean()),
        "dice_median": float(table["dice"].median()),
        "iou_mean": float(table["iou"].mean()),
        "iou_median": float(table["iou"].median()),
        "dice_tumour_slices": dice_tumour_slices,
        "false_positive_rate_empty": false_positive_rate_empty,
        "n_empty_slices": n_empty_slices,
        "n_tumour_slices": n_tumour_slices,
    }


def classification_summary(
    y_true: Sequence[int] | np.ndarray, probability: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict:
    """Score tumour/no-tumour predictions against reference labels.

    A slice is predicted positive when its probability is >= ``threshold``.

    Args:
        y_true: (N,) reference labels, 0 (no tumour) or 1 (tumour).
        probability: (N,) predicted probability of a tumour, in [0, 1].
        threshold: probability at and above which a prediction counts as positive, in [0, 1].

    Returns:
        JSON-serialisable dict with accuracy, precision, recall, f1, roc_auc, average_precision
        (float or None), confusion_matrix as [[tn, fp], [fn, tp]] (list of int), threshold (float),
        n_positive and n_negative (int). Precision, recall and f1 are 0.0 where their denominator
        is zero.

    Raises:
        ValueError: if the lengths differ, the input is empty or not 1-D, a label is not 0 or 1,
            a probability or the threshold lies outside [0, 1].
    """
    labels, probability = _check_classification_input(y_true, probability)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")

    predicted = (probability >= threshold).astype(int)
    confusion = sklearn_metrics.confusion_matrix(labels, predicted, labels=[0, 1])
    n_positive = int(labels.sum())
    n_negative = int(len(labels) - n_positive)

    # NOTE: ROC AUC and average precision are undefined when y_true contains one class only, because
    # the ROC curve needs both positives and negatives and precision-recall needs positives.
    # They are None then, rather than sklearn's error or its warning with a placeholder value.
    if n_positive and n_negative:
        roc_auc = float(sklearn_metrics.roc_auc_score(labels, probability))
        average_precision = float(sklearn_metrics.average_precision_score(labels, probability))
    else:
        roc_auc = None
        average_precision = None

    return {
        "accuracy": float(sklearn_metrics.accuracy_score(labels, predicted)),
        "precision": float(sklearn_metrics.precision_score(labels, predicted, zero_division=0)),
        "recall": float(sklearn_metrics.recall_score(labels, predicted, zero_division=0)),
        "f1": float(sklearn_metrics.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": roc_auc,
        "average_precision": average_precision,
        "confusion_matrix": [[int(count) for count in row] for row in confusion],
        "threshold": float(threshold),
        "n_positive": n_positive,
        "n_negative": n_negative,
    }


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Estimate a percentile bootstrap confidence interval of a statistic.

    Each resample draws len(values) values with replacement, and the interval is the central
    ``confidence`` share of the statistic over all resamples.

    Args:
        values: (N,) observations, for example one Dice per patient.
        statistic: function from a 1-D array to a number.
        n_resamples: number of bootstrap resamples, at least 1.
        confidence: coverage of the interval, strictly between 0 and 1.
        seed: seed of the random generator, so that the interval is reproducible.

    Returns:
        (low, high) bounds of the interval.

    Raises:
        ValueError: if values is empty, not 1-D or not finite, or n_resamples or confidence is out of range.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        n_invalid = int((~np.isfinite(values)).sum())
        raise ValueError(f"values must be finite, got {n_invalid} NaN or infinite values")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")

    rng = np.random.default_rng(seed)
    resample_indices = rng.integers(0, len(values), size=(n_resamples, len(values)))
    statistics = np.array([statistic(values[indices]) for indices in resample_indices], dtype=float)

    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(statistics, [tail, 100.0 - tail])
    return float(low), float(high)


def _overlap_counts(pred: np.ndarray, true: np.ndarray) -> tuple[int, int, int]:
    pred = np.asarray(pred, dtype=bool)
    true = np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(
            f"pred and true must have the same shape, got pred {pred.shape} and true {true.shape}"
        )
    return int(np.count_nonzero(pred & true)), int(np.count_nonzero(pred)), int(np.count_nonzero(true))


def _per_slice_counts(
    pred_masks: np.ndarray, true_masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the (N,) int64 intersection, predicted area and reference area of each slice."""
    intersection = np.count_nonzero(pred_masks & true_masks, axis=(1, 2)).astype(np.int64)
    pred_area = np.count_nonzero(pred_masks, axis=(1, 2)).astype(np.int64)
    true_area = np.count_nonzero(true_masks, axis=(1, 2)).astype(np.int64)
    return intersection, pred_area, true_area


def _check_mask_stack(
    pred_masks: np.ndarray, true_masks: np.ndarray, patient_ids: Sequence[str] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred_masks = np.asarray(pred_masks, dtype=bool)
    true_masks = np.asarray(true_masks, dtype=bool)
    patient_ids = np.asarray(patient_ids).astype(str)

    if pred_masks.ndim != 3:
        raise ValueError(f"pred_masks must be (N, H, W), got shape {pred_masks.shape}")
    if true_masks.shape != pred_masks.shape:
        raise ValueError(
            "pred_masks and true_masks must have the same shape, "
            f"got {pred_masks.shape} and {true_masks.shape}"
        )
    if patient_ids.shape != (len(pred_masks),):
        raise ValueError(
            f"patient_ids must be ({len(pred_masks)},), one id per slice, got shape {patient_ids.shape}"
        )
    return pred_masks, true_masks, patient_ids


def _check_classification_input(
    y_true: Sequence[int] | np.ndarray, probability: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true)
    probability = np.asarray(probability, dtype=float)

    if labels.ndim != 1 or probability.ndim != 1:
        raise ValueError(
            f"y_true and probability must be 1-D, got shapes {labels.shape} and {probability.shape}"
        )
    if len(labels) != len(probability):
        raise ValueError(
            f"y_true and probability must have the same length, got {len(labels)} and {len(probability)}"
        )
    if len(labels) == 0:
        raise ValueError("y_true and probability are empty, at least one sample is needed")

    unexpected = sorted(set(np.unique(labels).tolist()) - {0, 1})
    if unexpected:
        raise ValueError(f"y_true must contain only the labels 0 and 1, got {unexpected[:5]}")

    outside = ~((probability >= 0.0) & (probability <= 1.0))
    if outside.any():
        raise ValueError(
            f"probability must be within [0, 1], got {int(outside.sum())} values outside it "
            f"(first: {probability[outside][0]})"
        )
    return labels.astype(int), probability
