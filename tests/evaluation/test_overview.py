import json
import logging

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import tifffile

from braintumor.evaluation.overview import dataset_overview

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OUTPUT_FILES = ("class_balance.png", "slices_per_patient.png", "tumour_area.png", "example_slices.png")

# Tumour pixels per slice of the fake dataset: patient p1 has 2 tumour slices, p2 has 1.
TUMOUR_AREAS = {("p1", 0): 0, ("p1", 1): 16, ("p1", 2): 36, ("p2", 0): 0, ("p2", 1): 0, ("p2", 2): 4}


def read_slice(path):
    return tifffile.imread(path)


def read_mask(path):
    return tifffile.imread(path) == 255


@pytest.fixture
def fake_index(tmp_path):
    """Write 2 patients x 3 slices of 32x32 uint8 TIFFs with square masks and return their index."""
    rng = np.random.default_rng(0)
    rows = []
    for (patient_id, slice_number), area in TUMOUR_AREAS.items():
        patient_dir = tmp_path / "data" / patient_id
        patient_dir.mkdir(parents=True, exist_ok=True)
        image_path = patient_dir / f"{patient_id}_{slice_number}.tif"
        mask_path = patient_dir / f"{patient_id}_{slice_number}_mask.tif"

        side = int(np.sqrt(area))
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[4 : 4 + side, 6 : 6 + side] = 255
        tifffile.imwrite(image_path, rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
        tifffile.imwrite(mask_path, mask)

        rows.append(
            {
                "patient_id": patient_id,
                "image_path": str(image_path),
                "mask_path": str(mask_path),
                "mask": int(area > 0),
            }
        )
    return pd.DataFrame(rows)


def test_overview_counts(fake_index, tmp_path):
    summary = dataset_overview(fake_index, tmp_path / "overview", read_slice, read_mask, n_examples=2)

    assert summary["n_patients"] == 2
    assert summary["n_tumour_patients"] == 2
    assert summary["n_slices"] == 6
    assert summary["n_tumour_slices"] == 3
    assert summary["n_empty_slices"] == 3
    # Areas of the tumour slices: 16, 36 and 4 pixels.
    assert summary["tumour_area_median"] == 16.0
    assert summary["tumour_area_mean"] == pytest.approx(56 / 3)
    assert summary["slices_per_patient_min"] == 3
    assert summary["slices_per_patient_median"] == 3.0
    assert summary["slices_per_patient_max"] == 3


def test_overview_writes_files(fake_index, tmp_path, caplog):
    out_dir = tmp_path / "nested" / "overview"
    with caplog.at_level(logging.INFO, logger="braintumor.evaluation.overview"):
        summary = dataset_overview(fake_index, out_dir, read_slice, read_mask)

    for name in OUTPUT_FILES:
        path = out_dir / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        assert matplotlib.image.imread(path).shape[0] >= 200, name

    assert json.loads((out_dir / "overview.json").read_text()) == summary
    written = [record.getMessage() for record in caplog.records if record.getMessage().startswith("wrote ")]
    assert len(written) == 5


def test_overview_more_examples_than_tumour_slices(fake_index, tmp_path):
    # 4 examples requested, but only 3 tumour slices exist.
    summary = dataset_overview(fake_index, tmp_path, read_slice, read_mask, n_examples=4)
    assert summary["n_tumour_slices"] == 3
    assert (tmp_path / "example_slices.png").is_file()


def test_overview_without_tumour_slices(fake_index, tmp_path):
    empty_only = fake_index[fake_index["mask"] == 0]
    summary = dataset_overview(empty_only, tmp_path, read_slice, read_mask)

    assert summary["n_tumour_slices"] == 0
    assert summary["n_tumour_patients"] == 0
    assert summary["tumour_area_median"] is None
    assert summary["tumour_area_mean"] is None
    assert summary["slices_per_patient_min"] == 1
    assert summary["slices_per_patient_max"] == 2
    for name in OUTPUT_FILES:
        assert (tmp_path / name).is_file(), name


def test_overview_warns_on_empty_tumour_mask(fake_index, tmp_path, caplog):
    mislabelled = fake_index.copy()
    mislabelled.loc[0, "mask"] = 1
    with caplog.at_level(logging.WARNING, logger="braintumor.evaluation.overview"):
        dataset_overview(mislabelled, tmp_path, read_slice, read_mask, n_examples=1)
    assert "1 slices have mask = 1 in the index but an empty mask file" in caplog.text


def test_overview_bad_input(fake_index, tmp_path):
    with pytest.raises(ValueError, match=r"missing the column\(s\) \['mask_path'\]"):
        dataset_overview(fake_index.drop(columns="mask_path"), tmp_path, read_slice, read_mask)
    with pytest.raises(ValueError, match=r"index has no rows"):
        dataset_overview(fake_index.iloc[:0], tmp_path, read_slice, read_mask)
    with pytest.raises(ValueError, match=r"n_examples must be at least 1, got 0"):
        dataset_overview(fake_index, tmp_path, read_slice, read_mask, n_examples=0)
