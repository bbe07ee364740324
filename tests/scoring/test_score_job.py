import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scoring_inputs import (
    BAD_MEMBERS,
    BAD_PATIENT,
    REAL_PATIENTS,
    REAL_SLICE_NUMBERS,
    add_tar_member,
    add_zip_symlink,
    tar_folder,
    zip_folder,
)

from braintumor.scoring.job import run_scoring
from braintumor.scoring.tables import LABEL_COLUMNS, PATIENT_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_MEMBERS = sorted(f"{patient}/{patient}_{number}.tif" for patient in REAL_PATIENTS for number in REAL_SLICE_NUMBERS)
# 12 ground-truth masks, notes.txt and .DS_Store
IGNORED_COUNT = len(REAL_MEMBERS) + 2


def read_tables(output: Path) -> dict[str, pd.DataFrame]:
    return {
        "labels": pd.read_parquet(output / "labels.parquet"),
        "errors": pd.read_csv(output / "errors.csv", keep_default_na=False),
        "patients": pd.read_csv(output / "patients.csv"),
    }


def output_files(output: Path, pattern: str = "*") -> dict[str, bytes]:
    """The files of an output folder matching `pattern`, but the part files and the run's summary, with their bytes."""
    return {
        path.relative_to(output).as_posix(): path.read_bytes()
        for path in sorted(output.rglob(pattern))
        if path.is_file() and ".parts" not in path.parts and path.name != "summary.json"
    }


def files_outside(root: Path, output: Path) -> list[str]:
    return sorted(str(path) for path in root.rglob("*") if path.is_file() and output not in path.parents)


@pytest.fixture(scope="module")
def folder_run(ray_local, tiny_models, scoring_folder, tmp_path_factory):
    """One scoring run of the test folder: (summary, output folder)."""
    output = tmp_path_factory.mktemp("folder_run") / "scored"
    summary = run_scoring(scoring_folder, output, *tiny_models, batch_size=4)
    return summary, output


def test_folder_run_labels(folder_run):
    _, output = folder_run
    labels = read_tables(output)["labels"]

    assert list(labels.columns) == LABEL_COLUMNS
    assert list(labels["member"]) == REAL_MEMBERS
    assert labels["tumour_probability"].between(0, 1).all()
    assert set(labels["label"]) <= {0, 1}
    assert set(labels["segmenter_version"]) == {"test-seg-1"}
    assert set(labels["classifier_version"]) == {"test-cls-1"}
    assert list(labels["slice_number"]) == [int(member.rsplit("_", 1)[1][:-4]) for member in REAL_MEMBERS]


def test_folder_run_csv_matches_parquet(folder_run):
    _, output = folder_run
    from_parquet = read_tables(output)["labels"]
    from_csv = pd.read_csv(output / "labels.csv", dtype={"slice_number": "Int64"})

    assert list(from_csv.columns) == LABEL_COLUMNS
    pd.testing.assert_frame_equal(
        from_csv.drop(columns="tumour_probability"), from_parquet.drop(columns="tumour_probability")
    )
    assert (from_csv["tumour_probability"].astype(np.float32) == from_parquet["tumour_probability"]).all()


