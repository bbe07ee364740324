"""List the slices of a scoring input and read their bytes.

An input is a folder tree, a zip archive, a tar archive (plain, gzip, bzip2 or xz), or an index CSV
with `patient_id` and `image_path` columns, either local or in S3 (`s3://bucket/key`). An S3 prefix
is listed like a folder tree, with the same rules, and its slices are read straight from S3. An S3
URI whose key is an object is an archive or a CSV. Each file or archive member ends up as one of:

- a slice to score (`.tif`, `.tiff`, `.png`, `.jpg`, `.jpeg`), with a relative member name that is
  safe to join to the output folder;
- an error with its reason. Listing finds unsafe names (absolute, with a drive letter or a `..`
  component), symbolic and hard links, other non-regular files, nested archives, members over
  `MAX_MEMBER_BYTES`, repeated names and output names that another slice already has. Slices
  that cannot be decoded are found later, when they are read;
- ignored: ground-truth masks (`*_mask.tif`), earlier predictions (`*_pred_mask.png`), hidden
  files and folders, `__MACOSX` folders, and files of other types (a README, a CSV).

Patients: the first folder of a member's name is its patient (`TCGA_CS_4942_19970222/..._10.tif`).
A folder that wraps everything, as `zip -r scans.zip kaggle_3m` makes, is not a patient: folders
common to every slice are dropped from the member names as long as each keeps a patient folder.
A slice with no folder gets the patient in its own file name (`P1_10.tif` -> `P1`). An index CSV
names the patient in its `patient_id` column, and its member names are `<patient_id>/<file name>`.
Its relative image paths are taken from the CSV's folder, or from the CSV's prefix for a CSV in S3;
an `image_path` may also be an `s3://` URI.
The slice number is the trailing `_<n>` of the file name, or None without one.

Archives are never extracted to disk: members are read into memory one at a time. A zip member,
and a member of an uncompressed tar, is read at the byte offset the listing found, so any group of
members can be read on its own. A compressed tar has no random access and is read as a stream,
from start to end, and so is an uncompressed tar with a global pax header or a sparse member. An
archive in S3 is not downloaded either but read through ranged GETs. A zip listing then fetches
only the central directory, and each read task fetches only its own members.
Any Ray node can read the archive, because nothing depends on a copy on the driver's disk.
"""

import io
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pandas as pd

from braintumor import s3
from braintumor.data.index import read_csv_table
from braintumor.data.io import OTHER_SUFFIXES, TIFF_SUFFIXES

FOLDER, ZIP, TAR, CSV = "folder", "zip", "tar", "csv"

SLICE_SUFFIXES = TIFF_SUFFIXES + OTHER_SUFFIXES
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tbz2", ".txz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar")
GROUND_TRUTH_SUFFIX = "_mask"
PREDICTED_MASK_SUFFIX = "_pred_mask.png"
CSV_COLUMNS = ("patient_id", "image_path")

# A 256x256x3 slice is under 200 KB even uncompressed. Larger members are rejected before they are
# read, so a hostile archive cannot make a reader hold gigabytes in memory.
MAX_MEMBER_BYTES = 64 * 2**20
# Maximum length of a file or folder name (NAME_MAX) on common Linux file systems such as ext4 and XFS.
MAX_NAME_BYTES = 255
# Bytes fetched by one ranged GET of an archive in S3. A member read at its own offset (zip, and
# uncompressed tar) is under 200 KB, so a GET of 1 MiB contains it and usually the next few members.
# A tar archive read as a stream is read from start to end, where larger GETs mean fewer requests.
ZIP_READ_BYTES = 2**20
TAR_READ_BYTES = 8 * 2**20

_SLICE_NUMBER = re.compile(r"_(\d+)$")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


class UnsafeNameError(ValueError):
    """A member name that could point outside the folder it is joined to."""


