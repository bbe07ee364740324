"""The Ray Data read stage of batch scoring, without the model actors."""

import os
import tarfile

import cloudpickle
import pytest
import ray

from braintumor.scoring.pipeline import SliceBytesDatasource, TarStreamReader, group_in_archive_order
from braintumor.scoring.sources import TAR, list_source


def write_tar(path, members: int, mode: str):
    """Write a tar archive of `members` one-byte slices, 100 per patient, each holding its index modulo 256."""
    with tarfile.open(path, mode) as archive:
        for index in range(members):
            slice_file = path.parent / "slice.tif"
            slice_file.write_bytes(bytes([index % 256]))
            archive.add(slice_file, f"patient_{index // 100}/patient_{index // 100}_{index % 100 + 1}.tif")
    return path


@pytest.mark.parametrize("mode, suffix", [("w", "tar"), ("w:gz", "tar.gz")])
def test_large_tar_read_in_groups(ray_local, tmp_path, mode, suffix):
    # A tar of thousands of members used to be one read task, which Ray Data let run ahead of the
    # model actors without limit, and which was over 1 MiB to send.
    archive = write_tar(tmp_path / f"many.{suffix}", 9000, mode)
    listing = list_source(archive)
    stream_reader = None
    if mode != "w":
        groups = group_in_archive_order(listing.entries, 128)
        stream_reader = ray.remote(num_cpus=0)(TarStreamReader).remote(str(archive), groups)
    datasource = SliceBytesDatasource(TAR, str(archive), listing.entries, rows_per_block=32, stream_reader=stream_reader)
    tasks = datasource.get_read_tasks(parallelism=1)

    assert len(tasks) == -(-9000 // 128)
    assert max(len(cloudpickle.dumps(task)) for task in tasks) < 2**20
    dataset = ray.data.read_datasource(datasource, override_num_blocks=len(tasks))
    rows = dataset.take_all()

    assert len(rows) == 9000
    assert {row["member"] for row in rows} == {entry.member for entry in listing.entries}
    expected = {f"patient_{index // 100}/patient_{index // 100}_{index % 100 + 1}.tif": index % 256 for index in range(9000)}
    assert all(row["data"] == bytes([expected[row["member"]]]) for row in rows)
    if stream_reader is not None:
        assert ray.get(stream_reader.max_groups_waiting.remote()) <= 4
        ray.kill(stream_reader)


def test_plain_tar_entries_have_spans(tmp_path):
    plain_path = write_tar(tmp_path / "a.tar", 3, "w")
    plain = list_source(plain_path)
    compressed = list_source(write_tar(tmp_path / "a.tgz", 3, "w:gz"))

    raw = plain_path.read_bytes()
    spans = [entry.span for entry in plain.entries]
    # Each span starts at a 512-byte header block, after the previous one, and ends with the member's one byte.
    assert [start % 512 for start, _ in spans] == [0, 0, 0]
    assert spans[0][0] == 0
    assert spans[0][1] <= spans[1][0]
    assert spans[1][1] <= spans[2][0]
    assert [raw[end - 1] for _, end in spans] == [0, 1, 2]
    assert [entry.span for entry in compressed.entries] == [None, None, None]


def test_stream_reader_serves_groups_in_any_order(tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", 10, "w:gz")
    groups = group_in_archive_order(list_source(archive).entries, 3)
    reader = TarStreamReader(str(archive), groups)

    # Group 2 first: groups 0 and 1 wait in memory. Then a retried task requests group 1 again,
    # after it was delivered, which reads the archive again from the start.
    third = reader.read_group(2)
    first = reader.read_group(0)
    second = reader.read_group(1)
    second_again = reader.read_group(1)
    last = reader.read_group(3)

    assert [len(rows) for rows in (first, second, third, last)] == [3, 3, 3, 1]
    assert second_again == second
    assert [member for member, _, _ in first + second + third + last] == [entry.member for group in groups for entry in group]
    assert all(data == bytes([index]) for index, (_, data, _) in enumerate(first + second + third + last))
    assert reader._waiting == {}
    with pytest.raises(IndexError, match="no group 4"):
        reader.read_group(4)


def test_stream_reader_reports_truncated_archive(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for number in range(1, 5):
            data_file = tmp_path / "data.bin"
            data_file.write_bytes(os.urandom(5000))
            tar.add(data_file, f"P1/P1_{number}.tif")
    groups = group_in_archive_order(list_source(archive).entries, 2)
    archive.write_bytes(archive.read_bytes()[:9000])
    reader = TarStreamReader(str(archive), groups)

    rows = reader.read_group(0) + reader.read_group(1)

    assert [member for member, _, _ in rows] == [f"P1/P1_{number}.tif" for number in range(1, 5)]
    assert rows[0][2] is None
    assert all(data is None and error.startswith("the archive cannot be read past this point") for _, data, error in rows[2:])