def test_folder_run_masks(folder_run):
    _, output = folder_run
    labels = read_tables(output)["labels"]

    for row in labels.itertuples():
        assert row.mask_file == row.member[: -len(".tif")] + "_pred_mask.png"
        mask = cv2.imread(str(output / row.mask_file), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8, row.mask_file
        assert mask.shape == (256, 256), row.mask_file
        assert set(np.unique(mask)) <= {0, 255}, row.mask_file
        assert int((mask == 255).sum()) == row.tumour_area_pixels, row.mask_file
    masks = sorted(path.relative_to(output).as_posix() for path in output.rglob("*_pred_mask.png"))
    assert masks == sorted(labels["mask_file"])
    assert not [path for path in output.rglob("*") if ".partial-" in path.name]


def test_folder_run_errors(folder_run):
    summary, output = folder_run
    errors = read_tables(output)["errors"]

    assert sorted(errors["member"]) == sorted(BAD_MEMBERS)
    for row in errors.itertuples():
        assert BAD_MEMBERS[row.member] in row.reason, (row.member, row.reason)
    assert summary.failed == len(BAD_MEMBERS)
    assert summary.exit_status == 1


def test_folder_run_summary(folder_run):
    summary, output = folder_run
    written = json.loads((output / "summary.json").read_text())

    assert (summary.scored, summary.skipped, summary.failed) == (len(REAL_MEMBERS), 0, len(BAD_MEMBERS))
    assert summary.ignored == IGNORED_COUNT
    assert written["scored"] == len(REAL_MEMBERS)
    assert written["normalization"] == "slice-zscore-v1"
    assert "no patient volume is needed" in written["normalization_scope"]
    assert written["models"]["segmenter"]["version"] == "test-seg-1"
    assert written["slices_per_second"] > 0
    assert "12 scored, 0 skipped (already complete), 8 failed, 14 ignored" in summary.line()


def test_folder_run_patients(folder_run):
    _, output = folder_run
    tables = read_tables(output)
    patients, labels = tables["patients"], tables["labels"]

    assert list(patients.columns) == PATIENT_COLUMNS
    assert list(patients["patient_id"]) == sorted([*REAL_PATIENTS, BAD_PATIENT])
    by_patient = patients.set_index("patient_id")
    for patient in REAL_PATIENTS:
        rows = labels[labels["patient_id"] == patient]
        assert by_patient.loc[patient, "slices_scored"] == len(REAL_SLICE_NUMBERS)
        assert by_patient.loc[patient, "tumour_slices"] == rows["label"].sum()
        assert by_patient.loc[patient, "tumour_area_pixels"] == rows["tumour_area_pixels"].sum()
    assert by_patient.loc[BAD_PATIENT, "slices_failed"] == len(BAD_MEMBERS)


def test_zip_and_tar_match_folder(folder_run, tiny_models, scoring_folder, tmp_path):
    _, folder_output = folder_run
    expected = read_tables(folder_output)
    escape = (scoring_folder / REAL_MEMBERS[0]).read_bytes()

    zip_path = zip_folder(scoring_folder, tmp_path / "scans.zip", prefix="kaggle_3m/")
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("../escape_1.tif", escape)
        archive.writestr("/tmp/escape_2.tif", escape)
        archive.writestr("kaggle_3m/../../escape_3.tif", escape)
        add_zip_symlink(archive, "kaggle_3m/LINK/LINK_1.tif", "/etc/passwd")
    tar_path = tar_folder(scoring_folder, tmp_path / "scans.tar", mode="w")
    with tarfile.open(tar_path, "a") as archive:
        add_tar_member(archive, "../escape_1.tif", escape)
        add_tar_member(archive, "/tmp/escape_2.tif", escape)
        add_tar_member(archive, "LINK/LINK_1.tif", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add_tar_member(archive, "LINK/LINK_2.tif", kind=tarfile.LNKTYPE, link="../../escape.tif")
    hostile = {"zip": 4, "tar": 4}

    for kind, path in (("zip", zip_path), ("tar", tar_path)):
        run_root = tmp_path / f"{kind}_run"
        output = run_root / "scored"
        before = files_outside(tmp_path, output)

        summary = run_scoring(path, output, *tiny_models, batch_size=4)

        found = read_tables(output)
        pd.testing.assert_frame_equal(found["labels"].drop(columns="source"), expected["labels"].drop(columns="source"))
        assert all(source.startswith(f"{path}!/") for source in found["labels"]["source"])
        assert output_files(output, "*_pred_mask.png") == output_files(folder_output, "*_pred_mask.png"), kind
        errors = found["errors"]
        bad = errors[errors["member"].isin(list(BAD_MEMBERS))]
        pd.testing.assert_frame_equal(
            bad.drop(columns="source").reset_index(drop=True), expected["errors"].drop(columns="source")
        )
        patients = found["patients"][found["patients"]["patient_id"] != "LINK"].reset_index(drop=True)
        pd.testing.assert_frame_equal(patients, expected["patients"])
        unsafe = errors[~errors["member"].isin(list(BAD_MEMBERS))]
        assert len(unsafe) == hostile[kind], unsafe
        assert all(("unsafe member name" in reason) or ("link member" in reason) for reason in unsafe["reason"])
        assert summary.failed == len(BAD_MEMBERS) + hostile[kind]
        assert files_outside(tmp_path, output) == before, kind


def test_rerun_skips_complete_slices(folder_run, tiny_models, scoring_folder):
    _, output = folder_run
    before = output_files(output)

    summary = run_scoring(scoring_folder, output, *tiny_models, batch_size=4)

    # Slices that failed are tried again; the scored ones are not.
    assert (summary.scored, summary.skipped, summary.failed) == (0, len(REAL_MEMBERS), len(BAD_MEMBERS))
    assert output_files(output) == before


def test_index_csv_matches_folder(folder_run, tiny_models, scoring_folder, tmp_path):
    _, folder_output = folder_run
    rows = [(member.split("/")[0], str(scoring_folder / member)) for member in REAL_MEMBERS]
    pd.DataFrame(rows, columns=["patient_id", "image_path"]).to_csv(tmp_path / "index.csv", index=False)

    summary = run_scoring(tmp_path / "index.csv", tmp_path / "scored", *tiny_models, batch_size=4)

    found = read_tables(tmp_path / "scored")["labels"]
    expected = read_tables(folder_output)["labels"]
    pd.testing.assert_frame_equal(found.drop(columns="source"), expected.drop(columns="source"))
    assert list(found["source"]) == [path for _, path in rows]
    assert (summary.scored, summary.failed, summary.exit_status) == (len(REAL_MEMBERS), 0, 0)


def test_missing_model_is_reported(scoring_folder, tiny_models, tmp_path):
    with pytest.raises(FileNotFoundError, match="segmenter model not found: .*missing has no model.keras"):
        run_scoring(scoring_folder, tmp_path / "scored", tmp_path / "missing", tiny_models[1])
    with pytest.raises(FileNotFoundError, match="classifier model not found"):
        run_scoring(scoring_folder, tmp_path / "scored", tiny_models[0], tmp_path / "missing")


def test_invalid_model_info_is_reported(scoring_folder, tiny_models, tmp_path):
    import shutil

    from braintumor.models.io import ModelLoadError

    segmenter = tmp_path / "segmenter"
    shutil.copytree(tiny_models[0], segmenter)
    (segmenter / "model_info.json").write_text("[]")

    with pytest.raises(ModelLoadError, match=r"segmenter/model_info.json: expected a JSON object, found list"):
        run_scoring(scoring_folder, tmp_path / "scored", segmenter, tiny_models[1])
    assert not (tmp_path / "scored").exists()


def test_cli_missing_model_exit_status(scoring_folder, tmp_path):
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "--input", str(scoring_folder), "--output", str(tmp_path / "scored"),
         "--segmenter", str(tmp_path / "missing")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 2
    assert "segmenter model not found" in result.stderr
    assert not (tmp_path / "scored").exists()


def test_limit_zero_writes_empty_tables(scoring_folder, tiny_models, tmp_path):
    summary = run_scoring(scoring_folder, tmp_path / "scored", *tiny_models, limit=0)

    assert (summary.slices, summary.scored, summary.skipped) == (0, 0, 0)
    assert summary.failed == 1  # the nested archive, found while listing
    assert pd.read_parquet(tmp_path / "scored" / "labels.parquet").empty


@pytest.mark.parametrize("settings", [{"batch_size": 0}, {"actors": 0}, {"cpus_per_actor": 0}, {"limit": -1}])
def test_invalid_settings_are_rejected(scoring_folder, tiny_models, tmp_path, settings):
    with pytest.raises(ValueError, match="must be"):
        run_scoring(scoring_folder, tmp_path / "scored", *tiny_models, **settings)
