import numpy as np

from braintumor.evaluation.tuning import search, search_classifier_threshold, single_change_gains


def _volume():
    """Two patients: a tumour each, and a speck of false positive on an empty slice of the first."""
    true = np.zeros((4, 32, 32), bool)
    true[0, 8:24, 8:24] = True
    true[2, 4:20, 4:20] = True
    probability = np.where(true, 0.8, 0.05).astype(np.float32)
    probability[1, 0:3, 0:3] = 0.9  # 9-pixel false positive
    patients = np.array(["a", "a", "b", "b"])
    return probability, true, patients


def test_search_removes_false_positive_speck():
    probability, true, patients = _volume()
    results = search(probability, probability, true, patients)
    best = results[0]
    assert best["dice"] == 1.0
    assert best["min_component_pixels"] == 16
    assert best["flip_averaging"] is False
    assert best["threshold"] == 0.5


def test_ties_go_to_plain_settings():
    probability, true, patients = _volume()
    probability[1] = 0.05  # no speck: every setting scores the same
    best = search(probability, probability, true, patients)[0]
    assert (best["threshold"], best["flip_averaging"], best["min_component_pixels"]) == (0.5, False, 0)


def test_gains_against_plain_threshold():
    probability, true, patients = _volume()
    gains = single_change_gains(search(probability, probability, true, patients))
    patient_a = 2 * 256 / (256 + 256 + 9)  # the speck adds 9 predicted pixels to patient a
    assert np.isclose(gains["baseline_dice"], (patient_a + 1.0) / 2)
    assert np.isclose(gains["min_component_pixels_16"], 1.0 - gains["baseline_dice"])
    assert gains["flip_averaging"] == 0.0


def test_classifier_threshold_maximises_f1():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probability = np.array([0.1, 0.2, 0.35, 0.4, 0.7, 0.9])
    best = search_classifier_threshold(labels, probability)[0]
    assert 0.35 < best["threshold"] <= 0.4
    assert best["f1"] == 1.0
