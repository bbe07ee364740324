"""Reading, indexing and preprocessing a dataset in S3, against a moto server on 127.0.0.1."""

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from braintumor import locations, s3
from braintumor.preprocessing import pipeline
from braintumor.data.index import build_index, load_index, write_index
from braintumor.data.io import SliceReadError, read_mask, read_slice
from braintumor.data.split import SPLIT_NAMES, load_split
from braintumor.preprocessing.pipeline import MANIFEST, parquet_dir, preprocess

REPO_ROOT = Path(__file__).resolve().parents[2]

# Ray start-up happens in the first preprocessing test, and a hang in Ray looks like silence.
pytestmark = pytest.mark.timeout(600)


def _missing_bucket() -> str:
    return f"braintumor-missing-{os.urandom(4).hex()}"


def _relative(path: str, root: str | Path) -> str:
    """Return `path` relative to the dataset root `root`, with '/' separators, for local paths and URIs alike."""
    prefix = str(root).rstrip("/") + "/"
    assert str(path).startswith(prefix), f"{path} is not under {prefix}"
    return str(path)[len(prefix):]


def _with_relative_paths(frame: pd.DataFrame, root: str | Path) -> list[dict]:
    return frame.assign(
        image_path=[_relative(path, root) for path in frame["image_path"]],
        mask_path=[_relative(path, root) for path in frame["mask_path"]],
    ).to_dict("records")


def _read_split(output: str | Path, split: str, root: str | Path) -> pd.DataFrame:
    """Read one split's Parquet shards, local or in S3, sorted by patient and slice, with relative image paths."""
    filesystem, path = locations.arrow_filesystem(parquet_dir(output, split))
    table = pq.read_table(path, filesystem=filesystem)
    frame = table.drop_columns(["image", "mask"]).to_pandas()
    frame["image"] = list(table.column("image").combine_chunks().to_numpy_ndarray())
    frame["mask"] = list(table.column("mask").combine_chunks().to_numpy_ndarray())
    frame["image_path"] = [_relative(path, root) for path in frame["image_path"]]
    return frame.sort_values(["patient_id", "slice_number"]).reset_index(drop=True)


def _objects(prefix: str) -> dict[str, tuple[str, str]]:
    """Map each object under `prefix` to its (ETag, LastModified), which change when it is written again."""
    location = s3.S3Uri.parse(prefix)
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.folder_key)
    return {
        item["Key"]: (item["ETag"], item["LastModified"].isoformat())
        for page in pages
        for item in page.get("Contents", [])
    }


@pytest.fixture
def fake_root(make_fake_dataset):
    """A local kaggle_3m-style folder of 3 patients x 3 slices, tumour on slice 2 of each."""
    # Resolved, as build_index resolves the paths it stores.
    return make_fake_dataset(n_patients=3, n_slices=3).resolve()


@pytest.fixture
def s3_dataset(fake_root, s3_bucket):
    """`fake_root` copied to S3; returns (local root, S3 prefix)."""
    prefix = f"{s3_bucket}/kaggle_3m"
    s3.upload_folder(fake_root, prefix)
    return fake_root, prefix


# read_slice and read_mask


def test_read_slice_from_s3(s3_dataset):
    root, prefix = s3_dataset

    image = read_slice(f"{prefix}/FAKE_1/FAKE_1_2.tif")
    mask = read_mask(f"{prefix}/FAKE_1/FAKE_1_2_mask.tif")

    np.testing.assert_array_equal(image, read_slice(root / "FAKE_1" / "FAKE_1_2.tif"))
    np.testing.assert_array_equal(mask, read_mask(root / "FAKE_1" / "FAKE_1_2_mask.tif"))
    assert mask.sum() == 100


def test_read_slice_missing_object(s3_bucket):
    uri = f"{s3_bucket}/P/P_1.tif"

    with pytest.raises(SliceReadError) as caught:
        read_slice(uri)

    assert caught.value.path == uri
    assert caught.value.reason == "object not found"


def test_read_mask_empty_object(s3_bucket):
    uri = f"{s3_bucket}/P/P_1_mask.tif"
    s3.write_bytes(uri, b"")

    with pytest.raises(SliceReadError, match=r"P_1_mask.tif: file is empty \(0 bytes\)"):
        read_mask(uri)


def test_read_slice_missing_bucket(s3_server):
    bucket = _missing_bucket()

    with pytest.raises(s3.S3NotFoundError, match=f"bucket '{bucket}' not found") as caught:
        read_slice(f"s3://{bucket}/P/P_1.tif")

    assert not isinstance(caught.value, SliceReadError)


