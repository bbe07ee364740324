"""Batch scoring with its input, its output or both in S3, against the moto server on 127.0.0.1.

Every run scores the same tiny input: four random slices of two patients with their ground-truth
masks, the bad members of the scoring tests and two ignored files. A run with a local input and a
local output is the reference that every S3 run must match, apart from the `source` column.
"""

import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from braintumor import locations, s3
from braintumor.scoring.job import run_scoring
from braintumor.scoring.sources import UnsafeNameError, iter_slice_bytes, list_source
from braintumor.scoring.storage import S3Storage, open_storage
from braintumor.scoring.tables import PARTS_FOLDER, SCORED

REPO_ROOT = Path(__file__).resolve().parents[2]
SCORING_TESTS = REPO_ROOT / "tests" / "scoring"


def _scoring_fixtures():
    # The scoring tests' conftest imports its helper module by bare name, so its folder goes on the path first.
    sys.path.insert(0, str(SCORING_TESTS))
    spec = importlib.util.spec_from_file_location("scoring_fixtures_for_s3", SCORING_TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The untrained 32x32 segmenter and classifier of the scoring tests, built once per session.
tiny_models = _scoring_fixtures().tiny_models

from scoring_inputs import BAD_MEMBERS, add_tar_member, add_zip_symlink, tar_folder, write_bad_members, zip_folder  # noqa: E402

PATIENTS = ("P1", "P2")
SLICE_NUMBERS = (1, 2)
GOOD_MEMBERS = sorted(f"{patient}/{patient}_{number}.tif" for patient in PATIENTS for number in SLICE_NUMBERS)
# Ground-truth masks of the good slices, notes.txt and .DS_Store.
IGNORED_COUNT = len(GOOD_MEMBERS) + 2
BATCH_SIZE = 4
# Archive members whose names point outside any folder they are joined to.
ESCAPING_NAMES = ("../escape_1.tif", "/tmp/escape_2.tif", "scans/../../escape_3.tif")


def tables_at(output) -> dict[str, pd.DataFrame]:
    """Read the tables of a scoring output, a local folder or an S3 prefix."""

    def read(name: str) -> io.BytesIO:
        return io.BytesIO(locations.read_bytes(locations.join(output, name)))

    return {
        "labels": pd.read_parquet(read("labels.parquet")),
        "labels_csv": pd.read_csv(read("labels.csv"), dtype={"slice_number": "Int64"}),
        "errors": pd.read_csv(read("errors.csv"), keep_default_na=False),
        "patients": pd.read_csv(read("patients.csv")),
    }


def masks_at(output) -> dict[str, bytes]:
    """The predicted mask files of a scoring output by their relative name, with their bytes."""
    if s3.is_s3(output):
        storage = S3Storage(str(output))
        return {name: storage.read_bytes(name) for name in storage.list("") if name.endswith("_pred_mask.png")}
    return {path.relative_to(output).as_posix(): path.read_bytes() for path in sorted(Path(output).rglob("*_pred_mask.png"))}


def keys_in(bucket: str) -> list[str]:
    return [s3.S3Uri.parse(uri).key for uri in s3.list_objects(bucket)]


def assert_same_results(found: dict, expected: dict, extra_patients: tuple[str, ...] = ()) -> None:
    """Check that two runs' tables agree exactly in every column but `source`.

    Errors and patients of `found` beyond the bad members and `extra_patients` are left out.
    """
    for name in ("labels", "labels_csv"):
        pd.testing.assert_frame_equal(
            found[name].drop(columns="source"), expected[name].drop(columns="source"), check_exact=True, obj=name
        )
    bad = found["errors"][found["errors"]["member"].isin(list(BAD_MEMBERS))].reset_index(drop=True)
    pd.testing.assert_frame_equal(bad.drop(columns="source"), expected["errors"].drop(columns="source"), obj="errors")
    patients = found["patients"][~found["patients"]["patient_id"].isin(extra_patients)].reset_index(drop=True)
    pd.testing.assert_frame_equal(patients, expected["patients"], obj="patients")


def run_cli(input_location, output_location, models, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "jobs/score.py", "--input", str(input_location), "--output", str(output_location),
        "--segmenter", str(models[0]), "--classifier", str(models[1]),
    ]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """The local input folder: GOOD_MEMBERS with their masks, the BAD_MEMBERS, notes.txt and .DS_Store."""
    root = tmp_path_factory.mktemp("s3_scoring_input") / "scans"
    rng = np.random.default_rng(0)
    for member in GOOD_MEMBERS:
        path = root / member
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8), photometric="rgb")
        tifffile.imwrite(path.with_name(f"{path.stem}_mask.tif"), np.zeros((256, 256), dtype=np.uint8))
    write_bad_members(root, root / GOOD_MEMBERS[0])
    (root / "notes.txt").write_text("scanned in 2024\n")
    (root / "P1" / ".DS_Store").write_bytes(b"\x00\x01")
    return root


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    """A bucket shared by the runs of this module, holding the input under scans/."""
    uri = f"s3://scoring-runs-{os.urandom(3).hex()}"
    s3.client().create_bucket(Bucket=s3.S3Uri.parse(uri).bucket)
    return uri


