import gzip
import io
import lzma
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from scoring_inputs import (
    BAD_MEMBERS,
    BAD_PATIENT,
    IGNORED_FILES,
    REAL_PATIENTS,
    REAL_SLICE_NUMBERS,
    add_tar_member,
    add_zip_symlink,
    tar_folder,
    zip_folder,
)

from braintumor.scoring import sources
from braintumor.scoring.sources import (
    UnsafeNameError,
    iter_slice_bytes,
    list_source,
    predicted_mask_name,
    safe_member_name,
    slice_number_of,
)

REAL_MEMBERS = sorted(
    f"{patient}/{patient}_{number}.tif" for patient in REAL_PATIENTS for number in REAL_SLICE_NUMBERS
)
# Bad members that only fail when decoded are listed as slices; the nested archive fails at listing.
DECODE_FAILURES = sorted(name for name in BAD_MEMBERS if not name.endswith(".zip"))


def write_slice_files(root: Path, names: list[str], data: bytes = b"II*\x00") -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("P1/P1_1.tif", "P1/P1_1.tif"),
        ("./P1//P1_1.tif", "P1/P1_1.tif"),
        ("P1\\P1_1.tif", "P1/P1_1.tif"),
        ("P1/./P1_1.tif", "P1/P1_1.tif"),
    ],
)
def test_safe_member_name_normalises(raw, expected):
    assert safe_member_name(raw) == expected


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("../escape_1.tif", "'..'"),
        ("P1/../../escape_1.tif", "'..'"),
        ("P1\\..\\..\\escape_1.tif", "'..'"),
        ("/etc/escape_1.tif", "absolute"),
        ("\\\\server\\share\\escape_1.tif", "absolute"),
        ("C:/escape_1.tif", "drive letter"),
        ("P1/escape\x00_1.tif", "control character"),
        ("./", "empty"),
    ],
)
def test_safe_member_name_rejects(raw, reason):
    with pytest.raises(UnsafeNameError, match=reason):
        safe_member_name(raw)


def test_output_and_slice_number_names():
    assert predicted_mask_name("P1/P1_10.tif") == "P1/P1_10_pred_mask.png"
    assert predicted_mask_name("P1/scan.v2_3.png") == "P1/scan.v2_3_pred_mask.png"
    assert slice_number_of("P1/P1_10.tif") == 10
    assert slice_number_of("P1/P1_9.tif") == 9
    assert slice_number_of("P1/scan.tif") is None


def test_folder_listing_finds_slices(scoring_folder):
    listing = list_source(scoring_folder)

    assert listing.kind == "folder"
    assert [entry.member for entry in listing.entries] == sorted(REAL_MEMBERS + DECODE_FAILURES)
    real = {entry.member: entry for entry in listing.entries if not entry.member.startswith(BAD_PATIENT)}
    assert {entry.patient_id for entry in real.values()} == set(REAL_PATIENTS)
    assert sorted(entry.slice_number for entry in real.values()) == sorted(REAL_SLICE_NUMBERS * 2)
    first = real[REAL_MEMBERS[0]]
    assert first.source == str(scoring_folder / REAL_MEMBERS[0])
    assert first.size == (scoring_folder / REAL_MEMBERS[0]).stat().st_size


def test_folder_listing_ignores_masks_and_other_files(scoring_folder):
    listing = list_source(scoring_folder)

    masks = [name for name in listing.ignored if name.endswith("_mask.tif")]
    assert len(masks) == len(REAL_MEMBERS)
    for name in IGNORED_FILES:
        assert name in listing.ignored
    assert not any(entry.member.endswith("_mask.tif") for entry in listing.entries)


def test_folder_listing_reports_nested_archive(scoring_folder):
    listing = list_source(scoring_folder)

    assert [error.member for error in listing.errors] == [f"{BAD_PATIENT}/scans.zip"]
    assert listing.errors[0].patient_id == BAD_PATIENT
    assert listing.errors[0].reason.startswith("nested archive")


