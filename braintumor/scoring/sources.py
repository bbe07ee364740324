"""List the slices of a scoring input and read their bytes.

An input is a folder tree, a zip archive, a tar archive (plain, gzip, bzip2 or xz), or an index CSV
with `patient_id` and `image_path` columns. Each file or archive member ends up as one of:

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
The slice number is the trailing `_<n>` of the file name, or None without one.

Archives are never extracted to disk: members are read into memory one at a time, and a tar
archive is read as a stream, from start to end, because compressed tar has no random access.
"""

import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

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

_SLICE_NUMBER = re.compile(r"_(\d+)$")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


class UnsafeNameError(ValueError):
    """A member name that could point outside the folder it is joined to."""


@dataclass(frozen=True)
class SliceEntry:
    """One slice to score."""

    member: str  # relative '/'-separated name, from which the output names derive
    source: str  # where the slice is, for tables: a file path, or `<archive>!/<name in the archive>`
    patient_id: str
    slice_number: int | None
    location: str | int  # file path (folder, CSV) or position of the member in the archive
    size: int  # bytes, as the file system or the archive states

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
    path: Path
    entries: list[SliceEntry] = field(default_factory=list)
    errors: list[MemberError] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    raw_name: str
    location: str | int
    size: int
    problem: str | None = None


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
    """List the slices of a folder tree, zip or tar archive, or index CSV.

    Args:
        path: the input.
        exclude: a folder to leave out of a folder input (the output folder, when it lies inside).

    Returns:
        The slices sorted by member name, the members that cannot be scored with their reasons,
        and the ignored names.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a file but not a zip or tar archive or a CSV, an archive cannot be
            read, or a CSV cannot be parsed (empty, not UTF-8) or lacks a required column.
    """
    path = Path(path).resolve()
    if path.is_dir():
        excluded = Path(exclude).resolve() if exclude is not None else None
        return _classify(FOLDER, path, _folder_candidates(path, excluded))
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: input not found. Expected a folder, a .zip or .tar(.gz) archive, or an index CSV."
        )
    if path.suffix.lower() == ".csv":
        return _list_csv(path)
    if zipfile.is_zipfile(path):
        return _classify(ZIP, path, _zip_candidates(path))
    if tarfile.is_tarfile(path):
        return _classify(TAR, path, _tar_candidates(path))
    raise ValueError(f"{path}: not a folder, a zip or tar archive, or a .csv index, so no slices can be listed in it")


def iter_slice_bytes(
    kind: str, container: str | Path, entries: Iterable[SliceEntry]
) -> Iterator[tuple[SliceEntry, bytes | None, str | None]]:
    """Yield each entry with its bytes, or with None and the reason it could not be read.

    Folder, CSV and zip entries come in the order given. Tar entries come in archive order,
    because the archive is read as one stream.
    """
    if kind in (FOLDER, CSV):
        for entry in entries:
            yield (entry, *_read_file(Path(entry.location)))
    elif kind == ZIP:
        yield from _read_zip_members(Path(container), entries)
    elif kind == TAR:
        yield from _read_tar_members(Path(container), entries)
    else:
        raise ValueError(f"unknown input kind '{kind}', expected one of {(FOLDER, ZIP, TAR, CSV)}")


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


def _zip_candidates(path: Path) -> list[_Candidate]:
    try:
        with zipfile.ZipFile(path) as archive:
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


def _tar_candidates(path: Path) -> list[_Candidate]:
    candidates = []
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for position, member in enumerate(archive):
                if member.isdir():
                    continue
                problem = None
                if member.issym():
                    problem = f"symbolic link member (to '{member.linkname}'), not followed"
                elif member.islnk():
                    problem = f"hard link member (to '{member.linkname}'), not followed"
                elif not member.isreg():
                    problem = "not a regular file"
                candidates.append(_Candidate(member.name, position, member.size, problem))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: cannot read the tar archive ({type(error).__name__}: {error})") from None
    return candidates


def _classify(kind: str, container: Path, candidates: Iterable[_Candidate]) -> SourceListing:
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
            SliceEntry(member, source, patient_id, slice_number_of(member), candidate.location, candidate.size)
        )


def _displayable(raw_name: str) -> str:
    """Return a name with undecodable bytes (kept by Python as surrogates) written as escapes, for tables."""
    return raw_name.encode("utf-8", "backslashreplace").decode("utf-8")