@pytest.fixture(scope="module")
def s3_scans(bucket, scans) -> str:
    """The input folder uploaded under the prefix scans/ of the module's bucket."""
    s3.upload_folder(scans, f"{bucket}/scans")
    return f"{bucket}/scans"


@pytest.fixture(scope="module")
def local_run(ray_local, tiny_models, scans, tmp_path_factory):
    """The reference run, local folder to local folder: (summary, output folder)."""
    output = tmp_path_factory.mktemp("s3_scoring_local") / "scored"
    return run_scoring(scans, output, *tiny_models, batch_size=BATCH_SIZE), output


@pytest.fixture(scope="module")
def s3_run(ray_local, tiny_models, s3_scans, bucket):
    """A run from the S3 prefix to another S3 prefix of the same bucket: (summary, output URI)."""
    output = f"{bucket}/scored"
    return run_scoring(s3_scans, output, *tiny_models, batch_size=BATCH_SIZE), output


def test_s3_storage_round_trip(s3_bucket):
    storage = open_storage(f"{s3_bucket}/out/")

    storage.write_bytes("P1/P1_1_pred_mask.png", b"mask")
    storage.write_bytes(".parts/part-1.parquet", b"part")
    storage.write_bytes("P1/P1_1_pred_mask.png", b"mask v2")

    assert isinstance(storage, S3Storage)
    assert storage.uri() == f"{s3_bucket}/out"
    assert storage.uri("P1/P1_1_pred_mask.png") == f"{s3_bucket}/out/P1/P1_1_pred_mask.png"
    assert storage.read_bytes("P1/P1_1_pred_mask.png") == b"mask v2"
    assert storage.exists("P1/P1_1_pred_mask.png")
    assert not storage.exists("P1/P1_2_pred_mask.png")
    assert storage.list(".parts") == [".parts/part-1.parquet"]
    assert storage.list("") == [".parts/part-1.parquet", "P1/P1_1_pred_mask.png"]
    assert storage.list("missing") == []
    assert keys_in(s3_bucket) == ["out/.parts/part-1.parquet", "out/P1/P1_1_pred_mask.png"]
    storage.delete("P1/P1_1_pred_mask.png")
    storage.delete("P1/P1_1_pred_mask.png")
    assert not storage.exists("P1/P1_1_pred_mask.png")
    with pytest.raises(FileNotFoundError, match="object not found"):
        storage.read_bytes("P1/P1_1_pred_mask.png")


@pytest.mark.parametrize("name", ["../escape.png", "/tmp/escape.png", "P1/../../escape.png", "..\\escape.png", "P1/./../../x.png"])
def test_s3_storage_rejects_names_outside(s3_bucket, name):
    storage = S3Storage(f"{s3_bucket}/out")

    with pytest.raises(UnsafeNameError):
        storage.write_bytes(name, b"x")
    assert keys_in(s3_bucket) == []