def test_zip_and_tar_list_same_entries(scoring_folder, tmp_path):
    folder = list_source(scoring_folder)
    archives = [
        zip_folder(scoring_folder, tmp_path / "scans.zip"),
        tar_folder(scoring_folder, tmp_path / "scans.tar.gz"),
        tar_folder(scoring_folder, tmp_path / "scans.tar", mode="w"),
    ]
    for archive in archives:
        listing = list_source(archive)

        assert listing.kind == ("zip" if archive.suffix == ".zip" else "tar")
        assert [(e.member, e.patient_id, e.slice_number) for e in listing.entries] == [
            (e.member, e.patient_id, e.slice_number) for e in folder.entries
        ]
        assert listing.entries[0].source == f"{archive}!/{listing.entries[0].member}"
        assert [error.member for error in listing.errors] == [error.member for error in folder.errors]


def test_wrapping_folder_is_not_a_patient(scoring_folder, tmp_path):
    plain = list_source(zip_folder(scoring_folder, tmp_path / "plain.zip"))
    wrapped = list_source(zip_folder(scoring_folder, tmp_path / "wrapped.zip", prefix="data/kaggle_3m/"))

    assert [(e.member, e.patient_id) for e in wrapped.entries] == [(e.member, e.patient_id) for e in plain.entries]
    assert wrapped.entries[0].source.endswith("!/data/kaggle_3m/" + wrapped.entries[0].member)


def test_single_patient_folder_is_kept(tmp_path):
    root = write_slice_files(tmp_path / "in", ["P1/scan_1.tif", "P1/scan_2.tif"])

    listing = list_source(root)

    assert [(e.member, e.patient_id) for e in listing.entries] == [("P1/scan_1.tif", "P1"), ("P1/scan_2.tif", "P1")]


def test_top_level_slice_patient_from_name(tmp_path):
    root = write_slice_files(tmp_path / "in", ["P7_12.tif", "P1/P1_1.tif", "loose.png"])

    listing = list_source(root)

    found = {e.member: (e.patient_id, e.slice_number) for e in listing.entries}
    assert found == {"P7_12.tif": ("P7", 12), "P1/P1_1.tif": ("P1", 1), "loose.png": ("loose", None)}


def test_zip_unsafe_members_are_errors(tmp_path):
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("P1/P1_1.tif", b"II*\x00")
        archive.writestr("../escape_1.tif", b"II*\x00")
        archive.writestr("/tmp/escape_2.tif", b"II*\x00")
        archive.writestr("P1/../../escape_3.tif", b"II*\x00")
        archive.writestr("P1\\..\\..\\escape_4.tif", b"II*\x00")
        add_zip_symlink(archive, "P1/P1_5.tif", "/etc/passwd")
        archive.writestr("P1/inner.tar.gz", b"\x1f\x8b")

    listing = list_source(path)

    assert [entry.member for entry in listing.entries] == ["P1/P1_1.tif"]
    reasons = {error.member: error.reason for error in listing.errors}
    for name in ("../escape_1.tif", "/tmp/escape_2.tif", "P1/../../escape_3.tif", "P1\\..\\..\\escape_4.tif"):
        assert reasons[name].startswith("unsafe member name"), name
    assert "symbolic link" in reasons["P1/P1_5.tif"]
    assert "nested archive" in reasons["P1/inner.tar.gz"]
    assert all(error.source.startswith(f"{path}!/") for error in listing.errors)


