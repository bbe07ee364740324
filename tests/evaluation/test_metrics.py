import json

import numpy as np
import pytest

from braintumor.evaluation.metrics import (
    bootstrap_interval,
    classification_summary,
    dice_score,
    iou_score,
    per_patient_segmentation,
    segmentation_summary,
)


def _mask(shape, pixels):
    mask = np.zeros(shape, dtype=bool)
    for row, column in pixels:
        mask[row, column] = True
    return mask


# 4x4 masks: pred has 3 pixels, true has 4 pixels, and they share 2 pixels, (0, 0) and (0, 1).
PRED_4X4 = _mask((4, 4), [(0, 0), (0, 1), (3, 3)])
TRUE_4X4 = _mask((4, 4), [(0, 0), (0, 1), (1, 0), (1, 1)])


def test_dice_hand_computed():
    # 2 * 2 / (3 + 4)
    assert dice_score(PRED_4X4, TRUE_4X4) == pytest.approx(4 / 7)


def test_iou_hand_computed():
    # 2 / (3 + 4 - 2)
    assert iou_score(PRED_4X4, TRUE_4X4) == pytest.approx(2 / 5)


def test_dice_iou_symmetric():
    assert dice_score(TRUE_4X4, PRED_4X4) == dice_score(PRED_4X4, TRUE_4X4)
    assert iou_score(TRUE_4X4, PRED_4X4) == iou_score(PRED_4X4, TRUE_4X4)


def test_dice_iou_identical_masks():
    assert dice_score(TRUE_4X4, TRUE_4X4) == 1.0
    assert iou_score(TRUE_4X4, TRUE_4X4) == 1.0


def test_dice_iou_both_empty():
    empty = np.zeros((4, 4), dtype=bool)
    assert dice_score(empty, empty) == 1.0
    assert iou_score(empty, empty) == 1.0


@pytest.mark.parametrize("empty_side", ["pred", "true"])
def test_dice_iou_one_empty(empty_side):
    empty = np.zeros((4, 4), dtype=bool)
    pred, true = (empty, TRUE_4X4) if empty_side == "pred" else (TRUE_4X4, empty)
    assert dice_score(pred, true) == 0.0
    assert iou_score(pred, true) == 0.0


def test_dice_any_shape():
    pred = np.array([True, True, False, False])
    true = np.array([True, False, False, False])
    # 2 * 1 / (2 + 1)
    assert dice_score(pred, true) == pytest.approx(2 / 3)
    assert dice_score(pred.reshape(1, 2, 2), true.reshape(1, 2, 2)) == pytest.approx(2 / 3)


def test_dice_shape_mismatch_message():
    with pytest.raises(ValueError, match=r"pred \(4, 4\) and true \(4, 5\)"):
        dice_score(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match=r"pred \(2,\) and true \(3,\)"):
        iou_score(np.zeros(2, bool), np.zeros(3, bool))


def _pooling_case():
    """Patient "a": slice 0 is predicted exactly (4 pixels), slice 1 has 12 tumour pixels predicted empty.

    Patient "b" has one empty slice with an empty prediction. Per-slice Dice of "a" averages to
    (1 + 0) / 2 = 0.5, while its pooled volume Dice is 2 * 4 / (4 + 16) = 2/5.
    """
    true = np.zeros((3, 4, 4), dtype=bool)
    pred = np.zeros((3, 4, 4), dtype=bool)
    true[0, :2, :2] = True
    pred[0, :2, :2] = True
    true[1, 1:, :] = True
    patient_ids = ["a", "a", "b"]
    return pred, true, patient_ids


def test_per_patient_pools_volume():
    pred, true, patient_ids = _pooling_case()
    table = per_patient_segmentation(pred, true, patient_ids)
    row = table.set_index("patient_id").loc["a"]

    per_slice_mean = np.mean([dice_score(pred[i], true[i]) for i in range(2)])
    assert per_slice_mean == pytest.approx(0.5)
    assert row["dice"] == pytest.approx(2 / 5)
    # IoU pooled: 4 / (4 + 16 - 4)
    assert row["iou"] == pytest.approx(4 / 16)