def test_open_storage_missing_bucket(s3_server):
    with pytest.raises(s3.S3NotFoundError, match=r"s3://no-such-bucket-1/scored: bucket 'no-such-bucket-1' not found"):
        open_storage("s3://no-such-bucket-1/scored")


def test_s3_prefix_listing_matches_folder(scans, s3_scans):
    local = list_source(scans)
    remote = list_source(s3_scans)

    assert remote.kind == "folder"
    assert str(remote.path) == s3_scans
    assert [(e.member, e.patient_id, e.slice_number, e.size) for e in remote.entries] == [
        (e.member, e.patient_id, e.slice_number, e.size) for e in local.entries
    ]
    assert [entry.location for entry in remote.entries] == [f"{s3_scans}/{entry.member}" for entry in remote.entries]
    assert [entry.source for entry in remote.entries] == [f"{s3_scans}/{entry.member}" for entry in remote.entries]
    assert [(e.member, e.patient_id, e.reason) for e in remote.errors] == [(e.member, e.patient_id, e.reason) for e in local.errors]
    assert sorted(remote.ignored) == sorted(local.ignored)
    assert len(remote.ignored) == IGNORED_COUNT


def test_s3_prefix_listing_skips_output_inside(s3_bucket, scans):
    s3.upload_folder(scans / "P1", f"{s3_bucket}/in/P1")
    s3.write_bytes(f"{s3_bucket}/in/scored/P1/P1_1.tif", (scans / GOOD_MEMBERS[0]).read_bytes())
    s3.write_bytes(f"{s3_bucket}/in/P2/", b"")  # a folder marker, as some tools create

    listing = list_source(f"{s3_bucket}/in/", exclude=f"{s3_bucket}/in/scored")

    assert [entry.member for entry in listing.entries] == ["P1/P1_1.tif", "P1/P1_2.tif"]
    assert str(listing.path) == f"{s3_bucket}/in"


def test_s3_reads_match_local_bytes(scans, s3_scans, s3_bucket, tmp_path):
    expected = {member: (scans / member).read_bytes() for member in GOOD_MEMBERS}
    s3.write_bytes(f"{s3_bucket}/scans.zip", zip_folder(scans, tmp_path / "scans.zip").read_bytes())
    s3.write_bytes(f"{s3_bucket}/scans.tar.gz", tar_folder(scans, tmp_path / "scans.tar.gz").read_bytes())

    for location in (s3_scans, f"{s3_bucket}/scans.zip", f"{s3_bucket}/scans.tar.gz"):
        listing = list_source(location)
        requested = [entry for entry in listing.entries if entry.member in expected]

        found = {entry.member: data for entry, data, _ in iter_slice_bytes(listing.kind, str(listing.path), requested)}

        assert found == expected, location
        assert listing.kind == {"scans.zip": "zip", "scans.tar.gz": "tar"}.get(location.rsplit("/", 1)[-1], "folder")


def test_s3_index_csv_listing(scans, s3_bucket):
    s3.upload_folder(scans, f"{s3_bucket}/data/images")
    absolute = f"{s3_bucket}/data/images/{GOOD_MEMBERS[3]}"
    rows = [
        "patient_id,image_path",
        f"P1,images/{GOOD_MEMBERS[0]}",
        f"P1,./images/P1/../{GOOD_MEMBERS[1]}",
        f"P2,{absolute}",
        "P2,images/P2/P2_1_mask.tif",
        "P3,images/missing_4.tif",
        "P4,../../../escape_5.tif",
        "P5,images/notes.txt",
        "P6,s3://no-such-bucket-for-rows/P6_1.tif",
        "P7,/etc/P7_1.tif",
    ]
    s3.write_bytes(f"{s3_bucket}/data/index.csv", ("\n".join(rows) + "\n").encode())

    listing = list_source(f"{s3_bucket}/data/index.csv")

    assert listing.kind == "csv"
    assert [(e.member, e.patient_id, e.slice_number, e.source) for e in listing.entries] == [
        ("P1/P1_1.tif", "P1", 1, f"{s3_bucket}/data/images/P1/P1_1.tif"),
        ("P1/P1_2.tif", "P1", 2, f"{s3_bucket}/data/images/P1/P1_2.tif"),
        ("P2/P2_2.tif", "P2", 2, absolute),
    ]
    assert [entry.size for entry in listing.entries] == [(scans / member).stat().st_size for member in (*GOOD_MEMBERS[:2], GOOD_MEMBERS[3])]
    assert listing.ignored == ["images/P2/P2_1_mask.tif"]
    reasons = sorted(error.reason for error in listing.errors)
    assert reasons[0].startswith("line 10: a local path in an index CSV stored in S3")
    assert reasons[1].startswith("line 6: object not found")
    assert reasons[2].startswith(f"line 7: image_path '../../../escape_5.tif' leads outside the bucket '{s3.S3Uri.parse(s3_bucket).bucket}'")
    assert reasons[3].startswith("line 8: not a slice file")
    assert reasons[4].startswith("line 9: object not found (or its bucket does not exist)")


