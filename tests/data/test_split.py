import json

import pandas as pd
import pytest

from braintumor.data.split import (
    SPLIT_NAMES,
    check_split,
    fold_splits,
    load_or_create_split,
    load_split,
    save_split,
    split_of_patients,
    split_patients,
)


def _synthetic_index(n_tumour: int = 60, n_empty: int = 30, slices: int = 4) -> pd.DataFrame:
    """Index rows of `n_tumour` patients with a tumour on their first slice and `n_empty` without."""
    rows = []
    for number in range(n_tumour + n_empty):
        patient = f"P{number:02d}"
        for slice_index in range(slices):
            has_tumour = number < n_tumour and slice_index == 0
            rows.append({"patient_id": patient, "image_path": f"{patient}/{patient}_{slice_index + 1}.tif", "mask": int(has_tumour)})
    return pd.DataFrame(rows)


@pytest.fixture
def index_90():
    return _synthetic_index()


def _assert_disjoint_and_complete(split, index):
    assigned = [patient for name in SPLIT_NAMES for patient in split[name]]
    assert len(assigned) == len(set(assigned)), "a patient is in two splits"
    assert set(assigned) == set(index["patient_id"])


def _tumour_slices(split, index, name):
    return int(index.loc[index["patient_id"].isin(split[name]), "mask"].sum())


# split_patients


def test_split_keys_and_sorted_lists(index_90):
    split = split_patients(index_90)

    assert list(split) == list(SPLIT_NAMES)
    for name in SPLIT_NAMES:
        assert split[name] == sorted(split[name])


def test_split_synthetic_no_overlap(index_90):
    split = split_patients(index_90)

    _assert_disjoint_and_complete(split, index_90)


def test_split_synthetic_counts(index_90):
    # 60 tumour patients: 6 validation, 12 test, 42 train; 30 without: 3, 6, 21.
    split = split_patients(index_90)

    assert len(split["train"]) == 63
    assert len(split["validation"]) == 9
    assert len(split["test"]) == 18


def test_split_synthetic_tumour_in_each_split(index_90):
    split = split_patients(index_90)

    for name in SPLIT_NAMES:
        assert _tumour_slices(split, index_90, name) > 0, name


def test_split_same_seed_same_split(index_90):
    assert split_patients(index_90, seed=3) == split_patients(index_90, seed=3)


def test_split_other_seed_differs(index_90):
    assert split_patients(index_90, seed=0) != split_patients(index_90, seed=1)


def test_split_independent_of_row_order(index_90):
    shuffled = index_90.sample(frac=1.0, random_state=7)

    assert split_patients(shuffled, seed=5) == split_patients(index_90, seed=5)


@pytest.mark.parametrize(
    "fractions",
    [(0.7, 0.3), (0.7, 0.2, 0.2), (1.0, 0.0, 0.0), (0.8, -0.1, 0.3), (0.5, 0.25, 0.125, 0.125)],
)
def test_split_fractions_validated(index_90, fractions):
    with pytest.raises(ValueError, match=r"fractions must be three positive numbers summing to 1, got"):
        split_patients(index_90, fractions=fractions)


def test_split_too_few_patients():
    index = _synthetic_index(n_tumour=2, n_empty=0)

    with pytest.raises(ValueError, match="need at least 3 patients to split, got 2"):
        split_patients(index)


def test_split_too_few_tumour_patients():
    # Two tumour patients both go to train, so validation has no tumour slice.
    index = _synthetic_index(n_tumour=2, n_empty=10)

    with pytest.raises(ValueError, match="split 'validation' has no slice with tumour; use more patients or another seed"):
        split_patients(index)


def test_split_real_index_no_overlap(real_index):
    index = real_index.frame

    split = split_patients(index)

    _assert_disjoint_and_complete(split, index)
    for name in SPLIT_NAMES:
        assert _tumour_slices(split, index, name) > 0, name


def test_split_of_patients(index_90):
    split = split_patients(index_90)

    mapping = split_of_patients(split)

    assert len(mapping) == 90
    for name in SPLIT_NAMES:
        assert {mapping[patient] for patient in split[name]} == {name}


# check_split


def test_check_split_patient_in_two_splits(index_90):
    split = split_patients(index_90)
    patient = split["train"][0]
    split["test"].append(patient)

    with pytest.raises(ValueError, match=f"patient {patient} is in both 'train' and 'test'"):
        check_split(split, index_90)


def test_check_split_unassigned_patients(index_90):
    split = split_patients(index_90)
    split["train"] = split["train"][4:]

    with pytest.raises(ValueError, match=r"4 patient\(s\) of the index are in no split, e\.g\. \['P\d\d', 'P\d\d', 'P\d\d'\]; .*delete split.json"):
        check_split(split, index_90)


