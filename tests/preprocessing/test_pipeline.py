import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from braintumor.data.index import build_index, write_index
from braintumor.data.io import read_mask, read_slice
from braintumor.data.split import SPLIT_NAMES, load_split
from braintumor.preprocessing.normalization import NORMALIZATION, normalize_slices
from braintumor.preprocessing.pipeline import MANIFEST, decode_batch, parquet_dir, preprocess

# Ray start-up and the first preprocessing run happen in the setup of the first test here. A hang in
# Ray looks like silence, so every test has a time limit.
pytestmark = pytest.mark.timeout(600)


def _read_split(output: Path, split: str) -> pd.DataFrame:
    """Read one split's Parquet shards into a frame sorted by image path; image and mask as arrays."""
    table = pq.read_table(parquet_dir(output, split))
    frame = table.drop_columns(["image", "mask"]).to_pandas()
    frame["image"] = list(table.column("image").combine_chunks().to_numpy_ndarray())
    frame["mask"] = list(table.column("mask").combine_chunks().to_numpy_ndarray())
    return frame.sort_values("image_path").reset_index(drop=True)


def _parquet_files(output: Path) -> dict[str, tuple[int, int]]:
    """Map each file under parquet/ to its (size, mtime in ns)."""
    return {
        str(path.relative_to(output)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted((output / "parquet").rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def split_frames(preprocessed):
    result, _ = preprocessed
    return {name: _read_split(result.output, name) for name in SPLIT_NAMES}


# The session's five real patients


def test_preprocess_writes_all_splits(preprocessed):
    result, _ = preprocessed

    assert result.written == list(SPLIT_NAMES)
    assert result.reused == []
    assert result.skipped == []


def test_preprocess_output_files(preprocessed):
    result, _ = preprocessed

    for name in ("index.csv", "split.json", "skipped.csv"):
        assert (result.output / name).is_file(), name
    for split in SPLIT_NAMES:
        assert parquet_dir(result.output, split).is_dir(), split
        assert not parquet_dir(result.output, split).with_name(f"{split}.partial").exists(), split


def test_preprocess_rows_match_index(preprocessed, split_frames):
    result, _ = preprocessed
    index = pd.read_csv(result.output / "index.csv")
    split = load_split(result.output / "split.json")

    assert len(index) == 100  # 5 patients of 20 slices
    for name in SPLIT_NAMES:
        expected = int(index["patient_id"].isin(split[name]).sum())
        assert result.rows[name] == expected, name
        assert len(split_frames[name]) == expected, name


def test_preprocess_split_counts(preprocessed):
    # 5 tumour patients cut 70/10/20: one each for validation and test, three for train.
    result, _ = preprocessed
    split = load_split(result.output / "split.json")

    assert [len(split[name]) for name in SPLIT_NAMES] == [3, 1, 1]
    assert result.rows == {"train": 60, "validation": 20, "test": 20}


def test_preprocess_no_patient_in_two_splits(split_frames):
    seen = {}
    for name, frame in split_frames.items():
        for patient in frame["patient_id"].unique():
            assert patient not in seen, f"{patient} in {seen.get(patient)} and {name}"
            seen[patient] = name

    assert len(seen) == 5


def test_preprocess_patients_follow_split(preprocessed, split_frames):
    result, _ = preprocessed
    split = load_split(result.output / "split.json")

    for name in SPLIT_NAMES:
        assert sorted(split_frames[name]["patient_id"].unique()) == split[name], name


def test_preprocess_keeps_patient_and_slice_number(preprocessed, split_frames):
    result, _ = preprocessed
    index = pd.read_csv(result.output / "index.csv").set_index("image_path")

    for frame in split_frames.values():
        for row in frame.itertuples():
            assert row.patient_id == index.loc[row.image_path, "patient_id"]
            assert row.slice_number == int(Path(row.image_path).stem.rsplit("_", 1)[1])


def test_preprocess_labels_match_index(preprocessed, split_frames):
    result, _ = preprocessed
    index = pd.read_csv(result.output / "index.csv").set_index("image_path")

    for frame in split_frames.values():
        assert frame["label"].tolist() == [int(index.loc[path, "mask"]) for path in frame["image_path"]]


def test_preprocess_column_shapes_and_types(split_frames):
    frame = split_frames["validation"]

    assert frame["image"][0].shape == (256, 256, 3)
    assert frame["image"][0].dtype == np.float32
    assert frame["mask"][0].shape == (256, 256, 1)
    assert frame["mask"][0].dtype == np.uint8


def test_preprocess_image_is_normalized_slice(split_frames):
    frame = split_frames["train"]

    for position in (0, 17, 59):
        row = frame.iloc[position]
        expected = normalize_slices(read_slice(row["image_path"]))
        np.testing.assert_array_equal(row["image"], expected)


def test_preprocess_mask_is_read_mask(preprocessed, split_frames):
    result, _ = preprocessed
    mask_paths = pd.read_csv(result.output / "index.csv").set_index("image_path")["mask_path"]
    frame = split_frames["test"]
    tumour_rows = frame.index[frame["label"] == 1]
    assert len(tumour_rows) > 0

    for position in (0, tumour_rows[0]):
        row = frame.iloc[position]
        expected = read_mask(mask_paths[row["image_path"]])
        np.testing.assert_array_equal(row["mask"][..., 0], expected.astype(np.uint8))


def test_preprocess_manifest(preprocessed):
    result, _ = preprocessed

    for split in SPLIT_NAMES:
        manifest = json.loads((parquet_dir(result.output, split) / MANIFEST).read_text())
        assert manifest["normalization"] == NORMALIZATION
        assert manifest["rows"] == result.rows[split]
        assert len(manifest["index_sha256"]) == 64


def test_preprocess_rerun_reuses_splits(preprocessed):
    first, data = preprocessed
    files_before = _parquet_files(first.output)
    split_before = (first.output / "split.json").read_text()

    second = preprocess(data, first.output)

    assert second.reused == list(SPLIT_NAMES)
    assert second.written == []
    assert second.rows == first.rows
    assert _parquet_files(first.output) == files_before
    assert (first.output / "split.json").read_text() == split_before


def test_preprocess_rerun_no_duplicate_rows(preprocessed):
    first, data = preprocessed

    preprocess(data, first.output)

    for split in SPLIT_NAMES:
        table = pq.read_table(parquet_dir(first.output, split), columns=["image_path"])
        paths = table.column("image_path").to_pylist()
        assert len(paths) == first.rows[split], split
        assert len(set(paths)) == len(paths), split


# Tiny fake datasets


def test_preprocess_csv_with_corrupt_file(make_fake_dataset, ray_local, tmp_path):
    root = make_fake_dataset(n_patients=3, n_slices=3)
    csv_path = write_index(build_index(root).frame, tmp_path / "index.csv")
    corrupt = root / "FAKE_0" / "FAKE_0_1.tif"
    corrupt.write_text("not a TIFF\n")
    output = tmp_path / "out"

    result = preprocess(csv_path, output)

    assert [item.path for item in result.skipped] == [str(corrupt)]
    assert result.skipped[0].reason.startswith("cannot decode TIFF")
    assert sum(result.rows.values()) == 8
    skipped_csv = pd.read_csv(output / "skipped.csv")
    assert skipped_csv["path"].tolist() == [str(corrupt)]
    assert skipped_csv["reason"][0].startswith("cannot decode TIFF")
    written = pd.concat([_read_split(output, name) for name in SPLIT_NAMES])
    assert str(corrupt) not in set(written["image_path"])
    assert len(written) == 8


def test_preprocess_rewrites_split_when_index_changes(make_fake_dataset, ray_local, tmp_path):
    root = make_fake_dataset(n_patients=3, n_slices=3)
    corrupt = root / "FAKE_0" / "FAKE_0_1.tif"
    original = corrupt.read_bytes()
    corrupt.write_bytes(b"")
    output = tmp_path / "out"
    first = preprocess(root, output)
    split_of_fake_0 = next(name for name in SPLIT_NAMES if "FAKE_0" in load_split(output / "split.json")[name])

    corrupt.write_bytes(original)
    second = preprocess(root, output)

    assert second.written == [split_of_fake_0]
    assert sorted(second.reused) == sorted(set(SPLIT_NAMES) - {split_of_fake_0})
    assert second.rows[split_of_fake_0] == first.rows[split_of_fake_0] + 1
    assert len(_read_split(output, split_of_fake_0)) == 3
    assert pd.read_csv(output / "skipped.csv").empty


def test_decode_batch_drops_unreadable_rows(make_fake_dataset):
    root = make_fake_dataset(n_patients=1, n_slices=2)
    frame = build_index(root).frame
    Path(frame["image_path"][0]).write_text("not a TIFF\n")

    batch = decode_batch(frame)

    assert batch["image_path"].tolist() == [frame["image_path"][1]]
    assert batch["slice_number"].tolist() == [2]
    assert batch["label"].tolist() == [1]
    assert batch["image"].shape == (1, 256, 256, 3)
    assert batch["mask"].shape == (1, 256, 256, 1)
    assert batch["mask"].max() == 1


def test_decode_batch_all_unreadable(make_fake_dataset):
    root = make_fake_dataset(n_patients=1, n_slices=1)
    frame = build_index(root).frame
    Path(frame["mask_path"][0]).unlink()

    batch = decode_batch(frame)

    assert len(batch["patient_id"]) == 0
    assert batch["image"].shape == (0, 256, 256, 3)
    assert batch["mask"].shape == (0, 256, 256, 1)