# load_index on an S3 prefix and on index CSVs in S3


def test_index_of_s3_prefix_equals_local(s3_dataset):
    root, prefix = s3_dataset
    # Cases that are left out or ignored, written to both copies: a slice without mask, an empty
    # slice, a slice without number, and a file one folder too deep.
    extra = {
        "FAKE_0/FAKE_0_7.tif": (root / "FAKE_0" / "FAKE_0_1.tif").read_bytes(),
        "FAKE_1/FAKE_1_8.tif": b"",
        "FAKE_1/FAKE_1_8_mask.tif": (root / "FAKE_1" / "FAKE_1_1_mask.tif").read_bytes(),
        "FAKE_2/scan.tif": b"",
        "FAKE_2/deeper/FAKE_2_9.tif": b"",
    }
    for relative, data in extra.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
        s3.write_bytes(f"{prefix}/{relative}", data)

    local = load_index(root)
    remote = load_index(prefix)

    assert len(remote.frame) == 9
    assert _with_relative_paths(remote.frame, prefix) == _with_relative_paths(local.frame, root)
    assert remote.frame["image_path"][0] == f"{prefix}/FAKE_0/FAKE_0_1.tif"
    assert [(_relative(item.path, prefix), item.reason) for item in remote.skipped] == [
        (_relative(item.path, root), item.reason) for item in local.skipped
    ]
    assert sorted(_relative(item.path, prefix) for item in remote.skipped) == [
        "FAKE_0/FAKE_0_7.tif", "FAKE_1/FAKE_1_8.tif", "FAKE_2/scan.tif",
    ]


def test_index_of_s3_prefix_with_trailing_slash(s3_dataset):
    _, prefix = s3_dataset

    frame = load_index(prefix + "/").frame

    assert frame["image_path"][0] == f"{prefix}/FAKE_0/FAKE_0_1.tif"
    assert len(frame) == 9


def test_index_of_empty_s3_prefix(s3_bucket):
    with pytest.raises(FileNotFoundError, match="kaggle_3m: no object has this prefix"):
        load_index(f"{s3_bucket}/kaggle_3m")


def test_index_csv_in_s3_relative_paths(s3_dataset):
    root, prefix = s3_dataset
    rows = _with_relative_paths(build_index(root).frame, root)
    rows[0]["image_path"] = f"./{rows[0]['image_path']}"
    rows[1]["mask_path"] = f"FAKE_1/../{rows[1]['mask_path']}"
    csv_uri = f"{prefix}/index.csv"
    s3.write_bytes(csv_uri, pd.DataFrame(rows).to_csv(index=False).encode())

    result = load_index(csv_uri)

    assert result.skipped == []
    assert result.frame["image_path"].tolist() == [f"{prefix}/FAKE_{p}/FAKE_{p}_{n}.tif" for p in range(3) for n in (1, 2, 3)]
    assert result.frame["mask_path"][1] == f"{prefix}/FAKE_0/FAKE_0_2_mask.tif"
    assert result.frame["mask"].tolist() == [0, 1, 0] * 3


def test_index_csv_in_s3_absolute_uris(s3_dataset, s3_bucket):
    root, prefix = s3_dataset
    # The CSV sits in another folder of the bucket, so relative paths would not find the slices.
    frame = build_index(root).frame
    rows = frame.assign(
        image_path=[f"{prefix}/{_relative(path, root)}" for path in frame["image_path"]],
        mask_path=[f"{prefix}/{_relative(path, root)}" for path in frame["mask_path"]],
    )
    csv_uri = f"{s3_bucket}/indexes/all.csv"
    write_index(rows, csv_uri)

    result = load_index(csv_uri)

    assert result.frame.to_dict("records") == rows.to_dict("records")


def test_index_csv_path_above_bucket_rejected(s3_dataset):
    root, prefix = s3_dataset
    rows = _with_relative_paths(build_index(root).frame, root)
    rows[2]["image_path"] = "../../outside.tif"
    csv_uri = f"{prefix}/index.csv"
    s3.write_bytes(csv_uri, pd.DataFrame(rows).to_csv(index=False).encode())

    with pytest.raises(ValueError, match=r"relative path '\.\./\.\./outside.tif' points outside bucket"):
        load_index(csv_uri)


