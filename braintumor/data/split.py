"""Seeded train / validation / test split of patients, saved as JSON and reused by later runs.

Every slice of a patient lands in the same split, so no test metric is measured on a patient whose
other slices were trained on.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from braintumor import locations, s3

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def split_patients(
    index: pd.DataFrame, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, list[str]]:
    """Assign each patient to train, validation or test.

    Patients are shuffled with `seed` and cut by `fractions`, rounding the validation and test counts
    to at least one patient each. The patients with tumour slices and those without are shuffled
    and cut separately, so each split contains tumour slices whenever at least three patients do.

    Args:
        index: the dataset index (columns patient_id and mask).
        fractions: shares of patients for train, validation and test; they must sum to 1.
        seed: seed of the shuffle; the same index and seed give the same split.

    Returns:
        {"train": [...], "validation": [...], "test": [...]}, each list sorted.

    Raises:
        ValueError: bad fractions, fewer than 3 patients, or a split without tumour slices.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    has_tumour = index.groupby("patient_id")["mask"].max().sort_index()
    if len(has_tumour) < 3:
        raise ValueError(f"need at least 3 patients to split, got {len(has_tumour)}")

    rng = np.random.default_rng(seed)
    split = {name: [] for name in SPLIT_NAMES}
    for group in (has_tumour[has_tumour > 0].index, has_tumour[has_tumour == 0].index):
        patients = list(rng.permutation(np.asarray(group, dtype=object)))
        n_validation = max(1, round(len(patients) * fractions[1])) if len(patients) >= 3 else 0
        n_test = max(1, round(len(patients) * fractions[2])) if len(patients) >= 3 else 0
        n_train = len(patients) - n_validation - n_test
        split["train"] += patients[:n_train]
        split["validation"] += patients[n_train : n_train + n_validation]
        split["test"] += patients[n_train + n_validation :]

    split = {name: sorted(str(p) for p in patients) for name, patients in split.items()}
    check_split(split, index)
    return split


def fold_splits(
    index: pd.DataFrame, folds: int = 5, seed: int = 0, validation_fraction: float = 0.125
) -> list[dict[str, list[str]]]:
    """Cut the patients into `folds` test groups and return one train / validation / test split per fold.

    Each patient is a test patient in exactly one fold. Patients with and without tumour slices
    are shuffled with `seed` and dealt to the groups in turn, so every group gets its share of
    both. In each fold, `validation_fraction` of the other patients (of each kind, at least one
    with tumour) become validation patients and the rest train.

    Raises:
        ValueError: fewer than 2 folds, a validation fraction outside (0, 1), or a fold in which
            some split would have no tumour slice (too few patients with tumour for `folds`).
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    has_tumour = index.groupby("patient_id")["mask"].max().sort_index()
    kinds = (has_tumour[has_tumour > 0].index, has_tumour[has_tumour == 0].index)
    if len(kinds[0]) < 3 * folds:
        advice = "use fewer folds" if folds > 2 else "cross-validation needs more patients"
        raise ValueError(
            f"{folds} folds need at least {3 * folds} patients with tumour slices (one each for test, "
            f"validation and train in every fold), got {len(kinds[0])}; {advice}"
        )

    rng = np.random.default_rng(seed)
    groups: list[list[str]] = [[] for _ in range(folds)]
    position = 0
    for patients in kinds:
        for patient in rng.permutation(np.asarray(patients, dtype=object)):
            groups[position % folds].append(str(patient))
            position += 1

    splits = []
    for fold, test in enumerate(groups):
        fold_rng = np.random.default_rng([seed, fold])
        split = {"train": [], "validation": [], "test": sorted(test)}
        for patients in kinds:
            others = [str(patient) for patient in patients if str(patient) not in test]
            others = [str(patient) for patient in fold_rng.permutation(np.asarray(others, dtype=object))]
            minimum = 1 if patients is kinds[0] else 0
            n_validation = max(minimum, round(len(others) * validation_fraction))
            if patients is kinds[0] and n_validation >= len(others):
                raise ValueError(
                    f"validation_fraction {validation_fraction} leaves fold {fold + 1} no patient with tumour "
                    "slices to train on; use a smaller validation fraction"
                )
            split["validation"] += others[:n_validation]
            split["train"] += others[n_validation:]
        split = {name: sorted(patients) for name, patients in split.items()}
        check_split(split, index)
        splits.append(split)
    return splits


def check_split(split: dict[str, list[str]], index: pd.DataFrame) -> None:
    """Check that the split covers the index's patients once each and each split has tumour slices.

    Raises:
        ValueError: a patient in two splits, an index patient in no split, a missing split name,
            or a split without tumour slices.
    """
    missing_names = [name for name in SPLIT_NAMES if name not in split]
    if missing_names:
        raise ValueError(f"split has no {missing_names} list; expected keys {list(SPLIT_NAMES)}")
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for patient in split[name]:
            if patient in seen:
                raise ValueError(f"patient {patient} is in both '{seen[patient]}' and '{name}'")
            seen[patient] = name
    unassigned = sorted(set(index["patient_id"]) - set(seen))
    if unassigned:
        raise ValueError(
            f"{len(unassigned)} patient(s) of the index are in no split, e.g. {unassigned[:3]}; "
            "the saved split belongs to another dataset: delete split.json or pass another output folder"
        )
    tumour_patients = set(index.loc[index["mask"] > 0, "patient_id"])
    for name in SPLIT_NAMES:
        if not tumour_patients & set(split[name]):
            raise ValueError(f"split '{name}' has no slice with tumour; use more patients or another seed")


def save_split(split: dict[str, list[str]], path: str | Path, seed: int | None = None) -> str | Path:
    """Write the split as JSON atomically, to a local file or (by a single PUT) to an `s3://` URI."""
    payload = {name: split[name] for name in SPLIT_NAMES}
    if seed is not None:
        payload["seed"] = seed
    if s3.is_s3(path):
        locations.write_text(path, json.dumps(payload, indent=2) + "\n")
        return str(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    partial.replace(path)
    return path


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split written by `save_split`."""
    payload = json.loads(locations.read_text(path))
    return {name: list(payload[name]) for name in SPLIT_NAMES}


def load_or_create_split(
    index: pd.DataFrame, path: str | Path, fractions=DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, list[str]]:
    """Reuse the split saved at `path` (a local file or an `s3://` URI) if there is one, else create and save it."""
    path = locations.as_location(path)
    if locations.is_file(path):
        split = load_split(path)
        check_split(split, index)
        logger.info("reusing the patient split in %s", path)
    else:
        split = split_patients(index, fractions, seed)
        save_split(split, path, seed)
        logger.info("wrote a new patient split to %s", path)
    counts = {name: len(patients) for name, patients in split.items()}
    logger.info("patients per split: %s", counts)
    return split


def split_of_patients(split: dict[str, list[str]]) -> dict[str, str]:
    """Map each patient id to the name of its split."""
    return {patient: name for name, patients in split.items() for patient in patients}