@dataclass(frozen=True)
class SliceEntry:
    """One slice to score."""

    member: str  # relative '/'-separated name, from which the output names derive
    source: str  # where the slice is, for tables: a file path or S3 URI, or `<archive>!/<name in the archive>`
    patient_id: str
    slice_number: int | None
    location: str | int  # file path or S3 URI (folder, CSV), or position of the member in the archive
    size: int  # bytes, as the file system or the archive states
    # Member of a tar read at offsets: the bytes from its first header to the end of its data, as
    # (start, end) offsets in the archive. None for other inputs and for tar archives read as a stream.
    span: tuple[int, int] | None = None

    @property
    def mask_name(self) -> str:
        """Relative name of the predicted mask written for this slice."""
        return predicted_mask_name(self.member)


@dataclass(frozen=True)
class MemberError:
    """A file or member that is not scored, and why."""

    member: str  # the name as found in the input, possibly unsafe, so it is never used as a path
    source: str
    patient_id: str
    reason: str


@dataclass
class SourceListing:
    """The slices of one input, sorted by member name, with the errors and the ignored names."""

    kind: str  # FOLDER, ZIP, TAR or CSV
    path: Path | str  # a local path, or an S3 URI (without a trailing '/' for a prefix)
    entries: list[SliceEntry] = field(default_factory=list)
    errors: list[MemberError] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    raw_name: str
    location: str | int
    size: int
    problem: str | None = None
    span: tuple[int, int] | None = None


def safe_member_name(raw: str) -> str:
    """Return `raw` as a relative '/'-separated name that stays inside any folder it is joined to.

    Backslashes count as separators (zip archives made on Windows use them), and empty and '.'
    components are dropped.

    Raises:
        UnsafeNameError: absolute name, drive letter, '..' component, control character, or no
            name left.
    """
    if any(ord(character) < 32 for character in raw):
        raise UnsafeNameError("name contains a control character")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeNameError("name is not valid UTF-8") from None
    name = raw.replace("\\", "/")
    if name.startswith("/"):
        raise UnsafeNameError("absolute name")
    if _DRIVE_LETTER.match(name):
        raise UnsafeNameError("name starts with a drive letter")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeNameError("name contains a '..' component")
    if not parts:
        raise UnsafeNameError("empty name")
    return "/".join(parts)


def predicted_mask_name(member: str) -> str:
    """Return the output name of a slice's predicted mask: `P1/P1_10.tif` -> `P1/P1_10_pred_mask.png`."""
    return str(PurePosixPath(member).with_suffix("")) + PREDICTED_MASK_SUFFIX


def slice_number_of(name: str) -> int | None:
    """Return the trailing `_<n>` of a file name (`P1_10.tif` -> 10), or None without one."""
    match = _SLICE_NUMBER.search(PurePosixPath(name).stem)
    return int(match.group(1)) if match else None


def list_source(path: str | Path, exclude: str | Path | None = None) -> SourceListing:
    """List the slices of a folder tree, zip or tar archive, or index CSV, local or in S3.

    Args:
        path: the input: a local path, or an `s3://bucket/key` URI. An S3 key that is an object is
            an archive or a CSV. Otherwise the key is a prefix, listed like a folder (a URI that
            ends in '/' is always a prefix).
        exclude: a folder or S3 prefix to leave out of a folder input (the output, when it lies
            inside). One of the other kind, local or S3, is ignored.

    Returns:
        The slices sorted by member name, the members that cannot be scored with their reasons,
        and the ignored names.

    Raises:
        FileNotFoundError: `path` does not exist (`s3.S3NotFoundError` for a missing bucket, or a
            key that is neither an object nor a prefix with objects under it).
        ValueError: `path` is a file but not a zip or tar archive or a CSV, an archive cannot be
            read, or a CSV cannot be parsed (empty, not UTF-8) or lacks a required column.
        s3.S3Error: access denied, no credentials or another failed S3 request.
    """
    if s3.is_s3(path):
        return _list_s3_input(str(path), exclude)
    path = Path(path).resolve()
    if path.is_dir():
        excluded = Path(exclude).resolve() if exclude is not None and not s3.is_s3(exclude) else None
        return _classify(FOLDER, path, _folder_candidates(path, excluded))
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: input not found. Expected a folder, a .zip or .tar(.gz) archive, or an index CSV."
        )
    return _list_file(path)


