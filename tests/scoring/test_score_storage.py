import os

import pytest

from braintumor.scoring.sources import UnsafeNameError
from braintumor.scoring.storage import LocalStorage, open_storage


def all_files(root):
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def test_local_storage_round_trip(tmp_path):
    storage = LocalStorage(tmp_path / "out")

    storage.write_bytes("P1/P1_1_pred_mask.png", b"mask")
    storage.write_bytes(".parts/part-1.parquet", b"part")
    storage.write_bytes("P1/P1_1_pred_mask.png", b"mask v2")

    assert storage.read_bytes("P1/P1_1_pred_mask.png") == b"mask v2"
    assert storage.exists("P1/P1_1_pred_mask.png")
    assert not storage.exists("P1/P1_2_pred_mask.png")
    assert storage.list(".parts") == [".parts/part-1.parquet"]
    assert storage.list("missing") == []
    assert all_files(tmp_path / "out") == [".parts/part-1.parquet", "P1/P1_1_pred_mask.png"]
    storage.delete("P1/P1_1_pred_mask.png")
    storage.delete("P1/P1_1_pred_mask.png")
    assert not storage.exists("P1/P1_1_pred_mask.png")
    assert storage.uri() == str(tmp_path / "out")


@pytest.mark.parametrize("name", ["../escape.png", "/tmp/escape.png", "P1/../../escape.png", "..\\escape.png"])
def test_local_storage_rejects_names_outside(tmp_path, name):
    storage = LocalStorage(tmp_path / "out")

    with pytest.raises(UnsafeNameError):
        storage.write_bytes(name, b"x")
    assert all_files(tmp_path) == []


def test_local_storage_rejects_link_leading_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out" / "P1", target_is_directory=True)
    storage = LocalStorage(tmp_path / "out")

    with pytest.raises(UnsafeNameError, match="outside the output folder"):
        storage.write_bytes("P1/P1_1_pred_mask.png", b"x")
    assert list(outside.iterdir()) == []


def test_partial_writes_are_hidden_and_removed(tmp_path):
    storage = LocalStorage(tmp_path / "out")
    storage.write_bytes(".parts/part-1.parquet", b"part")
    leftover = tmp_path / "out" / ".parts" / f".part-2.parquet.partial-{'0' * 32}"
    leftover.write_bytes(b"half")

    assert storage.list(".parts") == [".parts/part-1.parquet"]
    assert storage.remove_partial_writes() == 1
    assert all_files(tmp_path / "out") == [".parts/part-1.parquet"]


def test_open_storage_rejects_urls(tmp_path):
    assert isinstance(open_storage(tmp_path), LocalStorage)
    with pytest.raises(ValueError, match="only local output folders"):
        open_storage("gs://bucket/scored")
