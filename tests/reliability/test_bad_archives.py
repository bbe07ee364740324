"""Bad archive members for batch scoring: rejected when listed, failed when read, and one whole run.

Other kinds are covered in tests/scoring/test_score_sources.py and not repeated here. Hard links,
FIFOs and devices in a tar are in ::test_tar_unsafe_members_are_errors. Backslash names and zip
symbolic links are in ::test_zip_unsafe_members_are_errors. Repeated names are in
::test_repeated_and_colliding_names_are_errors, a corrupt zip member in
::test_iter_slice_bytes_reports_corrupt_zip_member, a truncated tar in
::test_iter_slice_bytes_reports_truncated_tar, and members over the size limit in
::test_oversized_member_is_error.
"""

import pandas as pd
import pytest
from bad_inputs import (
    SYMLINK_MEMBERS,
    SYMLINK_REASON,
    UNSAFE_MEMBERS,
    good_slice_tiff,
    nested_zip,
    slice_kinds,
    tar_archive,
    zip_archive,
)

from braintumor.scoring.job import run_scoring
from braintumor.scoring.pipeline import _read_blocks
from braintumor.scoring.sources import list_source

GOOD_MEMBERS = {"GOOD/GOOD_1.tif": good_slice_tiff(1), "GOOD/GOOD_2.tif": good_slice_tiff(2)}
# Scoring lists only slice suffixes, so a .bmp is ignored there like a README, not an error.
DECODE_FAILURES = {f"BAD/{bad.name}": bad for bad in slice_kinds() if not bad.name.endswith(".bmp")}
IGNORED = ["BAD/bitmap_21.bmp"]
WRITERS = {"zip": zip_archive, "tar": tar_archive}


def archive_members() -> dict[str, bytes]:
    members = dict(GOOD_MEMBERS)
    members |= {f"BAD/{bad.name}": bad.data for bad in slice_kinds()}
    members |= {name: (nested_zip() if name.endswith(".zip") else good_slice_tiff()) for name in UNSAFE_MEMBERS}
    return members


def write_archive(tmp_path, kind: str):
    suffix = ".zip" if kind == "zip" else ".tar.gz"
    return WRITERS[kind](tmp_path / f"scans{suffix}", archive_members(), SYMLINK_MEMBERS)


@pytest.mark.parametrize("kind", WRITERS)
def test_listing_rejects_unsafe_members(tmp_path, kind):
    listing = list_source(write_archive(tmp_path, kind))

    assert sorted(entry.member for entry in listing.entries) == sorted([*GOOD_MEMBERS, *DECODE_FAILURES])
    assert listing.ignored == IGNORED
    reasons = {error.member: error.reason for error in listing.errors}
    assert sorted(reasons) == sorted([*UNSAFE_MEMBERS, *SYMLINK_MEMBERS])
    for name, reason in UNSAFE_MEMBERS.items():
        assert reason in reasons[name], name
    for name in SYMLINK_MEMBERS:
        assert reasons[name].startswith(SYMLINK_REASON)


@pytest.mark.parametrize("kind", WRITERS)
def test_read_stage_passes_member_bytes(tmp_path, kind):
    # The read stage only reads. Decoding, and the reasons of the bad members, come in the actor,
    # which the scoring run below checks.
    members = archive_members()
    listing = list_source(write_archive(tmp_path, kind))

    blocks = list(_read_blocks(listing.kind, str(listing.path), listing.entries, rows_per_block=8))

    rows = pd.concat([block.to_pandas() for block in blocks]).set_index("member")
    assert sorted(rows.index) == sorted([*GOOD_MEMBERS, *DECODE_FAILURES])
    assert rows["read_error"].isna().all()
    for member in rows.index:
        assert rows.at[member, "data"] == members[member], member


@pytest.fixture(scope="module")
def scoring_run(ray_local, tiny_models, tmp_path_factory):
    """One scoring run of a zip archive holding two good slices and every bad member: (summary, output)."""
    folder = tmp_path_factory.mktemp("bad_archive")
    output = folder / "scored"
    summary = run_scoring(write_archive(folder, "zip"), output, *tiny_models, batch_size=4)
    return summary, output


@pytest.mark.slow
def test_scoring_run_scores_good_slices(scoring_run):
    summary, output = scoring_run
    labels = pd.read_parquet(output / "labels.parquet")

    assert labels["member"].tolist() == sorted(GOOD_MEMBERS)
    assert summary.scored == len(GOOD_MEMBERS)
    assert summary.ignored == len(IGNORED)
    assert summary.exit_status == 1


@pytest.mark.slow
def test_scoring_run_lists_every_bad_member(scoring_run):
    _, output = scoring_run
    errors = pd.read_csv(output / "errors.csv", keep_default_na=False).set_index("member")

    assert sorted(errors.index) == sorted([*DECODE_FAILURES, *UNSAFE_MEMBERS, *SYMLINK_MEMBERS])
    for member, bad in DECODE_FAILURES.items():
        assert bad.reason in errors.at[member, "reason"], bad.kind
    for member, reason in UNSAFE_MEMBERS.items():
        assert reason in errors.at[member, "reason"], member


@pytest.mark.slow
def test_scoring_run_leaves_no_partial_file(scoring_run):
    _, output = scoring_run
    files = sorted(path.relative_to(output).as_posix() for path in output.rglob("*") if path.is_file())

    assert [name for name in files if ".partial" in name] == []
    masks = [name for name in files if name.endswith("_pred_mask.png")]
    assert masks == ["GOOD/GOOD_1_pred_mask.png", "GOOD/GOOD_2_pred_mask.png"]
    assert all(not name.startswith("..") and not name.startswith("/") for name in files)
    assert not (output.parent.parent / "x_1_pred_mask.png").exists()