def iter_slice_bytes(
    kind: str, container: str | Path, entries: Iterable[SliceEntry]
) -> Iterator[tuple[SliceEntry, bytes | None, str | None]]:
    """Yield each entry with its bytes, or with None and the reason it could not be read.

    Folder, CSV and zip entries come in the order given, and tar entries in archive order.
    """
    if kind in (FOLDER, CSV):
        for entry in entries:
            yield (entry, *_read_file(str(entry.location)))
    elif kind == ZIP:
        yield from _read_zip_members(_container(container), entries)
    elif kind == TAR:
        entries = list(entries)
        if all(entry.span is not None for entry in entries):
            yield from _read_tar_spans(_container(container), entries)
        else:
            yield from _read_tar_members(_container(container), entries)
    else:
        raise ValueError(f"unknown input kind '{kind}', expected one of {(FOLDER, ZIP, TAR, CSV)}")


def _container(location: str | Path) -> str | Path:
    """Return an S3 URI as it is and a local path as a Path."""
    return str(location) if s3.is_s3(location) else Path(location)


def _open_container(container: str | Path, request_bytes: int) -> BinaryIO:
    """Open a local archive, or an archive in S3 read through ranged GETs of `request_bytes` bytes."""
    if s3.is_s3(container):
        return s3.open_object(str(container), request_bytes)
    return open(container, "rb")


def _list_file(container: str | Path) -> SourceListing:
    """List an index CSV (by its suffix), a zip archive or a tar archive (by their contents)."""
    if PurePosixPath(str(container)).suffix.lower() == ".csv":
        return _list_csv(container)
    with _open_container(container, ZIP_READ_BYTES) as file:
        is_zip = zipfile.is_zipfile(file)
        file.seek(0)
        is_tar = not is_zip and tarfile.is_tarfile(file)
    if is_zip:
        return _classify(ZIP, container, _zip_candidates(container))
    if is_tar:
        return _classify(TAR, container, _tar_candidates(container))
    raise ValueError(f"{container}: not a folder, a zip or tar archive, or a .csv index, so no slices can be listed in it")


def _list_s3_input(uri: str, exclude: str | Path | None) -> SourceListing:
    location = s3.S3Uri.parse(uri)
    # An object with exactly this key wins over a prefix of the same name.
    if location.key and not location.key.endswith("/") and s3.exists(uri):
        return _list_file(uri)
    objects = s3.list_object_sizes(uri)
    if not objects:
        raise s3.S3NotFoundError(
            uri,
            "input not found: no object has this key and no object is under this prefix. Expected a "
            "prefix of slices, a .zip or .tar(.gz) archive, or an index CSV.",
        )
    container = str(location).rstrip("/")
    return _classify(FOLDER, container, _s3_folder_candidates(location, objects, exclude))


def _s3_folder_candidates(folder: s3.S3Uri, objects: dict[str, int], exclude: str | Path | None) -> Iterator[_Candidate]:
    folder_key = folder.folder_key
    excluded_key = None
    if exclude is not None and s3.is_s3(exclude):
        excluded = s3.S3Uri.parse(str(exclude))
        if excluded.bucket == folder.bucket and excluded.folder_key.startswith(folder_key):
            excluded_key = excluded.folder_key
    for uri, size in objects.items():
        key = s3.S3Uri.parse(uri).key
        if key.endswith("/"):
            continue  # a zero-byte "folder" marker that some tools create
        if excluded_key is not None and key.startswith(excluded_key):
            continue
        yield _Candidate(key[len(folder_key):], uri, size)


