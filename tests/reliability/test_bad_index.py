"""Bad index CSVs and dataset folders: a named error that points at the file or line, or a skipped row.

Covered elsewhere and not repeated here: a missing column (tests/data/test_index.py::
test_read_index_missing_column), a repeated image_path (::test_read_index_duplicated_image_path),
a bad mask flag (::test_read_index_bad_mask_value), an unnumbered slice
(::test_build_index_skips_unnumbered_slice) and a scoring CSV without image_path
(tests/scoring/test_score_sources.py::test_csv_without_required_column).
"""

import os

import pandas as pd
import pytest
from bad_inputs import good_mask_tiff, good_slice_tiff, write_files, write_index_csv

from braintumor.data.index import build_index, load_index, read_index, write_index
from braintumor.scoring.sources import list_source

HEADER = "patient_id,image_path,mask_path,mask\n"


def unreadable_csvs() -> dict[str, tuple[bytes, str]]:
    """CSV files that pandas cannot parse, and the words of the error."""
    return {
        "zero-byte CSV": (b"", "the CSV file is empty; expected a header row"),
        "Latin-1 CSV": ((HEADER + "Pé,P_1.tif,P_1_mask.tif,0\n").encode("latin-1"), "not UTF-8 text (found the byte 0xe9). Save the CSV as UTF-8."),
        "row with an extra field": ((HEADER + "P,P_1.tif,P_1_mask.tif,0\nP,P_2.tif,P_2_mask.tif,0,1\n").encode(), "Expected 4 fields in line 3, saw 5"),
    }


@pytest.mark.parametrize("case", unreadable_csvs())
def test_unparseable_index_csv_named_error(tmp_path, case):
    data, message = unreadable_csvs()[case]
    path = tmp_path / "index.csv"
    path.write_bytes(data)

    with pytest.raises(ValueError) as caught:
        read_index(path)

    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize("case", unreadable_csvs())
def test_unparseable_scoring_csv_named_error(tmp_path, case):
    data, message = unreadable_csvs()[case]
    path = tmp_path / "to_score.csv"
    path.write_bytes(data.replace(b",mask_path,mask", b"").replace(b",P_1_mask.tif,0", b"").replace(b",P_2_mask.tif,0", b""))

    with pytest.raises(ValueError) as caught:
        list_source(path)

    assert str(caught.value).startswith(f"{path}: ")
    if case != "row with an extra field":
        assert message.split(" (")[0] in str(caught.value)


def test_extra_columns_ignored(tmp_path, good_pair):
    image, mask = good_pair
    frame = pd.DataFrame({"patient_id": ["GOOD"], "image_path": [str(image)], "mask_path": [str(mask)], "mask": [1], "scanner": ["GE 1.5T"]})
    frame.to_csv(tmp_path / "index.csv", index=False)

    result = read_index(tmp_path / "index.csv")

    assert list(result.columns) == ["patient_id", "image_path", "mask_path", "mask"]
    assert result["image_path"].tolist() == [str(image)]


def test_utf8_bom_csv_read(tmp_path, good_pair):
    image, mask = good_pair
    text = HEADER + f"GOOD,{image},{mask},1\n"
    (tmp_path / "index.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())

    assert read_index(tmp_path / "index.csv")["patient_id"].tolist() == ["GOOD"]


def test_csv_repeated_slice_id_rejected(tmp_path):
    rows = [("P", "a/P_1.tif", "a/P_1_mask.tif", 0), ("P", "b/P_2.tif", "b/P_2_mask.tif", 0), ("P", "b/P_01.tif", "b/P_01_mask.tif", 0)]
    path = write_index_csv(tmp_path / "index.csv", rows)

    with pytest.raises(ValueError, match=r"index.csv: patient_id and slice number repeated in lines 4; each slice of a patient must appear once"):
        read_index(path)


def test_folder_repeated_slice_id_skipped(tmp_path):
    files = {"P/P_1.tif": good_slice_tiff(1), "P/P_1_mask.tif": good_mask_tiff(), "P/P_01.tif": good_slice_tiff(2), "P/P_01_mask.tif": good_mask_tiff()}
    root = tmp_path / "kaggle_repeated"
    write_files(root, files)

    result = build_index(root)

    assert [path.rsplit("/", 1)[1] for path in result.frame["image_path"]] == ["P_01.tif"]
    assert [(item.path, item.reason) for item in result.skipped] == [
        (str(root.resolve() / "P" / "P_1.tif"), "slice number 1 repeated (already taken by P_01.tif)")
    ]


def test_non_utf8_file_name_skipped(tmp_path):
    root = tmp_path / "kaggle_names"
    write_files(root, {"P/P_1.tif": good_slice_tiff(1), "P/P_1_mask.tif": good_mask_tiff()})
    folder = os.fsencode(root / "P")
    for suffix, data in ((b".tif", good_slice_tiff(2)), (b"_mask.tif", good_mask_tiff())):
        with open(folder + b"/P\xff_2" + suffix, "wb") as file:  # 0xff is never valid UTF-8
            file.write(data)

    result = build_index(root)
    written = write_index(result.frame, tmp_path / "out" / "index.csv")

    assert [path.rsplit("/", 1)[1] for path in result.frame["image_path"]] == ["P_1.tif"]
    assert [(item.path, item.reason) for item in result.skipped] == [
        (str(root.resolve() / "P" / "P\\udcff_2.tif"), "file or folder name is not valid UTF-8; rename it")
    ]
    assert len(read_index(written)) == 1


def test_spaced_paths_round_trip(tmp_path):
    root = tmp_path / "my scans"
    write_files(root, {"Patient 7/Patient 7_1.tif": good_slice_tiff(), "Patient 7/Patient 7_1_mask.tif": good_mask_tiff()})

    result = build_index(root)
    reread = load_index(write_index(result.frame, tmp_path / "out dir" / "index.csv"))

    assert result.skipped == []
    assert reread.skipped == []
    assert reread.frame["patient_id"].tolist() == ["Patient 7"]
    assert reread.frame["image_path"].tolist() == [str(root.resolve() / "Patient 7" / "Patient 7_1.tif")]
