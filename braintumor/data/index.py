"""The index of a dataset: one row per slice with its patient, image, mask and tumour flag.

The index CSV has the columns `patient_id, image_path, mask_path, mask`, where `mask` is 1 when the
slice's mask contains at least one tumour pixel. It is built from a `kaggle_3m`-style folder
(`<patient>/<patient>_<n>.tif` beside `<patient>_<n>_mask.tif`) or read from an existing CSV.
The folder, the CSV and the files it lists may also be in S3, given as `s3://bucket/key` URIs.
"""

import io
import logging
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from braintumor import locations, s3
from braintumor.data.io import SliceReadError, read_mask, read_slice

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ["patient_id", "image_path", "mask_path", "mask"]
MASK_SUFFIX = "_mask"
SLICE_SUFFIX = ".tif"
_SLICE_NUMBER = re.compile(r"_(\d+)$")


@dataclass(frozen=True)
class SkippedFile:
    """A slice left out of the index, and why."""

    path: str
    reason: str


@dataclass
class IndexResult:
    """The index of the usable slices and the files that were left out."""

    frame: pd.DataFrame
    skipped: list[SkippedFile]


def slice_number(path: str | Path) -> int:
    """Return the slice number at the end of a file name: `TCGA_CS_4942_19970222_10.tif` -> 10.

    Raises:
        ValueError: if the name does not end in `_<integer>` before its suffix.
    """
    stem = Path(path).stem
    if stem.endswith(MASK_SUFFIX):
        stem = stem[: -len(MASK_SUFFIX)]
    match = _SLICE_NUMBER.search(stem)
    if match is None:
        raise ValueError(f"{path}: file name does not end in _<slice number>, e.g. 'patient_12.tif'")
    return int(match.group(1))


def build_index(root: str | Path, workers: int = 8) -> IndexResult:
    """Index a `kaggle_3m`-style folder, reading every slice and mask once to check it.

    Args:
        root: folder, or `s3://` prefix, with one sub-folder per patient.
        workers: threads that read files (decoding releases the GIL).

    Returns:
        The index, sorted by patient and then by integer slice number, and the files left out
        (unreadable image or mask, missing mask, wrong size, a name that is not UTF-8 or lacks a
        slice number, a slice number already taken in that patient), each with its reason.

    Raises:
        FileNotFoundError: if `root` is not a folder (an S3 prefix without objects) or contains no
            slice at all.
        s3.S3Error: the bucket of an S3 `root` is missing or cannot be read.
    """
    # Absolute paths keep the index CSV valid wherever it is written and read.
    root = str(root).rstrip("/") if s3.is_s3(root) else Path(root).resolve()
    candidates, skipped = _find_slices(_patient_folders(root))
    if not candidates and not skipped:
        raise FileNotFoundError(f"{root}: no '<patient>/<patient>_<n>.tif' slices found")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked = list(pool.map(_check_pair, candidates))

    rows = []
    for (patient_id, number, image_path, mask_path), outcome in zip(candidates, checked):
        if isinstance(outcome, SkippedFile):
            skipped.append(outcome)
            continue
        rows.append((patient_id, number, str(image_path), str(mask_path), outcome))

    frame = pd.DataFrame(rows, columns=["patient_id", "slice_number", "image_path", "mask_path", "mask"])
    frame = frame.sort_values(["patient_id", "slice_number"], kind="stable").reset_index(drop=True)
    for item in skipped:
        logger.warning("left out of the index: %s: %s", item.path, item.reason)
    logger.info(
        "indexed %d slices of %d patients under %s (%d with tumour, %d files left out)",
        len(frame), frame["patient_id"].nunique(), root, int(frame["mask"].sum()), len(skipped),
    )
    return IndexResult(frame=frame[INDEX_COLUMNS], skipped=skipped)