def test_per_patient_columns_and_counts():
    pred, true, patient_ids = _pooling_case()
    table = per_patient_segmentation(pred, true, patient_ids)

    assert list(table.columns) == [
        "patient_id", "n_slices", "n_tumour_slices", "dice", "iou", "true_area", "pred_area"
    ]
    assert table["patient_id"].tolist() == ["a", "b"]
    assert table["n_slices"].tolist() == [2, 1]
    assert table["n_tumour_slices"].tolist() == [2, 0]
    assert table["true_area"].tolist() == [16, 0]
    assert table["pred_area"].tolist() == [4, 0]
    # Patient "b" has empty reference and prediction, which counts as perfect agreement.
    assert table["dice"].tolist()[1] == 1.0
    assert table["iou"].tolist()[1] == 1.0


def test_per_patient_sorted_by_id():
    masks = np.zeros((3, 2, 2), dtype=bool)
    table = per_patient_segmentation(masks, masks, ["p2", "p10", "p1"])
    assert table["patient_id"].tolist() == ["p1", "p10", "p2"]


def test_per_patient_bad_input_messages():
    masks = np.zeros((3, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match=r"pred_masks must be \(N, H, W\), got shape \(4, 4\)"):
        per_patient_segmentation(masks[0], masks[0], ["a"])
    with pytest.raises(ValueError, match=r"same shape, got \(3, 4, 4\) and \(2, 4, 4\)"):
        per_patient_segmentation(masks, masks[:2], ["a", "a", "b"])
    with pytest.raises(ValueError, match=r"patient_ids must be \(3,\), one id per slice, got shape \(2,\)"):
        per_patient_segmentation(masks, masks, ["a", "b"])


def test_summary_pooling_case():
    pred, true, patient_ids = _pooling_case()
    summary = segmentation_summary(pred, true, patient_ids)

    assert summary["n_patients"] == 2
    assert summary["n_slices"] == 3
    assert summary["n_tumour_slices"] == 2
    assert summary["n_empty_slices"] == 1
    # Patients: "a" 2/5 and "b" 1.0.
    assert summary["dice_mean"] == pytest.approx((2 / 5 + 1.0) / 2)
    assert summary["dice_median"] == pytest.approx((2 / 5 + 1.0) / 2)
    assert summary["iou_mean"] == pytest.approx((1 / 4 + 1.0) / 2)
    # Tumour slices only: 1.0 and 0.0.
    assert summary["dice_tumour_slices"] == pytest.approx(0.5)
    assert summary["false_positive_rate_empty"] == 0.0


def test_summary_false_positive_rate_empty():
    true = np.zeros((5, 4, 4), dtype=bool)
    pred = np.zeros((5, 4, 4), dtype=bool)
    true[0, 0, 0] = True
    pred[0, 0, 0] = True
    # Slices 1-4 have empty reference masks, and slices 1 and 3 have one predicted pixel.
    pred[1, 2, 2] = True
    pred[3, 0, 3] = True

    summary = segmentation_summary(pred, true, ["a"] * 5)

    assert summary["n_empty_slices"] == 4
    assert summary["false_positive_rate_empty"] == pytest.approx(2 / 4)
    assert summary["dice_tumour_slices"] == pytest.approx(1.0)


def test_summary_no_tumour_or_no_empty_slices():
    masks = np.zeros((2, 4, 4), dtype=bool)
    summary = segmentation_summary(masks, masks, ["a", "b"])
    assert summary["dice_tumour_slices"] is None
    assert summary["false_positive_rate_empty"] == 0.0

    full = np.ones((2, 4, 4), dtype=bool)
    summary = segmentation_summary(full, full, ["a", "b"])
    assert summary["false_positive_rate_empty"] is None
    assert summary["dice_tumour_slices"] == 1.0


def test_summary_json_serialisable():
    pred, true, patient_ids = _pooling_case()
    summary = segmentation_summary(pred, true, patient_ids)
    assert json.loads(json.dumps(summary)) == summary
    for key, value in summary.items():
        assert type(value) in (int, float, type(None)), key


# Six samples with threshold 0.5: predictions [0, 1, 1, 0, 1, 1], so tn = 1, fp = 2, fn = 1, tp = 2.
Y_TRUE_6 = [0, 0, 0, 1, 1, 1]
PROBABILITY_6 = [0.1, 0.6, 0.7, 0.35, 0.8, 0.9]


def test_classification_hand_computed():
    summary = classification_summary(Y_TRUE_6, PROBABILITY_6)

    assert summary["accuracy"] == pytest.approx(3 / 6)
    assert summary["precision"] == pytest.approx(2 / 4)
    assert summary["recall"] == pytest.approx(2 / 3)
    # 2 * (1/2 * 2/3) / (1/2 + 2/3)
    assert summary["f1"] == pytest.approx(4 / 7)
    # Positive above negative in 7 of the 9 pairs: 0.35 beats only 0.1, 0.8 and 0.9 beat all three.
    assert summary["roc_auc"] == pytest.approx(7 / 9)
    # Ranked 0.9+ 0.8+ 0.7- 0.6- 0.35+ 0.1-: each third of recall is reached at precision 1, 1, 3/5.
    assert summary["average_precision"] == pytest.approx((1 + 1 + 3 / 5) / 3)
    assert summary["threshold"] == 0.5
    assert summary["n_positive"] == 3
    assert summary["n_negative"] == 3


def test_classification_confusion_layout():
    summary = classification_summary(Y_TRUE_6, PROBABILITY_6)
    (tn, fp), (fn, tp) = summary["confusion_matrix"]
    assert tn == 1
    assert fp == 2
    assert fn == 1
    assert tp == 2
    assert json.loads(json.dumps(summary)) == summary


def test_classification_threshold_inclusive():
    summary = classification_summary([0, 1], [0.3, 0.3], threshold=0.3)
    assert summary["confusion_matrix"] == [[0, 1], [0, 1]]


def test_classification_one_class():
    summary = classification_summary([0, 0, 0], [0.1, 0.2, 0.9])
    assert summary["roc_auc"] is None
    assert summary["average_precision"] is None
    assert summary["confusion_matrix"] == [[2, 1], [0, 0]]
    assert summary["recall"] == 0.0
    assert summary["n_positive"] == 0
    assert summary["n_negative"] == 3


@pytest.mark.parametrize(
    ("y_true", "probability", "threshold", "message"),
    [
        ([0, 1, 1], [0.2, 0.8], 0.5, r"same length, got 3 and 2"),
        ([0, 2, 1], [0.2, 0.8, 0.9], 0.5, r"y_true must contain only the labels 0 and 1, got \[2\]"),
        ([0, 1], [-0.1, 0.8], 0.5, r"probability must be within \[0, 1\], got 1 values outside it \(first: -0.1\)"),
        ([0, 1], [0.2, float("nan")], 0.5, r"probability must be within \[0, 1\].*first: nan"),
        ([0, 1], [0.2, 0.8], 1.5, r"threshold must be within \[0, 1\], got 1.5"),
        ([], [], 0.5, r"empty"),
        ([[0, 1]], [[0.2, 0.8]], 0.5, r"must be 1-D, got shapes \(1, 2\) and \(1, 2\)"),
    ],
)
def test_classification_bad_input(y_true, probability, threshold, message):
    with pytest.raises(ValueError, match=message):
        classification_summary(y_true, probability, threshold=threshold)


def test_bootstrap_contains_mean():
    values = np.random.default_rng(1).normal(0.7, 0.1, size=40)
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high


def test_bootstrap_narrows_with_more_values():
    rng = np.random.default_rng(2)
    small = rng.normal(0.7, 0.1, size=10)
    large = rng.normal(0.7, 0.1, size=1000)

    small_low, small_high = bootstrap_interval(small)
    large_low, large_high = bootstrap_interval(large)

    assert large_high - large_low < (small_high - small_low) / 3


def test_bootstrap_reproducible_with_seed():
    values = np.arange(20, dtype=float)
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) != bootstrap_interval(values, seed=4)


def test_bootstrap_other_statistic():
    low, high = bootstrap_interval([5.0] * 9, statistic=np.median, n_resamples=50)
    assert (low, high) == (5.0, 5.0)


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, r"non-empty 1-D array, got shape \(0,\)"),
        ([1.0, float("nan")], {}, r"finite, got 1 NaN or infinite"),
        ([1.0, 2.0], {"n_resamples": 0}, r"n_resamples must be at least 1, got 0"),
        ([1.0, 2.0], {"confidence": 1.0}, r"confidence must be strictly between 0 and 1, got 1.0"),
    ],
)
def test_bootstrap_bad_input(values, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(values, **kwargs)