def _source_of(kind: str, container: Path, raw_name: str) -> str:
    if kind == FOLDER:
        return str(container / raw_name)
    return f"{container}!/{raw_name}"


def _list_csv(path: Path) -> SourceListing:
    frame = read_csv_table(path, dtype=str, keep_default_na=False)
    missing = [column for column in CSV_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}. A scoring index needs {list(CSV_COLUMNS)}, "
            f"found {list(frame.columns)}."
        )

    listing = SourceListing(kind=CSV, path=path)
    named = []
    for line, (patient_id, image_path) in enumerate(zip(frame["patient_id"], frame["image_path"]), start=2):
        patient_id, image_path = patient_id.strip(), image_path.strip()
        if not image_path:
            listing.errors.append(MemberError(f"line {line}", str(path), patient_id, "image_path is empty"))
            continue
        file_path = Path(image_path) if Path(image_path).is_absolute() else path.parent / image_path
        source = str(file_path)
        reason = _patient_id_problem(patient_id) or _csv_file_problem(file_path)
        if reason == "ignored":
            listing.ignored.append(image_path)
            continue
        if reason is not None:
            listing.errors.append(MemberError(image_path, source, patient_id, f"line {line}: {reason}"))
            continue
        candidate = _Candidate(image_path, source, file_path.stat().st_size)
        named.append((f"{patient_id}/{file_path.name}", patient_id, candidate, source))
    _add_entries(listing, named)
    return listing


def _patient_id_problem(patient_id: str) -> str | None:
    # The patient id becomes a folder of the output, so it must be one plain path component.
    if not patient_id:
        return "patient_id is empty"
    if patient_id in (".", "..") or patient_id.startswith(".") or any(c in patient_id for c in "/\\"):
        return f"patient_id '{patient_id}' cannot be a folder name (no '/', '\\' or leading '.')"
    if any(ord(character) < 32 for character in patient_id):
        return "patient_id contains a control character"
    return None


def _csv_file_problem(file_path: Path) -> str | None:
    """Return None for a readable slice file, "ignored" for a mask, or an error reason.

    Unlike a folder, a CSV names its files on purpose, so a file of another type is an error.
    """
    suffix = file_path.suffix.lower()
    if suffix in SLICE_SUFFIXES and file_path.stem.lower().endswith(GROUND_TRUTH_SUFFIX):
        return "ignored"
    if file_path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return "nested archive, not opened: extract it and list its slices"
    if suffix not in SLICE_SUFFIXES:
        return f"not a slice file, expected one of {SLICE_SUFFIXES}"
    try:
        file_stat = file_path.stat()
    except OSError:
        return "file not found"
    if not stat.S_ISREG(file_stat.st_mode):
        return "not a regular file"
    if file_stat.st_size > MAX_MEMBER_BYTES:
        return f"{file_stat.st_size} bytes, over the limit of {MAX_MEMBER_BYTES} bytes for one slice"
    return None


def _read_file(path: Path) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_MEMBER_BYTES + 1)
    except FileNotFoundError:
        return None, "file not found"
    except OSError as error:
        return None, f"cannot be read ({error.strerror or error})"
    return _checked_size(data)


def _read_zip_members(path: Path, entries: Iterable[SliceEntry]) -> Iterator[tuple[SliceEntry, bytes | None, str | None]]:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        for entry in entries:
            try:
                with archive.open(infos[int(entry.location)]) as member:
                    data = member.read(MAX_MEMBER_BYTES + 1)
            # zipfile raises these for a bad CRC, an encrypted member, an unknown compression
            # method or corrupt compressed data.
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError, OSError, ValueError) as error:
                yield entry, None, f"cannot read the zip member ({type(error).__name__}: {error})"
                continue
            yield (entry, *_checked_size(data))


def _read_tar_members(path: Path, entries: Iterable[SliceEntry]) -> Iterator[tuple[SliceEntry, bytes | None, str | None]]:
    pending = {int(entry.location): entry for entry in entries}
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for position, member in enumerate(archive):
                entry = pending.get(position)
                if entry is None:
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


def _checked_size(data: bytes) -> tuple[bytes | None, str | None]:
    if len(data) > MAX_MEMBER_BYTES:
        return None, f"over the limit of {MAX_MEMBER_BYTES} bytes for one slice"
    return data, None
