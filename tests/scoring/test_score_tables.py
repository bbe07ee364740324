import pandas as pd

from braintumor.scoring.sources import MemberError, SliceEntry
from braintumor.scoring.storage import LocalStorage
from braintumor.scoring.tables import (
    FAILED,
    SCORED,
    assemble_tables,
    completed_members,
    read_latest_results,
    write_part,
)

VERSIONS = {"segmenter": "seg-1", "classifier": "cls-1"}


def entry(member: str, patient_id: str = "P1") -> SliceEntry:
    return SliceEntry(member, f"/in/{member}", patient_id, int(member.rsplit("_", 1)[1].split(".")[0]), f"/in/{member}", 10)


def part_rows(results: list[tuple], versions: dict = VERSIONS) -> dict[str, list]:
    """Part columns from (member, status, probability, label, area, reason) tuples."""
    columns = ["member", "status", "tumour_probability", "label", "tumour_area_pixels", "reason"]
    rows = {column: [result[index] for result in results] for index, column in enumerate(columns)}
    rows["segmenter_version"] = [versions["segmenter"]] * len(results)
    rows["classifier_version"] = [versions["classifier"]] * len(results)
    return rows


def test_latest_part_row_wins(tmp_path):
    storage = LocalStorage(tmp_path)
    write_part(storage, part_rows([("P1/P1_1.tif", FAILED, None, None, None, "cannot decode TIFF")]), "00000000000000000001")
    write_part(storage, part_rows([("P1/P1_1.tif", SCORED, 0.9, 1, 30, None)]), "00000000000000000002")

    results = read_latest_results(storage)

    assert list(results["member"]) == ["P1/P1_1.tif"]
    assert results.loc[0, "status"] == SCORED
    assert results.loc[0, "tumour_area_pixels"] == 30


def test_no_parts_gives_empty_results(tmp_path):
    results = read_latest_results(LocalStorage(tmp_path))

    assert results.empty
    assert "member" in results.columns


def test_completed_needs_same_versions_and_mask(tmp_path):
    storage = LocalStorage(tmp_path)
    entries = [entry("P1/P1_1.tif"), entry("P1/P1_2.tif"), entry("P1/P1_3.tif")]
    write_part(storage, part_rows([("P1/P1_1.tif", SCORED, 0.9, 1, 30, None), ("P1/P1_2.tif", SCORED, 0.1, 0, 0, None)]), "1")
    write_part(storage, part_rows([("P1/P1_3.tif", FAILED, None, None, None, "empty")]), "1")
    storage.write_bytes("P1/P1_1_pred_mask.png", b"png")
    results = read_latest_results(storage)

    # P1_2 lacks its mask file; P1_3 failed and is tried again.
    assert completed_members(results, storage, entries, VERSIONS) == {"P1/P1_1.tif"}
    assert completed_members(results, storage, entries, {"segmenter": "seg-2", "classifier": "cls-1"}) == set()


def test_assemble_tables(tmp_path):
    storage = LocalStorage(tmp_path)
    entries = [entry("P1/P1_1.tif"), entry("P1/P1_2.tif"), entry("P2/P2_1.tif", "P2"), entry("P2/P2_2.tif", "P2")]
    write_part(
        storage,
        part_rows([
            ("P1/P1_2.tif", SCORED, 0.9, 1, 30, None),
            ("P1/P1_1.tif", SCORED, 0.2, 0, 5, None),
            ("P2/P2_1.tif", FAILED, None, None, None, "file is empty (0 bytes)"),
        ]),
        "1",
    )
    listing_errors = [MemberError("../escape_1.tif", "/in.zip!/../escape_1.tif", "", "unsafe member name: name contains a '..' component")]

    labels, errors, patients = assemble_tables(entries, listing_errors, read_latest_results(storage))

    assert list(labels["member"]) == ["P1/P1_1.tif", "P1/P1_2.tif"]
    assert list(labels["mask_file"]) == ["P1/P1_1_pred_mask.png", "P1/P1_2_pred_mask.png"]
    assert list(labels["slice_number"]) == [1, 2]
    assert list(errors["member"]) == ["../escape_1.tif", "P2/P2_1.tif", "P2/P2_2.tif"]
    assert errors.loc[2, "reason"] == "no result was written for this slice, so rerun the job to score it"
    expected = pd.DataFrame(
        {"patient_id": ["P1", "P2"], "slices_scored": [2, 0], "tumour_slices": [1, 0], "tumour_area_pixels": [35, 0], "slices_failed": [0, 2]}
    )
    pd.testing.assert_frame_equal(patients, expected)


def test_assemble_tables_without_slices():
    labels, errors, patients = assemble_tables([], [], read_latest_results(LocalStorage("/nonexistent-scoring-output")))

    assert labels.empty
    assert errors.empty
    assert patients.empty
    assert "tumour_probability" in labels.columns