def _folder_candidates(root: Path, excluded: Path | None) -> Iterator[_Candidate]:
    # Symbolic links to folders are followed, because a user's own folder tree may use them. The
    # (device, inode) of every folder seen stops a link loop. Names come from the walk, never from
    # a link's target, so they stay inside the tree.
    seen_folders = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        folder_path = Path(folder)
        folder_stat = folder_path.stat()
        key = (folder_stat.st_dev, folder_stat.st_ino)
        if key in seen_folders or (excluded is not None and folder_path.resolve() == excluded):
            subfolders.clear()
            continue
        seen_folders.add(key)
        subfolders.sort()
        for name in sorted(files):
            file_path = folder_path / name
            relative = file_path.relative_to(root).as_posix()
            try:
                file_stat = file_path.stat()
            except OSError as error:
                yield _Candidate(relative, str(file_path), 0, f"cannot be read ({error.strerror})")
                continue
            problem = None if stat.S_ISREG(file_stat.st_mode) else "not a regular file"
            yield _Candidate(relative, str(file_path), file_stat.st_size, problem)


def _zip_candidates(path: str | Path) -> list[_Candidate]:
    try:
        with _open_container(path, ZIP_READ_BYTES) as file, zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path}: cannot read the zip archive ({error})") from None

    candidates = []
    for position, info in enumerate(infos):
        if info.is_dir():
            continue
        # Unix zip tools store the file mode in the high 16 bits of external_attr. 0 means unknown.
        mode = info.external_attr >> 16
        problem = None
        if stat.S_ISLNK(mode):
            problem = "symbolic link member, not followed"
        elif mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            problem = "not a regular file"
        candidates.append(_Candidate(info.filename, position, info.file_size, problem))
    return candidates


def _tar_candidates(path: str | Path) -> list[_Candidate]:
    """List a tar archive's members, with their byte spans when they can be read at their offsets."""
    candidates = []
    try:
        with _open_container(path, TAR_READ_BYTES) as file:
            compressed = not _is_tar_header(file.read(tarfile.BLOCKSIZE))
            file.seek(0)
            sparse = False
            with tarfile.open(fileobj=file, mode="r|*") as archive:
                for position, member in enumerate(archive):
                    sparse = sparse or member.issparse()
                    if member.isdir():
                        continue
                    problem = None
                    if member.issym():
                        problem = f"symbolic link member (to '{member.linkname}'), not followed"
                    elif member.islnk():
                        problem = f"hard link member (to '{member.linkname}'), not followed"
                    elif not member.isreg():
                        problem = "not a regular file"
                    # `offset` is where the member's first header starts, long-name and pax headers included.
                    span = (member.offset, member.offset_data + member.size)
                    candidates.append(_Candidate(member.name, position, member.size, problem, span))
                # A global pax header changes how every later header is read, so a member's own
                # headers cannot be read alone, and a sparse member stores fewer bytes than its
                # size. Such archives are read as a stream.
                separable = not compressed and not archive.pax_headers and not sparse
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: cannot read the tar archive ({type(error).__name__}: {error})") from None
    if not separable:
        candidates = [replace(candidate, span=None) for candidate in candidates]
    return candidates


