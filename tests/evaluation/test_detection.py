import numpy as np
import pandas as pd
import pytest

from braintumor.evaluation.detection import (
    average_score,
    choose_average_threshold,
    choose_combination,
    choose_min_area,
    combine,
    pool_detection,
    score_rules,
)


def test_min_area_separates_specks_from_tumours():
    labels = np.array([0, 0, 0, 1, 1, 1])
    areas = np.array([0, 5, 20, 60, 300, 900])  # empty slices with small false positives
    assert choose_min_area(areas, labels) == 25


def test_min_area_ties_go_to_smallest():
    labels = np.array([0, 1])
    areas = np.array([0, 1000])
    assert choose_min_area(areas, labels) == 1


def test_combination_picks_better_join():
    labels = np.array([1, 1, 0, 0])
    classifier = np.array([True, False, True, False])
    segmenter = np.array([False, True, True, False])
    assert choose_combination(classifier, segmenter, labels) == "or"  # OR misses none, adds one FP
    labels_and = np.array([0, 0, 1, 0])
    assert choose_combination(classifier, segmenter, labels_and) == "and"


def test_combine_joins():
    first, second = np.array([True, True, False]), np.array([True, False, False])
    np.testing.assert_array_equal(combine(first, second, "and"), [True, False, False])
    np.testing.assert_array_equal(combine(first, second, "or"), [True, True, False])


def test_score_rules_counts():
    labels = np.array([0, 0, 1, 1])
    probability = np.array([0.1, 0.6, 0.7, 0.9])
    areas = np.array([0, 0, 50, 400])
    peaks = np.array([0.2, 0.1, 0.8, 0.99])
    scores = score_rules(labels, probability, 0.5, areas, 25, "and", peaks, 0.5)
    assert scores["classifier"]["confusion_matrix"] == [[1, 1], [0, 2]]
    assert scores["segmenter"]["confusion_matrix"] == [[2, 0], [0, 2]]
    assert scores["combined"]["confusion_matrix"] == [[2, 0], [0, 2]]
    assert scores["segmenter"]["roc_auc"] == 1.0
    # Averaged scores 0.15, 0.35, 0.75 and 0.945: the classifier's false positive drops out.
    assert scores["averaged"]["confusion_matrix"] == [[2, 0], [0, 2]]
    assert scores["averaged"]["roc_auc"] == 1.0


def test_average_score_means_both():
    np.testing.assert_allclose(average_score(np.array([0.2, 1.0]), np.array([0.6, 0.0])), [0.4, 0.5])


def test_average_threshold_best_f1():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.05, 0.3, 0.62, 0.66, 0.8, 0.9])
    assert choose_average_threshold(scores, labels) == 0.65


def test_average_threshold_ties_nearest_half():
    labels = np.array([0, 1])
    scores = np.array([0.02, 0.98])
    assert choose_average_threshold(scores, labels) == 0.5


def _write_slices(folder, patients, labels, classifier_probability, areas, peaks, averaged, split="test"):
    folder.mkdir(parents=True)
    count = len(labels)
    averaged_score = (np.asarray(classifier_probability) + np.asarray(peaks)) / 2
    pd.DataFrame({
        "patient_id": patients, "slice_number": range(count), "split": split, "label": labels,
        "classifier_probability": classifier_probability, "segmenter_area": areas, "segmenter_peak": peaks,
        "averaged_score": averaged_score,
        "classifier": (np.asarray(classifier_probability) >= 0.5).astype(int),
        "segmenter": (np.asarray(areas) >= 25).astype(int),
        "combined": ((np.asarray(classifier_probability) >= 0.5) | (np.asarray(areas) >= 25)).astype(int),
        "averaged": averaged,
    }).to_csv(folder / "detection_slices.csv", index=False)
    return folder


def test_pool_detection_counts_all_folds(tmp_path):
    first = _write_slices(tmp_path / "fold-1", ["a", "a", "b"], [0, 1, 1], [0.2, 0.9, 0.4], [0, 300, 40], [0.1, 0.9, 0.8], [0, 1, 1])
    second = _write_slices(tmp_path / "fold-2", ["c", "c"], [0, 1], [0.6, 0.7], [0, 10], [0.2, 0.6], [0, 1])
    # Validation rows of a fold are not pooled.
    with (second / "detection_slices.csv").open("a") as file:
        file.write("z,9,validation,1,0.0,0,0.0,0.0,0,0,0,0\n")

    summary = pool_detection([first, second])

    assert summary["slices"] == 5
    assert summary["patients"] == 3
    assert summary["rules"]["classifier"]["confusion_matrix"] == [[1, 1], [1, 2]]
    assert summary["rules"]["segmenter"]["confusion_matrix"] == [[2, 0], [1, 2]]
    assert summary["rules"]["averaged"]["confusion_matrix"] == [[2, 0], [0, 3]]
    assert summary["rules"]["averaged"]["f1_per_comparison"] == [1.0, 1.0]
    assert summary["rules"]["combined"]["roc_auc"] is None
    assert summary["rules"]["averaged"]["roc_auc"] == 1.0


def test_pool_detection_rejects_shared_patient(tmp_path):
    first = _write_slices(tmp_path / "fold-1", ["a", "b"], [0, 1], [0.2, 0.9], [0, 300], [0.1, 0.9], [0, 1])
    second = _write_slices(tmp_path / "fold-2", ["b"], [1], [0.7], [40], [0.6], [1])

    with pytest.raises(ValueError, match="'b'"):
        pool_detection([first, second])


def test_pool_detection_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="detection_slices.csv not found"):
        pool_detection([tmp_path / "nowhere"])