def test_local_csv_lists_s3_objects(s3_dataset, tmp_path):
    root, prefix = s3_dataset
    frame = build_index(root).frame
    rows = frame.assign(
        image_path=[f"{prefix}/{_relative(path, root)}" for path in frame["image_path"]],
        mask_path=[f"{prefix}/{_relative(path, root)}" for path in frame["mask_path"]],
    )
    csv_path = write_index(rows, tmp_path / "index.csv")

    result = load_index(csv_path)

    assert result.skipped == []
    assert result.frame.to_dict("records") == rows.to_dict("records")


def test_index_csv_missing_object_skipped(s3_dataset):
    root, prefix = s3_dataset
    csv_uri = f"{prefix}/index.csv"
    s3.write_bytes(csv_uri, pd.DataFrame(_with_relative_paths(build_index(root).frame, root)).to_csv(index=False).encode())
    s3.delete(f"{prefix}/FAKE_1/FAKE_1_3_mask.tif")

    result = load_index(csv_uri)

    assert [(item.path, item.reason) for item in result.skipped] == [
        (f"{prefix}/FAKE_1/FAKE_1_3_mask.tif", "object not found")
    ]
    assert len(result.frame) == 8
    assert f"{prefix}/FAKE_1/FAKE_1_3.tif" not in set(result.frame["image_path"])


def test_index_csv_in_s3_not_found(s3_bucket):
    with pytest.raises(FileNotFoundError, match=f"{s3_bucket}/index.csv: index CSV not found"):
        load_index(f"{s3_bucket}/index.csv")


# Missing bucket, missing credentials, denied access: one clear error, not a skip per file


def test_index_missing_bucket(s3_server):
    bucket = _missing_bucket()

    with pytest.raises(s3.S3NotFoundError, match=f"s3://{bucket}/kaggle_3m: bucket '{bucket}' not found"):
        load_index(f"s3://{bucket}/kaggle_3m")


def test_local_csv_with_missing_bucket(s3_dataset, tmp_path):
    root, _ = s3_dataset
    bucket = _missing_bucket()
    frame = build_index(root).frame
    rows = frame.assign(
        image_path=[f"s3://{bucket}/{_relative(path, root)}" for path in frame["image_path"]],
        mask_path=[f"s3://{bucket}/{_relative(path, root)}" for path in frame["mask_path"]],
    )

    with pytest.raises(s3.S3NotFoundError, match=f"bucket '{bucket}' not found"):
        load_index(write_index(rows, tmp_path / "index.csv"))


def test_preprocess_missing_output_bucket(fake_root, s3_server):
    bucket = _missing_bucket()

    with pytest.raises(s3.S3NotFoundError, match=f"bucket '{bucket}' not found"):
        preprocess(fake_root, f"s3://{bucket}/outputs")