def _is_tar_header(block: bytes) -> bool:
    """Return whether `block` is an uncompressed tar header with a valid checksum, as an archive's first block is.

    A compressed stream fails the checksum, whatever its format, so the offsets `tarfile` reports
    are not offsets in the file.
    """
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _classify(kind: str, container: str | Path, candidates: Iterable[_Candidate]) -> SourceListing:
    listing = SourceListing(kind=kind, path=container)
    slices, rejected = [], []
    for candidate in candidates:
        source = _source_of(kind, container, _displayable(candidate.raw_name))
        try:
            name = safe_member_name(candidate.raw_name)
        except UnsafeNameError as error:
            listing.errors.append(MemberError(_displayable(candidate.raw_name), source, "", f"unsafe member name: {error}"))
            continue
        parts = name.split("/")
        if candidate.problem is not None:
            rejected.append((parts, source, candidate.problem))
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in parts):
            listing.ignored.append(name)
            continue
        reason = _file_type_problem(name, candidate.size)
        if reason == "ignored":
            listing.ignored.append(name)
        elif reason is not None:
            rejected.append((parts, source, reason))
        else:
            slices.append((parts, candidate, source))

    # Errors with a safe name get the member name and patient a slice there would get, so that the
    # errors table, like the labels table, does not depend on a wrapping folder.
    dropped = _common_wrapping_folders([parts for parts, _, _ in slices])
    for parts, source, reason in rejected:
        member_parts = parts[dropped:] if dropped and parts[:dropped] == slices[0][0][:dropped] else parts
        listing.errors.append(MemberError("/".join(member_parts), source, _patient_of(member_parts), reason))
    named = []
    for parts, candidate, source in slices:
        member_parts = parts[dropped:]
        named.append(("/".join(member_parts), _patient_of(member_parts), candidate, source))
    _add_entries(listing, named)
    return listing


def _file_type_problem(name: str, size: int) -> str | None:
    """Return None for a slice file, "ignored" for a file that is not a slice, or an error reason."""
    lower = name.lower()
    suffix = PurePosixPath(lower).suffix
    if lower.endswith(ARCHIVE_SUFFIXES):
        return "nested archive, not opened: extract it and score it on its own"
    if suffix not in SLICE_SUFFIXES:
        return "ignored"
    if PurePosixPath(lower).stem.endswith(GROUND_TRUTH_SUFFIX):
        return "ignored"  # a ground-truth mask, or a predicted mask of an earlier run
    if size > MAX_MEMBER_BYTES:
        return f"{size} bytes, over the limit of {MAX_MEMBER_BYTES} bytes for one slice"
    return None


def _common_wrapping_folders(names: list[list[str]]) -> int:
    """Count the leading folders shared by all names that can go while each keeps a patient folder."""
    if not names:
        return 0
    dropped = 0
    first = names[0]
    while all(len(parts) - dropped > 2 and parts[dropped] == first[dropped] for parts in names):
        dropped += 1
    return dropped


def _patient_of(member_parts: list[str]) -> str:
    if len(member_parts) > 1:
        return member_parts[0]
    stem = PurePosixPath(member_parts[0]).stem
    return _SLICE_NUMBER.sub("", stem) or stem


def _add_entries(listing: SourceListing, named: list[tuple[str, str, _Candidate, str]]) -> None:
    """Append entries in member order. A repeated member or output name becomes an error instead."""
    # Locations of one listing are all paths or all archive positions, so they compare; an
    # archive's earlier member comes first.
    named.sort(key=lambda item: (item[0], item[2].location))
    first_with_member: dict[str, str] = {}
    first_with_output: dict[str, str] = {}
    for member, patient_id, candidate, source in named:
        mask_name = predicted_mask_name(member)
        if member in first_with_member:
            reason = "the name appears more than once in the input, and only the first is scored"
            listing.errors.append(MemberError(member, source, patient_id, reason))
            continue
        if mask_name in first_with_output:
            reason = f"its output name {mask_name} is already the output of {first_with_output[mask_name]}"
            listing.errors.append(MemberError(member, source, patient_id, reason))
            continue
        if any(len(part.encode()) > MAX_NAME_BYTES for part in mask_name.split("/")):
            reason = f"its output name {mask_name} has a component over {MAX_NAME_BYTES} bytes, too long for a file system"
            listing.errors.append(MemberError(member, source, patient_id, reason))
            continue
        first_with_member[member] = source
        first_with_output[mask_name] = member
        listing.entries.append(
            SliceEntry(member, source, patient_id, slice_number_of(member), candidate.location, candidate.size, candidate.span)
        )


def _displayable(raw_name: str) -> str:
    """Return a name with undecodable bytes (kept by Python as surrogates) written as escapes, for tables."""
    return raw_name.encode("utf-8", "backslashreplace").decode("utf-8")