def test_s3_input_not_found(s3_bucket):
    with pytest.raises(s3.S3NotFoundError, match=rf"{s3_bucket}/missing/scans.zip: input not found"):
        list_source(f"{s3_bucket}/missing/scans.zip")
    with pytest.raises(s3.S3NotFoundError, match=r"s3://no-such-bucket-2/scans: bucket 'no-such-bucket-2' not found"):
        list_source("s3://no-such-bucket-2/scans")


def test_s3_prefix_run_matches_local(local_run, s3_run, s3_scans):
    summary, output = s3_run
    found, expected = tables_at(output), tables_at(local_run[1])

    assert_same_results(found, expected)
    assert list(found["labels"]["member"]) == GOOD_MEMBERS
    assert list(found["labels"]["source"]) == [f"{s3_scans}/{member}" for member in GOOD_MEMBERS]
    assert (summary.scored, summary.skipped, summary.failed, summary.ignored) == (len(GOOD_MEMBERS), 0, len(BAD_MEMBERS), IGNORED_COUNT)
    assert (summary.input, summary.output) == (s3_scans, output)


def test_s3_prefix_run_masks(local_run, s3_run):
    _, output = s3_run
    labels = tables_at(output)["labels"]
    masks = masks_at(output)

    assert sorted(masks) == sorted(labels["mask_file"])
    assert sorted(masks) == sorted(member[: -len(".tif")] + "_pred_mask.png" for member in GOOD_MEMBERS)
    for row in labels.itertuples():
        mask = cv2.imdecode(np.frombuffer(masks[row.mask_file], dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8, row.mask_file
        assert mask.shape == (256, 256), row.mask_file
        assert set(np.unique(mask)) <= {0, 255}, row.mask_file
        assert int((mask == 255).sum()) == row.tumour_area_pixels, row.mask_file
    assert masks == masks_at(local_run[1])


def test_s3_rerun_skips_everything(tiny_models, s3_run, s3_scans):
    _, output = s3_run
    before = tables_at(output)
    masks_before = masks_at(output)

    summary = run_scoring(s3_scans, output, *tiny_models, batch_size=BATCH_SIZE)

    # Slices that failed are tried again, but the scored ones are not.
    assert (summary.scored, summary.skipped, summary.failed) == (0, len(GOOD_MEMBERS), len(BAD_MEMBERS))
    assert f"0 scored, {len(GOOD_MEMBERS)} skipped (already complete)" in summary.line()
    written = pd.read_json(io.BytesIO(s3.read_bytes(f"{output}/summary.json")), typ="series")
    assert (written["scored"], written["skipped"]) == (0, len(GOOD_MEMBERS))
    assert_same_results(tables_at(output), before)
    assert masks_at(output) == masks_before


def test_s3_interrupted_run_completes(tiny_models, s3_run, s3_scans):
    """Remove what a kill would leave missing (a part file, a mask, the final tables), then rerun."""
    _, output = s3_run
    before = tables_at(output)
    masks_before = masks_at(output)
    storage = S3Storage(output)
    parts = {name: pd.read_parquet(io.BytesIO(storage.read_bytes(name))) for name in storage.list(PARTS_FOLDER)}
    lost_part, lost_rows = next((name, rows) for name, rows in parts.items() if (rows["status"] == SCORED).any())
    lost_members = set(lost_rows.loc[lost_rows["status"] == SCORED, "member"])
    # A slice whose part row survives but whose mask is gone counts as not done either.
    kept_member = sorted(set(GOOD_MEMBERS) - lost_members)[0]
    storage.delete(lost_part)
    storage.delete(kept_member[: -len(".tif")] + "_pred_mask.png")
    for name in ("labels.parquet", "labels.csv", "errors.csv", "patients.csv", "summary.json"):
        storage.delete(name)

    summary = run_scoring(s3_scans, output, *tiny_models, batch_size=BATCH_SIZE)

    assert summary.scored == len(lost_members) + 1
    assert summary.skipped == len(GOOD_MEMBERS) - len(lost_members) - 1
    assert_same_results(tables_at(output), before)
    assert masks_at(output) == masks_before


def test_local_input_to_s3_output(ray_local, tiny_models, local_run, scans, bucket):
    output = f"{bucket}/from_local"

    summary = run_scoring(scans, output, *tiny_models, batch_size=BATCH_SIZE)

    found, expected = tables_at(output), tables_at(local_run[1])
    # The same local input, so even the sources agree.
    pd.testing.assert_frame_equal(found["labels"], expected["labels"], check_exact=True)
    assert_same_results(found, expected)
    assert masks_at(output) == masks_at(local_run[1])
    assert (summary.scored, summary.failed) == (len(GOOD_MEMBERS), len(BAD_MEMBERS))


def test_models_in_s3(ray_local, tiny_models, local_run, scans, s3_bucket, tmp_path):
    from braintumor import s3

    model_uris = []
    for role, folder in zip(("segmenter", "classifier"), tiny_models):
        s3.upload_folder(folder, f"{s3_bucket}/models/{role}")
        model_uris.append(f"{s3_bucket}/models/{role}")

    summary = run_scoring(scans, tmp_path / "scored", *model_uris, batch_size=BATCH_SIZE)

    found, expected = tables_at(tmp_path / "scored"), tables_at(local_run[1])
    pd.testing.assert_frame_equal(found["labels"], expected["labels"], check_exact=True)
    assert summary.models["segmenter"]["path"] == model_uris[0]
    assert summary.models["classifier"]["path"] == model_uris[1]


def test_zip_in_s3_with_unsafe_members(ray_local, tiny_models, local_run, scans, s3_bucket, tmp_path):
    archive = zip_folder(scans, tmp_path / "scans.zip", prefix="kaggle_3m/")
    escape = (scans / GOOD_MEMBERS[0]).read_bytes()
    with zipfile.ZipFile(archive, "a") as open_archive:
        for name in ESCAPING_NAMES:
            open_archive.writestr(name, escape)
        add_zip_symlink(open_archive, "kaggle_3m/LINK/LINK_1.tif", "/etc/passwd")
    input_uri, output = f"{s3_bucket}/in/scans.zip", f"{s3_bucket}/out/zip"
    s3.write_bytes(input_uri, archive.read_bytes())

    summary = run_scoring(input_uri, output, *tiny_models, batch_size=BATCH_SIZE)

    found = tables_at(output)
    # The symbolic link member fails under a patient of its own, LINK.
    assert_same_results(found, tables_at(local_run[1]), extra_patients=("LINK",))
    assert list(found["labels"]["source"]) == [f"{input_uri}!/kaggle_3m/{member}" for member in GOOD_MEMBERS]
    unsafe = found["errors"][~found["errors"]["member"].isin(list(BAD_MEMBERS))]
    assert sorted(unsafe["member"]) == sorted([*ESCAPING_NAMES, "LINK/LINK_1.tif"])
    assert all(("unsafe member name" in reason) or ("link member" in reason) for reason in unsafe["reason"])
    assert summary.failed == len(BAD_MEMBERS) + len(ESCAPING_NAMES) + 1
    # Every key is the input or lies under the output prefix, with no '.', '..' or empty component.
    keys = keys_in(s3_bucket)
    assert [key for key in keys if not key.startswith("out/zip/")] == ["in/scans.zip"]
    for key in keys:
        assert not {"", ".", ".."} & set(key.split("/")), key
    assert not [key for key in keys if "escape" in key or "LINK" in key]
    assert masks_at(output) == masks_at(local_run[1])


def test_tar_gz_in_s3_to_local_output(ray_local, tiny_models, local_run, scans, s3_bucket, tmp_path):
    archive = tar_folder(scans, tmp_path / "scans.tar.gz")
    input_uri, output = f"{s3_bucket}/scans.tar.gz", tmp_path / "scored"
    s3.write_bytes(input_uri, archive.read_bytes())

    summary = run_scoring(input_uri, output, *tiny_models, batch_size=BATCH_SIZE)

    found = tables_at(output)
    assert_same_results(found, tables_at(local_run[1]))
    assert list(found["labels"]["source"]) == [f"{input_uri}!/{member}" for member in GOOD_MEMBERS]
    assert (summary.kind, summary.scored, summary.failed) == ("tar", len(GOOD_MEMBERS), len(BAD_MEMBERS))
    assert masks_at(output) == masks_at(local_run[1])
    assert keys_in(s3_bucket) == ["scans.tar.gz"]


def test_tar_with_unsafe_member_writes_no_key_outside(ray_local, tiny_models, scans, s3_bucket, tmp_path):
    archive = tmp_path / "hostile.tar"
    with tarfile.open(archive, "w") as open_archive:
        add_tar_member(open_archive, "P1/P1_1.tif", (scans / GOOD_MEMBERS[0]).read_bytes())
        add_tar_member(open_archive, "../escape_1.tif", (scans / GOOD_MEMBERS[1]).read_bytes())
        add_tar_member(open_archive, "P1/../../escape_2.tif", (scans / GOOD_MEMBERS[1]).read_bytes())
    s3.write_bytes(f"{s3_bucket}/hostile.tar", archive.read_bytes())

    summary = run_scoring(f"{s3_bucket}/hostile.tar", f"{s3_bucket}/out", *tiny_models, batch_size=BATCH_SIZE)

    assert (summary.scored, summary.failed) == (1, 2)
    masks = [key for key in keys_in(s3_bucket) if key.endswith("_pred_mask.png")]
    assert masks == ["out/P1/P1_1_pred_mask.png"]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing output bucket", "s3://no-such-output-bucket/scored: bucket 'no-such-output-bucket' not found"),
        ("missing input bucket", "s3://no-such-input-bucket/scans: bucket 'no-such-input-bucket' not found"),
        ("missing input key", "{bucket}/missing/scans.zip: input not found"),
        ("no credentials", "{bucket}/scored: no AWS credentials found"),
    ],
)
def test_cli_s3_errors_exit_2(tiny_models, scans, s3_bucket, tmp_path, case, expected):
    env = dict(os.environ)
    input_location, output_location = str(scans), f"{s3_bucket}/scored"
    if case == "missing output bucket":
        output_location = "s3://no-such-output-bucket/scored"
    elif case == "missing input bucket":
        input_location, output_location = "s3://no-such-input-bucket/scans", tmp_path / "scored"
    elif case == "missing input key":
        input_location, output_location = f"{s3_bucket}/missing/scans.zip", tmp_path / "scored"
    else:
        env.pop("AWS_ACCESS_KEY_ID")
        env.pop("AWS_SECRET_ACCESS_KEY")

    result = run_cli(input_location, output_location, tiny_models, env)

    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert expected.format(bucket=s3_bucket) in errors[0]
    assert "Traceback" not in result.stderr
    assert "Ray instance" not in result.stderr
    assert not (tmp_path / "scored").exists()
    assert keys_in(s3_bucket) == []
