"""The Ray Data read stage of batch scoring, without the model actors."""

import tarfile

import cloudpickle
import ray

from braintumor.scoring.pipeline import SliceBytesDatasource
from braintumor.scoring.sources import TAR, list_source


def test_large_tar_read_task_runs(ray_local, tmp_path):
    # Ray Data names the read function in its warning about read tasks over 1 MiB, and a tar of
    # thousands of members makes a task that large.
    archive = tmp_path / "many.tar"
    member = tmp_path / "slice.tif"
    member.write_bytes(b"x")
    with tarfile.open(archive, "w") as tar:
        for index in range(9000):
            tar.add(member, f"patient_{index // 100}/patient_{index // 100}_{index % 100 + 1}.tif")
    listing = list_source(archive)
    datasource = SliceBytesDatasource(TAR, str(archive), listing.entries, rows_per_block=32)
    (task,) = datasource.get_read_tasks(parallelism=1)

    assert len(cloudpickle.dumps(task)) > 2**20
    dataset = ray.data.read_datasource(datasource, override_num_blocks=1)
    rows = dataset.take_all()

    assert len(rows) == 9000
    assert {row["data"] for row in rows} == {b"x"}