def _source_of(kind: str, container: str | Path, raw_name: str) -> str:
    if kind == FOLDER:
        return f"{container}/{raw_name}" if s3.is_s3(container) else str(container / raw_name)
    return f"{container}!/{raw_name}"


def _list_csv(path: str | Path) -> SourceListing:
    frame = read_csv_table(path, dtype=str, keep_default_na=False)
    missing = [column for column in CSV_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}. A scoring index needs {list(CSV_COLUMNS)}, "
            f"found {list(frame.columns)}."
        )

    listing = SourceListing(kind=CSV, path=path)
    rows = []
    for line, (patient_id, image_path) in enumerate(zip(frame["patient_id"], frame["image_path"]), start=2):
        patient_id, image_path = patient_id.strip(), image_path.strip()
        if not image_path:
            listing.errors.append(MemberError(f"line {line}", str(path), patient_id, "image_path is empty"))
            continue
        rows.append((line, patient_id, image_path, *_csv_image_location(path, image_path)))

    # The objects in S3 are looked up in one listing, not with a request per row.
    object_sizes = _object_sizes([location for *_, location, problem in rows if problem is None and s3.is_s3(location)])
    named = []
    for line, patient_id, image_path, location, problem in rows:
        source = str(location)
        reason = _patient_id_problem(patient_id) or problem or _csv_file_problem(location, object_sizes)
        if reason == "ignored":
            listing.ignored.append(image_path)
            continue
        if reason is not None:
            listing.errors.append(MemberError(image_path, source, patient_id, f"line {line}: {reason}"))
            continue
        size = object_sizes[source] if s3.is_s3(location) else location.stat().st_size
        candidate = _Candidate(image_path, source, size)
        named.append((f"{patient_id}/{_file_name(location)}", patient_id, candidate, source))
    _add_entries(listing, named)
    return listing


def _csv_image_location(csv_path: str | Path, image_path: str) -> tuple[str | Path, str | None]:
    """Return where an `image_path` of the CSV points (an S3 URI or a local Path) and a problem or None.

    Relative paths are taken from the CSV's folder, or from its prefix for a CSV in S3.
    """
    if s3.is_s3(image_path):
        try:
            s3.S3Uri.parse(image_path)
        except ValueError as error:
            return image_path, str(error)
        return image_path, None
    if Path(image_path).is_absolute():
        if s3.is_s3(csv_path):
            # A CSV shared through a bucket must not make every node that runs the job read its local files.
            return image_path, "a local path in an index CSV stored in S3; give an s3:// URI or a path relative to the CSV"
        return Path(image_path), None
    if not s3.is_s3(csv_path):
        return Path(csv_path).parent / image_path, None

    # S3 keys are plain strings, so '.' and '..' are resolved here as a file system would.
    csv_location = s3.S3Uri.parse(str(csv_path))
    parts = csv_location.key.split("/")[:-1]
    for part in image_path.split("/"):
        if part == "..":
            if not parts:
                return image_path, f"image_path '{image_path}' leads outside the bucket '{csv_location.bucket}'"
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return str(s3.S3Uri(csv_location.bucket, "/".join(parts))), None


def _object_sizes(uris: list[str]) -> dict[str, int]:
    """Return the size of each object of `uris` that exists, from one listing per bucket.

    Each listing covers the longest folder prefix that all the bucket's keys share.
    """
    keys_by_bucket = defaultdict(set)
    for uri in uris:
        location = s3.S3Uri.parse(uri)
        keys_by_bucket[location.bucket].add(location.key)
    sizes = {}
    for bucket, keys in keys_by_bucket.items():
        shared = os.path.commonprefix(sorted(keys))
        folder = shared[: shared.rfind("/") + 1]
        try:
            listed = s3.list_object_sizes(f"{s3.SCHEME}{bucket}/{folder}")
        except s3.S3NotFoundError:
            # A row naming a bucket that does not exist is that row's error, not the whole job's.
            continue
        sizes.update({uri: size for uri, size in listed.items() if s3.S3Uri.parse(uri).key in keys})
    return sizes


