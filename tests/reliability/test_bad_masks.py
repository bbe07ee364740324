"""Bad and missing masks: rejected by read_mask, left out of the index, dropped by preprocessing."""

import pytest
from bad_inputs import good_mask_tiff, good_slice_tiff, mask_kinds, write_files, write_index_csv

from braintumor.data.index import build_index, load_index, read_index
from braintumor.data.io import SliceReadError, read_mask
from braintumor.preprocessing.pipeline import decode_batch

KINDS = {kind.kind: kind for kind in mask_kinds()}


@pytest.mark.parametrize("kind", KINDS)
def test_read_mask_rejects(tmp_path, kind):
    bad = KINDS[kind]
    path = tmp_path / bad.name
    path.write_bytes(bad.data)

    with pytest.raises(SliceReadError) as caught:
        read_mask(path)

    assert caught.value.path == str(path)
    assert bad.reason in caught.value.reason


def test_folder_index_skips_each_bad_mask(tmp_path):
    # Patient P: slice n has the bad mask P_n_mask.tif; slice 9 is good and slice 8 has no mask at all.
    files = {f"P/{bad.name}": bad.data for bad in KINDS.values()}
    files |= {f"P/P_{number}.tif": good_slice_tiff(number) for number in range(1, len(KINDS) + 1)}
    files |= {"P/P_8.tif": good_slice_tiff(8), "P/P_9.tif": good_slice_tiff(9), "P/P_9_mask.tif": good_mask_tiff()}
    root = tmp_path / "kaggle_bad_masks"
    write_files(root, files)

    result = build_index(root)

    assert [path.rsplit("/", 1)[1] for path in result.frame["image_path"]] == ["P_9.tif"]
    reasons = {item.path.rsplit("/", 1)[1]: item.reason for item in result.skipped}
    assert reasons.pop("P_8.tif") == "mask not found (expected P_8_mask.tif)"
    assert sorted(reasons) == sorted(bad.name for bad in KINDS.values())
    for bad in KINDS.values():
        assert bad.reason in reasons[bad.name], bad.kind


def test_index_csv_missing_mask_skipped(tmp_path, good_pair):
    image, mask = good_pair
    rows = [("GOOD", str(image), str(mask), 1), ("GOOD", str(image.with_name("GOOD_2.tif")), str(tmp_path / "GOOD_2_mask.tif"), 0)]
    image.with_name("GOOD_2.tif").write_bytes(good_slice_tiff(2))

    result = load_index(write_index_csv(tmp_path / "index.csv", rows))

    assert result.frame["image_path"].tolist() == [str(image)]
    assert [(item.path, item.reason) for item in result.skipped] == [(str(tmp_path / "GOOD_2_mask.tif"), "file not found")]


def test_preprocessing_drops_each_bad_mask(tmp_path, good_pair):
    image, mask = good_pair
    bad_masks = write_files(tmp_path / "bad", {bad.name: bad.data for bad in KINDS.values()})
    slices = write_files(tmp_path / "bad", {f"P_{n}.tif": good_slice_tiff(n) for n in range(1, len(KINDS) + 1)})
    rows = [("GOOD", str(image), str(mask), 1)]
    rows += [("P", str(slices[f"P_{n}.tif"]), str(bad_masks[f"P_{n}_mask.tif"]), 1) for n in range(1, len(KINDS) + 1)]
    frame = read_index(write_index_csv(tmp_path / "index.csv", rows))

    batch = decode_batch(frame)

    assert batch["image_path"].tolist() == [str(image)]
    assert batch["mask"].shape == (1, 256, 256, 1)