def read_index(csv_path: str | Path) -> pd.DataFrame:
    """Read an index CSV, a local file or an S3 object, and check its columns and values.

    Relative image and mask paths are taken relative to the CSV's folder (its key prefix in S3).
    `s3://` URIs and absolute paths are kept as written. Rows are sorted by patient and integer
    slice number. Files are not opened here; readers report them later.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a file that is empty, not UTF-8 or not parseable as CSV. Also a missing
            column, an empty or non-0/1 `mask` value, an empty path, a duplicated image path, a
            relative path that leaves the bucket, or a patient's slice number repeated, where the
            message names the column and the first bad rows.
        s3.S3Error: the CSV's bucket is missing or cannot be read.
    """
    csv_path = locations.as_location(csv_path)
    if not locations.is_file(csv_path):
        raise FileNotFoundError(f"{csv_path}: index CSV not found")
    frame = read_csv_table(csv_path, dtype={"patient_id": str, "image_path": str, "mask_path": str})

    missing = [column for column in INDEX_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{csv_path}: missing column(s) {missing}; expected {INDEX_COLUMNS}, found {list(frame.columns)}"
        )
    for column in ("patient_id", "image_path", "mask_path"):
        empty = frame.index[frame[column].isna() | (frame[column].astype(str).str.strip() == "")]
        if len(empty):
            raise ValueError(f"{csv_path}: column '{column}' is empty in row(s) {_rows(empty)}")
    flags = pd.to_numeric(frame["mask"], errors="coerce")
    bad = frame.index[~flags.isin([0, 1])]
    if len(bad):
        raise ValueError(f"{csv_path}: column 'mask' must be 0 or 1; bad value in row(s) {_rows(bad)}")
    duplicated = frame.index[frame["image_path"].duplicated()]
    if len(duplicated):
        raise ValueError(f"{csv_path}: image_path repeated in row(s) {_rows(duplicated)}")

    frame = frame[INDEX_COLUMNS].copy()
    frame["mask"] = flags.astype(int)
    for column in ("image_path", "mask_path"):
        frame[column] = [_resolve(csv_path, path) for path in frame[column]]
    frame["slice_number"] = [slice_number(path) for path in frame["image_path"]]
    # Two files with one patient and slice number would count that slice twice in the patient's volume.
    repeated = frame.index[frame.duplicated(["patient_id", "slice_number"])]
    if len(repeated):
        raise ValueError(
            f"{csv_path}: patient_id and slice number repeated in {_rows(repeated)}; "
            "each slice of a patient must appear once"
        )
    frame = frame.sort_values(["patient_id", "slice_number"], kind="stable").reset_index(drop=True)
    return frame[INDEX_COLUMNS]


def load_index(source: str | Path, workers: int = 8) -> IndexResult:
    """Index a dataset folder, or read an index CSV and check that its files can be read.

    `source` and the files a CSV lists may be local or in S3. An S3 `source` is read as an index
    CSV when its key ends in `.csv`, and indexed as a prefix otherwise. Rows of a CSV whose slice
    or mask cannot be read (a missing S3 object among them) are left out and reported, as for a
    folder. The `mask` column of a CSV is kept as written.

    Raises:
        s3.S3Error: a bucket of the source or of a listed file is missing or cannot be read. It is
            checked before any file is read, so the error comes once instead of once per slice.
    """
    if not _is_index_csv(source):
        return build_index(source, workers)

    frame = read_index(source)
    paths = pd.concat([frame["image_path"], frame["mask_path"]])
    buckets = {s3.S3Uri.parse(path).bucket for path in paths if s3.is_s3(path)}
    for bucket in sorted(buckets):
        s3.check_bucket(f"{s3.SCHEME}{bucket}")
    candidates = [(row.patient_id, 0, row.image_path, row.mask_path) for row in frame.itertuples()]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked = list(pool.map(_check_pair, candidates))
    skipped = [outcome for outcome in checked if isinstance(outcome, SkippedFile)]
    usable = [not isinstance(outcome, SkippedFile) for outcome in checked]
    for item in skipped:
        logger.warning("left out of the index: %s: %s", item.path, item.reason)
    return IndexResult(frame=frame[usable].reset_index(drop=True), skipped=skipped)