def _file_name(location: str | Path) -> str:
    return PurePosixPath(s3.S3Uri.parse(location).key).name if s3.is_s3(location) else Path(location).name


def _patient_id_problem(patient_id: str) -> str | None:
    # The patient id becomes a folder of the output, so it must be one plain path component.
    if not patient_id:
        return "patient_id is empty"
    if patient_id in (".", "..") or patient_id.startswith(".") or any(c in patient_id for c in "/\\"):
        return f"patient_id '{patient_id}' cannot be a folder name (no '/', '\\' or leading '.')"
    if any(ord(character) < 32 for character in patient_id):
        return "patient_id contains a control character"
    return None


def _csv_file_problem(location: str | Path, object_sizes: dict[str, int]) -> str | None:
    """Return None for a readable slice file or object, "ignored" for a mask, or an error reason.

    Unlike a folder, a CSV names its files on purpose, so a file of another type is an error.

    Args:
        location: a local path, or an S3 URI looked up in `object_sizes`.
    """
    file_name = PurePosixPath(_file_name(location))
    suffix = file_name.suffix.lower()
    if suffix in SLICE_SUFFIXES and file_name.stem.lower().endswith(GROUND_TRUTH_SUFFIX):
        return "ignored"
    if file_name.name.lower().endswith(ARCHIVE_SUFFIXES):
        return "nested archive, not opened: extract it and list its slices"
    if suffix not in SLICE_SUFFIXES:
        return f"not a slice file, expected one of {SLICE_SUFFIXES}"
    if s3.is_s3(location):
        size = object_sizes.get(str(location))
        if size is None:
            return "object not found (or its bucket does not exist)"
    else:
        try:
            file_stat = location.stat()
        except OSError:
            return "file not found"
        if not stat.S_ISREG(file_stat.st_mode):
            return "not a regular file"
        size = file_stat.st_size
    if size > MAX_MEMBER_BYTES:
        return f"{size} bytes, over the limit of {MAX_MEMBER_BYTES} bytes for one slice"
    return None


def _read_file(location: str) -> tuple[bytes | None, str | None]:
    if s3.is_s3(location):
        return _read_object(location)
    path = Path(location)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_MEMBER_BYTES + 1)
    except FileNotFoundError:
        return None, "file not found"
    except OSError as error:
        return None, f"cannot be read ({error.strerror or error})"
    return _checked_size(data)


def _read_object(uri: str) -> tuple[bytes | None, str | None]:
    try:
        data = s3.read_bytes(uri, max_bytes=MAX_MEMBER_BYTES + 1)
    except s3.S3NotFoundError:
        return None, "object not found"
    except s3.S3Error as error:
        return None, f"cannot be read ({error.reason})"
    return _checked_size(data)


def _read_zip_members(path: str | Path, entries: Iterable[SliceEntry]) -> Iterator[tuple[SliceEntry, bytes | None, str | None]]:
    with _open_container(path, ZIP_READ_BYTES) as file, zipfile.ZipFile(file) as archive:
        infos = archive.infolist()
        for entry in entries:
            position = int(entry.location)
            changed = _changed_member(entry, path, infos[position].filename, infos[position].file_size) if position < len(infos) else (
                "the archive has fewer members than when it was listed, so it changed during the run; run the job again"
            )
            if changed:
                yield entry, None, changed
                continue
            try:
                with archive.open(infos[position]) as member:
                    data = member.read(MAX_MEMBER_BYTES + 1)
            # zipfile raises these for a bad CRC, an encrypted member, an unknown compression
            # method or corrupt compressed data.
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError, OSError, ValueError) as error:
                yield entry, None, f"cannot read the zip member ({type(error).__name__}: {error})"
                continue
            yield (entry, *_checked_size(data))