def test_check_split_missing_name(index_90):
    split = split_patients(index_90)
    del split["validation"]

    with pytest.raises(ValueError, match=r"split has no \['validation'\] list"):
        check_split(split, index_90)


def test_check_split_without_tumour(index_90):
    split = split_patients(index_90)
    tumour_patients = set(index_90.loc[index_90["mask"] > 0, "patient_id"])
    moved = [patient for patient in split["test"] if patient in tumour_patients]
    split["test"] = [patient for patient in split["test"] if patient not in tumour_patients]
    split["train"] = sorted(split["train"] + moved)

    with pytest.raises(ValueError, match="split 'test' has no slice with tumour"):
        check_split(split, index_90)


# save_split, load_split, load_or_create_split


def test_save_load_round_trip(index_90, tmp_path):
    split = split_patients(index_90, seed=4)

    path = save_split(split, tmp_path / "runs" / "split.json", seed=4)

    assert load_split(path) == split
    assert json.loads(path.read_text())["seed"] == 4
    assert not path.with_name("split.json.partial").exists()


def test_save_without_seed(index_90, tmp_path):
    path = save_split(split_patients(index_90), tmp_path / "split.json")

    assert "seed" not in json.loads(path.read_text())


def test_load_or_create_writes_new_split(index_90, tmp_path):
    path = tmp_path / "split.json"

    split = load_or_create_split(index_90, path, seed=2)

    assert path.is_file()
    assert split == split_patients(index_90, seed=2)
    assert load_split(path) == split


def test_load_or_create_reuses_saved_split(index_90, tmp_path):
    path = tmp_path / "split.json"
    first = load_or_create_split(index_90, path, seed=0)
    saved = path.read_text()

    # Another seed would give another split; the saved one wins.
    second = load_or_create_split(index_90, path, seed=1)

    assert second == first
    assert second != split_patients(index_90, seed=1)
    assert path.read_text() == saved


def test_load_or_create_rejects_split_of_other_dataset(index_90, tmp_path):
    path = tmp_path / "split.json"
    load_or_create_split(_synthetic_index(n_tumour=10, n_empty=5), path)

    with pytest.raises(ValueError, match="in no split"):
        load_or_create_split(index_90, path)


# fold_splits


def test_folds_each_patient_tested_once(index_90):
    splits = fold_splits(index_90, folds=5)

    tested = [patient for split in splits for patient in split["test"]]
    assert len(splits) == 5
    assert len(tested) == len(set(tested))
    assert set(tested) == set(index_90["patient_id"])


def test_folds_disjoint_with_tumours(index_90):
    for split in fold_splits(index_90, folds=5):
        _assert_disjoint_and_complete(split, index_90)
        for name in SPLIT_NAMES:
            assert _tumour_slices(split, index_90, name) > 0, name


def test_folds_sizes(index_90):
    # 60 tumour and 30 other patients: 12 + 6 test patients per fold, 12.5% of the other 72 validate.
    for split in fold_splits(index_90, folds=5):
        assert len(split["test"]) == 18
        assert len(split["validation"]) == 9
        assert len(split["train"]) == 63


def test_folds_same_seed_same_folds(index_90):
    assert fold_splits(index_90, folds=3, seed=4) == fold_splits(index_90, folds=3, seed=4)
    assert fold_splits(index_90, folds=3, seed=4) != fold_splits(index_90, folds=3, seed=5)


def test_folds_real_index_by_patient(real_index):
    index = real_index.frame

    splits = fold_splits(index, folds=5)

    for split in splits:
        _assert_disjoint_and_complete(split, index)
    tested = sorted(patient for split in splits for patient in split["test"])
    assert tested == sorted(index["patient_id"].unique())


@pytest.mark.parametrize(
    ("folds", "fraction", "message"),
    [
        (1, 0.125, "folds must be at least 2, got 1"),
        (5, 0.0, "validation_fraction must be between 0 and 1, got 0.0"),
        (25, 0.125, "25 folds need at least 75 patients with tumour slices.*use fewer folds"),
    ],
)
def test_folds_invalid_settings(index_90, folds, fraction, message):
    with pytest.raises(ValueError, match=message):
        fold_splits(index_90, folds=folds, validation_fraction=fraction)


def test_folds_validation_share_leaves_training_tumours():
    index = _synthetic_index(n_tumour=6, n_empty=0)

    with pytest.raises(ValueError, match="validation_fraction 0.9 leaves fold 1 no patient with tumour slices to train on"):
        fold_splits(index, folds=2, validation_fraction=0.9)