def write_index(frame: pd.DataFrame, path: str | Path) -> str | Path:
    """Write the index CSV atomically: to a temporary name first, then renamed into place.

    An `s3://` path is written by a single PUT, which S3 also makes all-or-nothing.
    """
    if s3.is_s3(path):
        locations.write_text(path, frame[INDEX_COLUMNS].to_csv(index=False))
        return str(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    frame[INDEX_COLUMNS].to_csv(partial, index=False)
    partial.replace(path)
    return path


def read_csv_table(path: str | Path, **read_csv_options) -> pd.DataFrame:
    """Read a UTF-8 CSV (a local file or an S3 object) with pandas. Parse errors name the file.

    Raises:
        ValueError: the file is empty, is not UTF-8 text, or has a row with more fields than the header.
        s3.S3Error: an S3 object that cannot be read.
    """
    source = io.BytesIO(s3.read_bytes(str(path))) if s3.is_s3(path) else path
    try:
        return pd.read_csv(source, encoding="utf-8", **read_csv_options)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the CSV file is empty; expected a header row and one row per slice") from None
    except UnicodeDecodeError as error:
        # Not the byte's offset: pandas decodes the file in chunks, so error.start counts from a chunk.
        raise ValueError(f"{path}: not UTF-8 text (found the byte {error.object[error.start]:#04x}). Save the CSV as UTF-8.") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: cannot parse the CSV ({str(error).strip()})") from None


def _patient_folders(root: str | Path) -> list[tuple[str, str | Path, list[str]]]:
    """List `(patient_id, folder, sorted names of the files in it)` for each patient folder of `root`.

    `root` is an absolute local path or an S3 URI without a trailing '/'.

    Raises:
        FileNotFoundError: `root` is not a folder, or for S3 no object has its prefix.
        s3.S3Error: the bucket of an S3 `root` is missing or cannot be listed.
    """
    if not s3.is_s3(root):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a folder; expected one sub-folder of .tif slices per patient")
        return [
            (folder.name, folder, sorted(path.name for path in folder.iterdir() if path.is_file()))
            for folder in sorted(path for path in root.iterdir() if path.is_dir())
        ]

    s3.check_bucket(root)
    objects = s3.list_objects(root)
    if not objects:
        raise FileNotFoundError(f"{root}: no object has this prefix; expected one sub-folder of .tif slices per patient")
    folder_key = s3.S3Uri.parse(root).folder_key
    files: dict[str, list[str]] = {}
    for uri in objects:
        # Only `<patient>/<file>` counts, as for a local folder: deeper keys and folder markers do not.
        parts = s3.S3Uri.parse(uri).key[len(folder_key):].split("/")
        if len(parts) == 2 and parts[0] and parts[1]:
            files.setdefault(parts[0], []).append(parts[1])
    return [(patient, locations.join(root, patient), sorted(names)) for patient, names in sorted(files.items())]


def _find_slices(
    folders: list[tuple[str, str | Path, list[str]]],
) -> tuple[list[tuple[str, int, str | Path, str | Path]], list[SkippedFile]]:
    """Pair each slice with its mask. Slices that cannot be paired are returned as skipped, each with its reason."""
    candidates, skipped = [], []
    for patient_id, folder, names in folders:
        present = set(names)
        first_with_number: dict[int, str] = {}
        for name in names:
            if not name.endswith(SLICE_SUFFIX):
                continue
            stem = name[: -len(SLICE_SUFFIX)]
            if stem.endswith(MASK_SUFFIX):
                continue
            image_path = locations.join(folder, name)
            # Paths go into the index CSV and Parquet as UTF-8 text, so an undecodable name cannot be kept.
            if not _is_utf8(str(image_path)):
                displayed_path = str(image_path).encode("utf-8", "backslashreplace").decode("utf-8")
                skipped.append(SkippedFile(displayed_path, "file or folder name is not valid UTF-8; rename it"))
                continue
            try:
                number = slice_number(name)
            except ValueError as error:
                skipped.append(SkippedFile(str(image_path), str(error).split(": ", 1)[1]))
                continue
            if number in first_with_number:
                reason = f"slice number {number} repeated (already taken by {first_with_number[number]})"
                skipped.append(SkippedFile(str(image_path), reason))
                continue
            mask_name = f"{stem}{MASK_SUFFIX}{SLICE_SUFFIX}"
            if mask_name not in present:
                skipped.append(SkippedFile(str(image_path), f"mask not found (expected {mask_name})"))
                continue
            first_with_number[number] = name
            candidates.append((patient_id, number, image_path, locations.join(folder, mask_name)))
    return candidates, skipped


def _is_utf8(text: str) -> bool:
    # Python keeps the undecodable bytes of a file name as surrogates, which UTF-8 cannot encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_pair(candidate: tuple[str, int, str | Path, str | Path]) -> int | SkippedFile:
    """Return the tumour flag of a readable slice/mask pair, or why the pair is left out."""
    _, _, image_path, mask_path = candidate
    try:
        image = read_slice(image_path)
        mask = read_mask(mask_path)
    except SliceReadError as error:
        return SkippedFile(error.path, error.reason)
    if mask.shape != image.shape[:2]:
        return SkippedFile(str(mask_path), f"mask shape {mask.shape} differs from slice shape {image.shape[:2]}")
    return int(mask.any())


def _is_index_csv(source: str | Path) -> bool:
    # In S3 the key's suffix decides. A HEAD request on a prefix needs s3:GetObject, so a user who
    # may only list and read would get an access-denied error that names no object.
    if s3.is_s3(source):
        return s3.S3Uri.parse(str(source)).key.lower().endswith(".csv")
    return Path(source).is_file()


def _resolve(csv_path: str | Path, path: str) -> str:
    """Return a path of an index CSV row as a location: relative ones below the CSV's folder or prefix."""
    if s3.is_s3(path):
        try:
            s3.S3Uri.parse(path)
        except ValueError as error:
            raise ValueError(f"{csv_path}: {error}") from None
        return path
    if Path(path).is_absolute():
        return str(Path(path))
    if not s3.is_s3(csv_path):
        return str(Path(csv_path).parent / path)

    folder = s3.S3Uri.parse(locations.parent(csv_path))
    # S3 keys are plain strings, so '.' and '..' are resolved here as a file system would.
    key = posixpath.normpath(posixpath.join(folder.folder_key, path))
    if key == ".." or key.startswith("../"):
        raise ValueError(f"{csv_path}: relative path '{path}' points outside bucket '{folder.bucket}'")
    return str(s3.S3Uri(folder.bucket, key))


def _rows(index: pd.Index, shown: int = 5) -> str:
    # Row numbers as a user sees them in an editor: the header is line 1, so data starts at 2.
    lines = [str(i + 2) for i in index[:shown]]
    more = f" and {len(index) - shown} more" if len(index) > shown else ""
    return "lines " + ", ".join(lines) + more