@pytest.fixture
def no_credentials(s3_server, monkeypatch):
    """Remove the AWS credentials from the environment and from the cached S3 client."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    s3._client.cache_clear()
    yield
    # monkeypatch restores the variables after this; the next client is created with them.
    s3._client.cache_clear()


def test_index_without_credentials(no_credentials):
    with pytest.raises(s3.S3Error, match="s3://some-bucket: no AWS credentials found") as caught:
        load_index("s3://some-bucket/kaggle_3m")

    assert not isinstance(caught.value, SliceReadError)


def test_read_slice_without_credentials(no_credentials):
    with pytest.raises(s3.S3Error, match="no AWS credentials found") as caught:
        read_slice("s3://some-bucket/P/P_1.tif")

    assert not isinstance(caught.value, SliceReadError)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Requests that the access-denied server serves before it checks credentials. These are the set-up
# calls in `restricted_reader`: create the bucket, put 2 objects, create the user, its key and its policy.
SETUP_CALLS = 6


@pytest.fixture
def restricted_reader(request, s3_server, fake_root, monkeypatch):
    """A second moto server whose user may list bucket 'locked' but not read its objects.

    Moto serves requests without checking credentials until INITIAL_NO_AUTH_ACTION_COUNT requests
    have been made (moto 5.2, moto/core/authorization.py), then checks every request's signature and
    its user's IAM policies. Sets the environment to that server and user; returns the dataset prefix.
    """
    # Several test folders have a conftest.py, so `import conftest` may find another one than the
    # root's, which pytest registers under its path.
    conftest = request.config.pluginmanager.get_plugin(str(REPO_ROOT / "tests" / "conftest.py"))
    port = _free_port()
    server = conftest.start_moto_server(port, {"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
        admin.create_bucket(Bucket="locked")
        for name in ("FAKE_0_1.tif", "FAKE_0_1_mask.tif"):
            admin.put_object(Bucket="locked", Key=f"kaggle_3m/FAKE_0/{name}", Body=(fake_root / "FAKE_0" / name).read_bytes())
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        # AWS authorises HeadBucket and ListObjectsV2 by s3:ListBucket. Moto 5.2 checks an action
        # named after each operation, so the policy lists those names too.
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket", "s3:ListObjectsV2"], "Resource": "*"}
            ],
        }
        iam.put_user_policy(UserName="reader", PolicyName="list-only", PolicyDocument=json.dumps(policy))

        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        s3._client.cache_clear()
        yield "s3://locked/kaggle_3m"
    finally:
        s3._client.cache_clear()
        server.terminate()
        server.wait(timeout=30)


def test_read_slice_access_denied(restricted_reader):
    uri = f"{restricted_reader}/FAKE_0/FAKE_0_1.tif"

    with pytest.raises(s3.S3Error) as caught:
        read_slice(uri)

    assert not isinstance(caught.value, SliceReadError)
    assert caught.value.uri == uri
    assert "access denied" in caught.value.reason
    assert "bucket 'locked'" in caught.value.reason


def test_index_access_denied(restricted_reader):
    # Listing is allowed, so the prefix is found. Reading its objects is denied, which stops the index.
    assert s3.list_objects(restricted_reader) == [
        f"{restricted_reader}/FAKE_0/FAKE_0_1.tif", f"{restricted_reader}/FAKE_0/FAKE_0_1_mask.tif",
    ]

    with pytest.raises(s3.S3Error, match=r"s3://locked/kaggle_3m/FAKE_0/FAKE_0_1(_mask)?.tif: access denied"):
        load_index(restricted_reader)


@pytest.mark.parametrize("option", ["--data", "--output"])
def test_preprocess_job_missing_bucket(fake_root, s3_server, tmp_path, option):
    bucket = _missing_bucket()
    locations_given = {"--data": str(fake_root), "--output": str(tmp_path / "outputs")}
    locations_given[option] = f"s3://{bucket}/kaggle_3m"
    arguments = [item for pair in locations_given.items() for item in pair]

    completed = subprocess.run(
        [sys.executable, "jobs/preprocess.py", *arguments],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )

    lines = (completed.stdout + completed.stderr).strip().splitlines()
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    assert len(lines) == 1, lines
    assert f"s3://{bucket}" in lines[0]
    assert f"bucket '{bucket}' not found" in lines[0]


# preprocess with S3 data and output


@pytest.fixture
def s3_output(s3_dataset, s3_bucket, ray_local):
    """Preprocess the S3 copy of the fake dataset into the same bucket; returns (local root, data prefix, output prefix, result)."""
    root, prefix = s3_dataset
    output = f"{s3_bucket}/outputs"
    return root, prefix, output, preprocess(prefix, output)


def test_preprocess_s3_matches_local(s3_output, tmp_path):
    root, prefix, output, result = s3_output

    local = preprocess(root, tmp_path / "local")

    assert result.output == output
    assert result.written == list(SPLIT_NAMES)
    assert result.rows == local.rows
    assert sum(result.rows.values()) == 9
    assert load_split(f"{output}/split.json") == load_split(tmp_path / "local" / "split.json")
    for split in SPLIT_NAMES:
        remote_rows = _read_split(output, split, prefix)
        local_rows = _read_split(tmp_path / "local", split, root)
        assert len(remote_rows) == result.rows[split], split
        for column in ("patient_id", "slice_number", "image_path", "label"):
            assert remote_rows[column].tolist() == local_rows[column].tolist(), (split, column)
        for column in ("image", "mask"):
            np.testing.assert_array_equal(np.stack(remote_rows[column]), np.stack(local_rows[column]))


def test_preprocess_s3_output_files(s3_output):
    _, prefix, output, result = s3_output

    index = pd.read_csv(io.StringIO(locations.read_text(f"{output}/index.csv")))
    skipped = locations.read_text(f"{output}/skipped.csv")
    assert index["image_path"].tolist() == [f"{prefix}/FAKE_{p}/FAKE_{p}_{n}.tif" for p in range(3) for n in (1, 2, 3)]
    assert skipped.strip() == "path,reason"
    for split in SPLIT_NAMES:
        manifest = json.loads(locations.read_text(f"{parquet_dir(output, split)}/{MANIFEST}"))
        assert manifest["rows"] == result.rows[split]
        assert len(manifest["index_sha256"]) == 64
    assert parquet_dir(output, "train") == f"{output}/parquet/train"
    assert not any(".partial" in key for key in _objects(output))


def test_preprocess_s3_rerun_reuses_splits(s3_output):
    _, prefix, output, first = s3_output
    objects_before = _objects(f"{output}/parquet")
    split_before = locations.read_text(f"{output}/split.json")

    second = preprocess(prefix, output)

    assert second.reused == list(SPLIT_NAMES)
    assert second.written == []
    assert second.rows == first.rows
    assert _objects(f"{output}/parquet") == objects_before
    assert locations.read_text(f"{output}/split.json") == split_before


def test_preprocess_s3_rewrites_split_without_manifest(s3_output):
    root, prefix, output, first = s3_output
    # An interrupted write: shards, one of them stale, and no manifest.
    target = parquet_dir(output, "train")
    s3.delete(f"{target}/{MANIFEST}")
    s3.write_bytes(f"{target}/stale-shard.parquet", b"not Parquet")
    # An outdated manifest in another split.
    validation_manifest = f"{parquet_dir(output, 'validation')}/{MANIFEST}"
    outdated = dict(json.loads(locations.read_text(validation_manifest)), index_sha256="0" * 64)
    locations.write_text(validation_manifest, json.dumps(outdated))
    test_objects_before = _objects(parquet_dir(output, "test"))

    second = preprocess(prefix, output)

    assert second.written == ["train", "validation"]
    assert second.reused == ["test"]
    assert second.rows == first.rows
    assert f"{s3.S3Uri.parse(target).key}/stale-shard.parquet" not in _objects(target)
    assert _objects(parquet_dir(output, "test")) == test_objects_before
    for split in ("train", "validation"):
        manifest = json.loads(locations.read_text(f"{parquet_dir(output, split)}/{MANIFEST}"))
        assert manifest["index_sha256"] != "0" * 64
        rows = _read_split(output, split, prefix)
        assert len(rows) == first.rows[split], split
        assert rows["image_path"].is_unique, split


def test_preprocess_s3_csv_missing_object(s3_dataset, s3_bucket, ray_local):
    root, prefix = s3_dataset
    csv_uri = f"{prefix}/index.csv"
    s3.write_bytes(csv_uri, pd.DataFrame(_with_relative_paths(build_index(root).frame, root)).to_csv(index=False).encode())
    missing = f"{prefix}/FAKE_2/FAKE_2_1.tif"
    s3.delete(missing)
    output = f"{s3_bucket}/outputs"

    result = preprocess(csv_uri, output)

    assert [(item.path, item.reason) for item in result.skipped] == [(missing, "object not found")]
    assert sum(result.rows.values()) == 8
    skipped = pd.read_csv(io.StringIO(locations.read_text(f"{output}/skipped.csv")))
    assert skipped.to_dict("records") == [{"path": missing, "reason": "object not found"}]
    written = pd.concat([_read_split(output, split, prefix) for split in SPLIT_NAMES])
    assert "FAKE_2/FAKE_2_1.tif" not in set(written["image_path"])
    assert len(written) == 8


def test_preprocess_s3_split_without_readable_slice(s3_dataset, s3_bucket, ray_local, monkeypatch):
    _, prefix = s3_dataset
    indexed = load_index(prefix)
    # The objects disappear after indexing, so the Ray Data workers find none of FAKE_0's slices.
    deleted = [f"{prefix}/FAKE_0/FAKE_0_{number}.tif" for number in (1, 2, 3)]
    for uri in deleted:
        s3.delete(uri)
    monkeypatch.setattr(pipeline, "load_index", lambda data: indexed)
    output = f"{s3_bucket}/outputs"

    first = preprocess(prefix, output)
    rerun = preprocess(prefix, output)

    empty_split = next(name for name in SPLIT_NAMES if "FAKE_0" in load_split(f"{output}/split.json")[name])
    assert first.rows[empty_split] == 0
    assert sum(first.rows.values()) == 6
    assert sorted(item.path for item in first.skipped) == deleted
    manifest = json.loads(locations.read_text(f"{parquet_dir(output, empty_split)}/{MANIFEST}"))
    assert manifest["rows"] == 0
    assert rerun.reused == list(SPLIT_NAMES)
    assert rerun.rows == first.rows
