from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from braintumor.data.index import (
    INDEX_COLUMNS,
    build_index,
    load_index,
    read_index,
    slice_number,
    write_index,
)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _index_rows(root: Path) -> list[dict]:
    frame = build_index(root).frame
    return frame.to_dict("records")


# slice_number


def test_slice_number_of_image_and_mask():
    assert slice_number("TCGA_CS_4942_19970222_10.tif") == 10
    assert slice_number("TCGA_CS_4942_19970222_10_mask.tif") == 10
    assert slice_number(Path("/data/p/p_3.png")) == 3


def test_slice_number_bad_name():
    with pytest.raises(ValueError, match=r"scan.tif: file name does not end in _<slice number>"):
        slice_number("scan.tif")


# build_index on a fake kaggle_3m folder


def test_build_index_columns_and_rows(make_fake_dataset):
    root = make_fake_dataset(n_patients=2, n_slices=3)

    result = build_index(root)

    assert list(result.frame.columns) == INDEX_COLUMNS
    assert len(result.frame) == 6
    assert sorted(result.frame["patient_id"].unique()) == ["FAKE_0", "FAKE_1"]
    assert result.skipped == []


def test_build_index_paths_absolute(make_fake_dataset, monkeypatch):
    root = make_fake_dataset(n_patients=1)
    monkeypatch.chdir(root.parent)

    frame = build_index(Path(root.name)).frame

    assert all(Path(path).is_absolute() for path in frame["image_path"])
    assert all(Path(path).is_absolute() for path in frame["mask_path"])


def test_build_index_sorts_slices_by_integer(make_fake_dataset):
    root = make_fake_dataset(n_patients=1, n_slices=10)

    frame = build_index(root).frame

    numbers = [slice_number(path) for path in frame["image_path"]]
    assert numbers == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_build_index_mask_path_matches_image(make_fake_dataset):
    root = make_fake_dataset(n_patients=1)

    frame = build_index(root).frame

    for row in frame.itertuples():
        assert row.mask_path == row.image_path.replace(".tif", "_mask.tif")


def test_build_index_mask_flag_only_with_tumour(make_fake_dataset):
    # Slice 2 has a 10x10 tumour and slice 1 an empty mask. One tumour pixel on slice 3 is enough.
    root = make_fake_dataset(n_patients=1, n_slices=3)
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[255, 255] = 255
    tifffile.imwrite(root / "FAKE_0" / "FAKE_0_3_mask.tif", mask)

    frame = build_index(root).frame

    assert frame["mask"].tolist() == [0, 1, 1]


def test_build_index_skips_bad_files(make_fake_dataset):
    root = make_fake_dataset(n_patients=2, n_slices=3)
    (root / "FAKE_0" / "FAKE_0_1_mask.tif").unlink()
    (root / "FAKE_0" / "FAKE_0_2.tif").write_text("not a TIFF\n")
    tifffile.imwrite(root / "FAKE_1" / "FAKE_1_3_mask.tif", np.zeros((128, 128), dtype=np.uint8))

    result = build_index(root)

    reasons = {Path(item.path).name: item.reason for item in result.skipped}
    assert len(result.skipped) == 3
    assert reasons["FAKE_0_1.tif"] == "mask not found (expected FAKE_0_1_mask.tif)"
    assert reasons["FAKE_0_2.tif"].startswith("cannot decode TIFF")
    assert reasons["FAKE_1_3_mask.tif"] == "expected mask shape (256, 256), got (128, 128)"
    kept_names = sorted(Path(path).name for path in result.frame["image_path"])
    assert kept_names == ["FAKE_0_3.tif", "FAKE_1_1.tif", "FAKE_1_2.tif"]


def test_build_index_skips_unnumbered_slice(make_fake_dataset):
    root = make_fake_dataset(n_patients=1)
    (root / "FAKE_0" / "FAKE_0_1.tif").rename(root / "FAKE_0" / "scan.tif")

    result = build_index(root)

    assert [(Path(item.path).name, item.reason) for item in result.skipped] == [
        ("scan.tif", "file name does not end in _<slice number>, e.g. 'patient_12.tif'")
    ]
    assert len(result.frame) == 2


def test_build_index_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing: not a folder"):
        build_index(tmp_path / "missing")


def test_build_index_empty_folder(tmp_path):
    (tmp_path / "patient").mkdir()

    with pytest.raises(FileNotFoundError, match="no '<patient>/<patient>_<n>.tif' slices found"):
        build_index(tmp_path)


# read_index


@pytest.fixture
def fake_rows(make_fake_dataset):
    return _index_rows(make_fake_dataset(n_patients=2, n_slices=3))


def test_read_index_round_trip(fake_rows, tmp_path):
    csv_path = _write_csv(tmp_path / "index.csv", fake_rows)

    frame = read_index(csv_path)

    assert list(frame.columns) == INDEX_COLUMNS
    assert frame.to_dict("records") == fake_rows


def test_read_index_sorts_by_integer_slice(fake_rows, tmp_path):
    shuffled = [fake_rows[i] for i in (2, 0, 5, 1, 4, 3)]
    csv_path = _write_csv(tmp_path / "index.csv", shuffled)

    frame = read_index(csv_path)

    assert frame.to_dict("records") == fake_rows