def _read_tar_members(path: str | Path, entries: Iterable[SliceEntry]) -> Iterator[tuple[SliceEntry, bytes | None, str | None]]:
    pending = {int(entry.location): entry for entry in entries}
    try:
        with _open_container(path, TAR_READ_BYTES) as file, tarfile.open(fileobj=file, mode="r|*") as archive:
            for position, member in enumerate(archive):
                entry = pending.get(position)
                if entry is None:
                    continue
                changed = _changed_member(entry, path, member.name, member.size)
                if changed:
                    del pending[position]
                    yield entry, None, changed
                    if not pending:
                        return
                    continue
                extracted = archive.extractfile(member)
                data = extracted.read(MAX_MEMBER_BYTES + 1) if extracted is not None else None
                # Removed only once read, so a member whose read fails is reported below.
                del pending[position]
                if data is None:
                    yield entry, None, "not a regular file"
                else:
                    yield (entry, *_checked_size(data))
                if not pending:
                    return
        reason = "not found when the archive was read again, so it is truncated or changed during the run"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        reason = f"the archive cannot be read past this point ({type(error).__name__}: {error})"
    for entry in sorted(pending.values(), key=lambda item: int(item.location)):
        yield entry, None, reason


def _read_tar_spans(path: str | Path, entries: list[SliceEntry]) -> Iterator[tuple[SliceEntry, bytes | None, str | None]]:
    """Read members of an uncompressed tar archive at the byte spans the listing found.

    Each member's headers are read again with its data, so a member that is no longer at its
    offset is reported, not read as another slice. Members are read in archive order.
    """
    entries = sorted(entries, key=lambda entry: entry.span[0])
    try:
        file = _open_container(path, ZIP_READ_BYTES)
    except OSError as error:  # including s3.S3Error
        for entry in entries:
            yield entry, None, f"the archive cannot be opened ({type(error).__name__}: {error})"
        return
    with file:
        for entry in entries:
            start, end = entry.span
            try:
                file.seek(start)
                chunk = file.read(end - start)
                if len(chunk) < end - start:
                    yield entry, None, (
                        f"the archive ends before byte {end}, where this member ended when it was listed, so it was "
                        "truncated or changed after it was listed"
                    )
                    continue
                with tarfile.open(fileobj=io.BytesIO(chunk), mode="r|") as archive:
                    member = archive.next()
                    if member is None:
                        raise EOFError("no member header at the listed offset")
                    changed = _changed_member(entry, path, member.name, member.size)
                    if changed:
                        yield entry, None, changed
                        continue
                    extracted = archive.extractfile(member)
                    data = extracted.read(MAX_MEMBER_BYTES + 1) if extracted is not None else None
            except (tarfile.TarError, OSError, EOFError) as error:
                yield entry, None, f"the archive cannot be read at this member ({type(error).__name__}: {error})"
                continue
            if data is None:
                yield entry, None, "not a regular file"
            else:
                yield (entry, *_checked_size(data))


def _changed_member(entry: SliceEntry, container: str | Path, name: str, size: int) -> str | None:
    """Return why the member found for an entry is not the one listed, or None if it is.

    Read tasks find archive members by their position or byte offset in the listing. An archive
    replaced after the listing would otherwise give one slice's bytes, and so its scores, to
    another slice. NOTE: an archive rewritten with every member at the same place, name and size
    but other contents is not detected.
    """
    same_name = entry.source == _source_of(TAR, container, _displayable(name))
    if not same_name or size != entry.size:
        return (
            f"the archive changed after it was listed (its member {int(entry.location)} is now '{_displayable(name)}' "
            f"of {size} bytes, not this slice of {entry.size} bytes); run the job again"
        )
    return None


def _checked_size(data: bytes) -> tuple[bytes | None, str | None]:
    if len(data) > MAX_MEMBER_BYTES:
        return None, f"over the limit of {MAX_MEMBER_BYTES} bytes for one slice"
    return data, None