def test_tar_unsafe_members_are_errors(tmp_path):
    path = tmp_path / "hostile.tar"
    with tarfile.open(path, "w") as archive:
        add_tar_member(archive, "P1/P1_1.tif", b"II*\x00")
        add_tar_member(archive, "../escape_1.tif", b"II*\x00")
        add_tar_member(archive, "/tmp/escape_2.tif", b"II*\x00")
        add_tar_member(archive, "P1/P1_3.tif", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add_tar_member(archive, "P1/P1_4.tif", kind=tarfile.LNKTYPE, link="../../outside.tif")
        add_tar_member(archive, "P1/P1_5.tif", kind=tarfile.FIFOTYPE)
        add_tar_member(archive, "P1/P1_6.tif", kind=tarfile.CHRTYPE)

    listing = list_source(path)

    assert [entry.member for entry in listing.entries] == ["P1/P1_1.tif"]
    reasons = {error.member: error.reason for error in listing.errors}
    assert reasons["../escape_1.tif"] == "unsafe member name: name contains a '..' component"
    assert reasons["/tmp/escape_2.tif"] == "unsafe member name: absolute name"
    assert reasons["P1/P1_3.tif"] == "symbolic link member (to '/etc/passwd'), not followed"
    assert reasons["P1/P1_4.tif"] == "hard link member (to '../../outside.tif'), not followed"
    assert reasons["P1/P1_5.tif"] == "not a regular file"
    assert reasons["P1/P1_6.tif"] == "not a regular file"


def test_repeated_and_colliding_names_are_errors(tmp_path):
    path = tmp_path / "repeats.tar"
    with tarfile.open(path, "w") as archive:
        for number in range(1, 10):  # positions 0 to 8, so the repeated name is at 9 and 10
            add_tar_member(archive, f"P2/P2_{number}.tif", b"other")
        add_tar_member(archive, "P1/P1_1.tif", b"first")
        add_tar_member(archive, "P1/P1_1.tif", b"second")
        add_tar_member(archive, "P1/P1_2.png", b"png")
        add_tar_member(archive, "P1/P1_2.tif", b"tif")

    listing = list_source(path)

    assert [(e.member, e.location) for e in listing.entries][:2] == [("P1/P1_1.tif", 9), ("P1/P1_2.png", 11)]
    reasons = sorted((error.member, error.reason) for error in listing.errors)
    assert reasons == [
        ("P1/P1_1.tif", "the name appears more than once in the input, and only the first is scored"),
        ("P1/P1_2.tif", "its output name P1/P1_2_pred_mask.png is already the output of P1/P1_2.png"),
    ]


def test_oversized_member_is_error(tmp_path, monkeypatch):
    root = write_slice_files(tmp_path / "in", ["P1/P1_1.tif"], data=b"x" * 100)
    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", 50)

    listing = list_source(root)

    assert listing.entries == []
    assert listing.errors[0].reason == "100 bytes, over the limit of 50 bytes for one slice"


def test_output_folder_inside_input_is_skipped(tmp_path):
    root = write_slice_files(tmp_path / "in", ["P1/P1_1.tif", "scored/P1/P1_1.tif"])

    listing = list_source(root, exclude=root / "scored")

    assert [entry.member for entry in listing.entries] == ["P1/P1_1.tif"]


def test_folder_symlink_loop_is_listed_once(tmp_path):
    root = write_slice_files(tmp_path / "in", ["P1/P1_1.tif"])
    os.symlink(root, root / "P1" / "loop", target_is_directory=True)

    listing = list_source(root)

    assert [entry.member for entry in listing.entries] == ["P1/P1_1.tif"]


def test_csv_listing(tmp_path):
    write_slice_files(tmp_path / "images", ["a/P1_1.tif", "a/P1_1_mask.tif", "b/P2_3.png", "other/notes.txt"])
    absolute = tmp_path / "images" / "b" / "P2_3.png"
    (tmp_path / "index.csv").write_text(
        "patient_id,image_path,mask_path\n"
        "P1,images/a/P1_1.tif,images/a/P1_1_mask.tif\n"
        "P1,images/a/P1_1_mask.tif,\n"
        f"P2,{absolute},\n"
        "P3,images/missing_4.tif,\n"
        "../up,images/a/P1_1.tif,\n"
        "P4,images/other/notes.txt,\n"
        "P5,,\n"
    )

    listing = list_source(tmp_path / "index.csv")

    assert listing.kind == "csv"
    assert [(e.member, e.patient_id, e.slice_number, e.source) for e in listing.entries] == [
        ("P1/P1_1.tif", "P1", 1, str(tmp_path / "images/a/P1_1.tif")),
        ("P2/P2_3.png", "P2", 3, str(absolute)),
    ]
    assert listing.ignored == ["images/a/P1_1_mask.tif"]
    reasons = [error.reason for error in listing.errors]
    assert "line 5: file not found" in reasons
    assert any(reason.startswith("line 6: patient_id '../up' cannot be a folder name") for reason in reasons)
    assert any(reason.startswith("line 7: not a slice file") for reason in reasons)
    assert "image_path is empty" in reasons


def test_csv_without_required_column(tmp_path):
    (tmp_path / "index.csv").write_text("patient,image_path\nP1,a.tif\n")

    with pytest.raises(ValueError, match=r"missing column\(s\) \['patient_id'\]"):
        list_source(tmp_path / "index.csv")


def test_unknown_input_is_rejected(tmp_path):
    (tmp_path / "scans.txt").write_text("not an archive")

    with pytest.raises(ValueError, match="not a folder, a zip or tar archive"):
        list_source(tmp_path / "scans.txt")
    with pytest.raises(FileNotFoundError, match="input not found"):
        list_source(tmp_path / "missing.zip")


def test_iter_slice_bytes_returns_member_bytes(scoring_folder, tmp_path):
    expected = {name: (scoring_folder / name).read_bytes() for name in REAL_MEMBERS}
    for path in (scoring_folder, zip_folder(scoring_folder, tmp_path / "s.zip"), tar_folder(scoring_folder, tmp_path / "s.tgz")):
        listing = list_source(path)
        requested = [entry for entry in listing.entries if entry.member in expected]

        found = {entry.member: data for entry, data, error in iter_slice_bytes(listing.kind, listing.path, requested)}

        assert found == expected, path


@pytest.mark.parametrize(
    "compressed, kept_bytes, first_ok, reason",
    [
        # An uncompressed tar is read at each member's listed offsets.
        (False, 1500, False, "the archive ends before byte"),  # cut inside the first member's data
        (False, 3000, True, "the archive ends before byte"),  # cut inside the second header
        # A compressed one is read as a stream.
        (True, 1500, False, "the archive cannot be read past this point"),
        (True, 3000, True, "not found when the archive was read again"),
    ],
)
def test_iter_slice_bytes_reports_truncated_tar(tmp_path, compressed, kept_bytes, first_ok, reason):
    path = tmp_path / "long.tar"
    with tarfile.open(path, "w") as archive:
        for number in range(1, 4):
            add_tar_member(archive, f"P1/P1_{number}.tif", bytes(2000))
    truncated = path.read_bytes()[:kept_bytes]
    if compressed:
        path.write_bytes(gzip.compress(path.read_bytes()))
    listing = list_source(path)
    path.write_bytes(gzip.compress(truncated) if compressed else truncated)

    results = list(iter_slice_bytes(listing.kind, path, listing.entries))

    assert [entry.member for entry, _, _ in results] == ["P1/P1_1.tif", "P1/P1_2.tif", "P1/P1_3.tif"]
    assert (results[0][1] == bytes(2000)) is first_ok
    failed = results[1:] if first_ok else results
    for _, data, error in failed:
        assert data is None
        assert error.startswith(reason)


def test_iter_slice_bytes_reports_replaced_tar(tmp_path):
    path = tmp_path / "scans.tar"
    with tarfile.open(path, "w") as archive:
        add_tar_member(archive, "P1/P1_1.tif", b"first")
        add_tar_member(archive, "P1/P1_2.tif", b"second")
    listing = list_source(path)
    with tarfile.open(path, "w") as archive:  # same sizes, other names: the offsets stay the same
        add_tar_member(archive, "P1/P1_2.tif", b"secon")
        add_tar_member(archive, "P1/P1_1.tif", b"first!")

    results = list(iter_slice_bytes(listing.kind, path, listing.entries))

    assert [data for _, data, _ in results] == [None, None]
    assert all(error.startswith("the archive changed after it was listed") for _, _, error in results)


def test_tar_with_global_pax_header_is_streamed(tmp_path):
    # `git archive` writes a global pax header, which applies to every later member.
    path = tmp_path / "scans.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "made by a test"}) as archive:
        add_tar_member(archive, "P1/P1_1.tif", b"first")
    listing = list_source(path)

    assert [entry.span for entry in listing.entries] == [None]
    assert [data for _, data, _ in iter_slice_bytes(listing.kind, path, listing.entries)] == [b"first"]


def test_iter_slice_bytes_reports_corrupt_zip_member(tmp_path):
    path = tmp_path / "corrupt.zip"
    path.write_bytes(zip_bytes({"P1/P1_1.tif": b"A" * 1000}))
    listing = list_source(path)
    data = bytearray(path.read_bytes())
    data[data.index(b"A" * 100)] = ord("B")  # stored member: one changed byte breaks its CRC
    path.write_bytes(bytes(data))

    [(entry, member_bytes, error)] = list(iter_slice_bytes(listing.kind, path, listing.entries))

    assert member_bytes is None
    assert "cannot read the zip member (BadZipFile" in error


def test_undecodable_and_long_names_are_errors(tmp_path):
    long_stem = "a" * 245  # fits a file name, but not with "_pred_mask.png" appended
    path = tmp_path / "names.tar"
    with tarfile.open(path, "w") as archive:
        add_tar_member(archive, "P1/P1_1.tif", b"II*\x00")
        add_tar_member(archive, "P1/\udcff_2.tif", b"II*\x00")  # the byte 0xff, not valid UTF-8
        add_tar_member(archive, f"P1/{long_stem}_3.tif", b"II*\x00")

    listing = list_source(path)

    assert [entry.member for entry in listing.entries] == ["P1/P1_1.tif"]
    reasons = {error.member: error.reason for error in listing.errors}
    assert reasons["P1/\\udcff_2.tif"] == "unsafe member name: name is not valid UTF-8"
    assert "over 255 bytes, too long for a file system" in reasons[f"P1/{long_stem}_3.tif"]


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_archive_replaced_after_listing(tmp_path, kind):
    # The same members in reverse order: reading by listed position must not swap slices.
    path = tmp_path / f"scans.{kind}"
    members = {f"P1/P1_{number}.tif": bytes([number]) * (1000 + number) for number in range(1, 4)}

    def write(names):
        if kind == "zip":
            path.write_bytes(zip_bytes({name: members[name] for name in names}))
            return
        with tarfile.open(path, "w") as archive:
            for name in names:
                add_tar_member(archive, name, members[name])

    write(sorted(members))
    listing = list_source(path)
    write(sorted(members, reverse=True))

    results = {entry.member: (data, error) for entry, data, error in iter_slice_bytes(listing.kind, path, listing.entries)}

    assert results["P1/P1_2.tif"][0] == members["P1/P1_2.tif"]  # still at its listed position
    for name in ("P1/P1_1.tif", "P1/P1_3.tif"):
        data, error = results[name]
        assert data is None, name
        assert "the archive changed after it was listed" in error, name


def test_legacy_lzma_tar_is_streamed(tmp_path):
    # tarfile opens the old .lzma format (no magic number of its own) as xz, so the listing must
    # not take the offsets tarfile reports for offsets in the file.
    plain = tmp_path / "scans.tar"
    with tarfile.open(plain, "w") as archive:
        add_tar_member(archive, "P1/P1_1.tif", b"first")
        add_tar_member(archive, "P1/P1_2.tif", b"second")
    path = tmp_path / "scans.tar.lzma"
    path.write_bytes(lzma.compress(plain.read_bytes(), format=lzma.FORMAT_ALONE))
    listing = list_source(path)

    assert [entry.span for entry in listing.entries] == [None, None]
    assert [data for _, data, _ in iter_slice_bytes(listing.kind, path, listing.entries)] == [b"first", b"second"]


def test_tar_deleted_after_listing(tmp_path):
    path = tmp_path / "scans.tar"
    with tarfile.open(path, "w") as archive:
        add_tar_member(archive, "P1/P1_1.tif", b"first")
        add_tar_member(archive, "P1/P1_2.tif", b"second")
    listing = list_source(path)
    path.unlink()

    results = list(iter_slice_bytes(listing.kind, path, listing.entries))

    assert [data for _, data, _ in results] == [None, None]
    assert all(error.startswith("the archive cannot be opened (FileNotFoundError") for _, _, error in results)


def test_tar_member_renamed_into_other_folder(tmp_path):
    # Same size at the same offset, and the new name is a suffix of the listed one.
    path = tmp_path / "scans.tar"
    with tarfile.open(path, "w") as archive:
        add_tar_member(archive, "P1/x!/P1_1.tif", b"first")
    listing = list_source(path)
    with tarfile.open(path, "w") as archive:
        add_tar_member(archive, "P1_1.tif", b"other")

    [(_, data, error)] = list(iter_slice_bytes(listing.kind, path, listing.entries))

    assert data is None
    assert error.startswith("the archive changed after it was listed")