def test_read_index_relative_paths(fake_rows, tmp_path, monkeypatch):
    data_root = Path(fake_rows[0]["image_path"]).parent.parent
    relative = [
        dict(row, image_path=str(Path(row["image_path"]).relative_to(data_root)),
             mask_path=str(Path(row["mask_path"]).relative_to(data_root)))
        for row in fake_rows
    ]
    csv_path = _write_csv(data_root / "index.csv", relative)
    monkeypatch.chdir(tmp_path)  # somewhere else, so only the CSV's folder can resolve the paths

    frame = read_index(csv_path)

    assert frame["image_path"].tolist() == [row["image_path"] for row in fake_rows]
    assert frame["mask_path"].tolist() == [row["mask_path"] for row in fake_rows]


def test_read_index_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.csv: index CSV not found"):
        read_index(tmp_path / "index.csv")


def test_read_index_missing_column(fake_rows, tmp_path):
    rows = [{key: value for key, value in row.items() if key != "mask"} for row in fake_rows]
    csv_path = _write_csv(tmp_path / "index.csv", rows)

    with pytest.raises(ValueError, match=r"missing column\(s\) \['mask'\]"):
        read_index(csv_path)


@pytest.mark.parametrize("bad_value", [2, "yes", ""])
def test_read_index_bad_mask_value(fake_rows, tmp_path, bad_value):
    fake_rows[1]["mask"] = bad_value
    csv_path = _write_csv(tmp_path / "index.csv", fake_rows)

    # Data row 2 is line 3 of the file, after the header.
    with pytest.raises(ValueError, match=r"column 'mask' must be 0 or 1; bad value in row\(s\) lines 3$"):
        read_index(csv_path)


def test_read_index_empty_path(fake_rows, tmp_path):
    fake_rows[3]["image_path"] = ""
    csv_path = _write_csv(tmp_path / "index.csv", fake_rows)

    with pytest.raises(ValueError, match=r"column 'image_path' is empty in row\(s\) lines 5$"):
        read_index(csv_path)


def test_read_index_empty_patient(fake_rows, tmp_path):
    fake_rows[0]["patient_id"] = " "
    csv_path = _write_csv(tmp_path / "index.csv", fake_rows)

    with pytest.raises(ValueError, match=r"column 'patient_id' is empty in row\(s\) lines 2$"):
        read_index(csv_path)


def test_read_index_duplicated_image_path(fake_rows, tmp_path):
    rows = fake_rows + [dict(fake_rows[0])]
    csv_path = _write_csv(tmp_path / "index.csv", rows)

    with pytest.raises(ValueError, match=r"image_path repeated in row\(s\) lines 8$"):
        read_index(csv_path)


def test_read_index_lists_first_five_bad_lines(fake_rows, tmp_path):
    rows = [dict(row, mask=7) for row in fake_rows]
    csv_path = _write_csv(tmp_path / "index.csv", rows)

    with pytest.raises(ValueError, match=r"lines 2, 3, 4, 5, 6 and 1 more$"):
        read_index(csv_path)


# write_index and load_index


def test_write_index_round_trip(fake_rows, tmp_path):
    path = write_index(pd.DataFrame(fake_rows), tmp_path / "out" / "index.csv")

    assert path == tmp_path / "out" / "index.csv"
    assert read_index(path).to_dict("records") == fake_rows


def test_write_index_leaves_no_partial(fake_rows, tmp_path):
    write_index(pd.DataFrame(fake_rows), tmp_path / "out" / "index.csv")

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["index.csv"]


def test_write_index_failure_keeps_old_file(fake_rows, tmp_path, monkeypatch):
    path = write_index(pd.DataFrame(fake_rows), tmp_path / "index.csv")
    before = path.read_text()

    def fail_midway(self, target, **kwargs):
        Path(target).write_text("patient_id,image_pa")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        write_index(pd.DataFrame(fake_rows[:1]), path)

    assert path.read_text() == before


def test_write_index_keeps_only_index_columns(fake_rows, tmp_path):
    frame = pd.DataFrame(fake_rows).assign(extra=1)

    path = write_index(frame, tmp_path / "index.csv")

    assert path.read_text().splitlines()[0] == ",".join(INDEX_COLUMNS)


def test_load_index_folder(make_fake_dataset):
    root = make_fake_dataset(n_patients=2, n_slices=3)

    result = load_index(root)

    assert len(result.frame) == 6
    assert result.skipped == []


def test_load_index_csv_skips_unreadable_rows(fake_rows, tmp_path):
    Path(fake_rows[1]["image_path"]).write_bytes(b"")
    Path(fake_rows[4]["mask_path"]).unlink()
    csv_path = _write_csv(tmp_path / "index.csv", fake_rows)

    result = load_index(csv_path)

    assert [item.path for item in result.skipped] == [fake_rows[1]["image_path"], fake_rows[4]["mask_path"]]
    assert [item.reason for item in result.skipped] == ["file is empty (0 bytes)", "file not found"]
    readable_rows = [row for i, row in enumerate(fake_rows) if i not in (1, 4)]
    assert result.frame.to_dict("records") == readable_rows


def test_load_index_csv_keeps_mask_column(fake_rows, tmp_path):
    # The flag is taken from the CSV as written, not recomputed from the mask files.
    rows = [dict(row, mask=1) for row in fake_rows]
    csv_path = _write_csv(tmp_path / "index.csv", rows)

    frame = load_index(csv_path).frame

    assert frame["mask"].tolist() == [1] * 6


# The real shared dataset


def test_real_index_counts(real_index):
    frame = real_index.frame

    assert len(frame) == 3250
    assert frame["patient_id"].nunique() == 90
    assert int(frame["mask"].sum()) == 1112
    assert real_index.skipped == []
