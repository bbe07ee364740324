"""The index of a dataset: one row per slice with its patient, image, mask and tumour flag.

The index CSV has the columns `patient_id, image_path, mask_path, mask`, where `mask` is 1 when the
slice's mask contains at least one tumour pixel. It is built from a `kaggle_3m`-style folder
(`<patient>/<patient>_<n>.tif` beside `<patient>_<n>_mask.tif`) or read from an existing CSV.
"""

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from braintumor.data.io import SliceReadError, read_mask, read_slice

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ["patient_id", "image_path", "mask_path", "mask"]
MASK_SUFFIX = "_mask"
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
        root: folder with one sub-folder per patient.
        workers: threads that read files (decoding releases the GIL).

    Returns:
        The index, sorted by patient and then by integer slice number, and the files left out
        (unreadable image or mask, missing mask, wrong size, a name that is not UTF-8 or lacks a
        slice number, a slice number already taken in that patient), each with its reason.

    Raises:
        FileNotFoundError: if `root` is not a folder or contains no slice at all.
    """
    # Absolute paths keep the index CSV valid wherever it is written and read.
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; expected one sub-folder of .tif slices per patient")

    candidates, skipped = _find_slices(root)
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
    """Read an index CSV and check its columns and values.

    Relative image and mask paths are taken relative to the CSV's folder. Rows are sorted by
    patient and integer slice number. Files are not opened here; readers report them later.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a file that is empty, not UTF-8 or not parseable as CSV. Also a missing
            column, an empty or non-0/1 `mask` value, an empty path, a duplicated image path, or a
            patient's slice number repeated, where the message names the column and the first bad rows.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
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
        frame[column] = [str(_resolve(csv_path.parent, path)) for path in frame[column]]
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

    Rows of a CSV whose slice or mask cannot be read are left out and reported, as for a folder.
    The `mask` column of a CSV is kept as written.
    """
    source = Path(source)
    if not source.is_file():
        return build_index(source, workers)

    frame = read_index(source)
    candidates = [
        (row.patient_id, 0, Path(row.image_path), Path(row.mask_path)) for row in frame.itertuples()
    ]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked = list(pool.map(_check_pair, candidates))
    skipped = [outcome for outcome in checked if isinstance(outcome, SkippedFile)]
    usable = [not isinstance(outcome, SkippedFile) for outcome in checked]
    for item in skipped:
        logger.warning("left out of the index: %s: %s", item.path, item.reason)
    return IndexResult(frame=frame[usable].reset_index(drop=True), skipped=skipped)


def write_index(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the index CSV atomically: to a temporary name first, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    frame[INDEX_COLUMNS].to_csv(partial, index=False)
    partial.replace(path)
    return path


def read_csv_table(path: str | Path, **read_csv_options) -> pd.DataFrame:
    """Read a UTF-8 CSV with pandas, turning its parse errors into errors that name the file.

    Raises:
        ValueError: the file is empty, is not UTF-8 text, or has a row with more fields than the header.
    """
    try:
        return pd.read_csv(path, encoding="utf-8", **read_csv_options)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the CSV file is empty; expected a header row and one row per slice") from None
    except UnicodeDecodeError as error:
        # Not the byte's offset: pandas decodes the file in chunks, so error.start counts from a chunk.
        raise ValueError(f"{path}: not UTF-8 text (found the byte {error.object[error.start]:#04x}). Save the CSV as UTF-8.") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: cannot parse the CSV ({str(error).strip()})") from None


def _find_slices(root: Path) -> tuple[list[tuple[str, int, Path, Path]], list[SkippedFile]]:
    candidates, skipped = [], []
    for patient_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        first_with_number: dict[int, str] = {}
        for image_path in sorted(patient_dir.glob("*.tif")):
            if image_path.stem.endswith(MASK_SUFFIX):
                continue
            # Paths go into the index CSV and Parquet as UTF-8 text, so an undecodable name cannot be kept.
            if not _is_utf8(str(image_path)):
                displayed_path = str(image_path).encode("utf-8", "backslashreplace").decode("utf-8")
                skipped.append(SkippedFile(displayed_path, "file or folder name is not valid UTF-8; rename it"))
                continue
            try:
                number = slice_number(image_path)
            except ValueError as error:
                skipped.append(SkippedFile(str(image_path), str(error).split(": ", 1)[1]))
                continue
            if number in first_with_number:
                reason = f"slice number {number} repeated (already taken by {first_with_number[number]})"
                skipped.append(SkippedFile(str(image_path), reason))
                continue
            mask_path = image_path.with_name(f"{image_path.stem}{MASK_SUFFIX}{image_path.suffix}")
            if not mask_path.is_file():
                skipped.append(SkippedFile(str(image_path), f"mask not found (expected {mask_path.name})"))
                continue
            first_with_number[number] = image_path.name
            candidates.append((patient_dir.name, number, image_path, mask_path))
    return candidates, skipped


def _is_utf8(text: str) -> bool:
    # Python keeps the undecodable bytes of a file name as surrogates, which UTF-8 cannot encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_pair(candidate: tuple[str, int, Path, Path]) -> int | SkippedFile:
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


def _resolve(base: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base / candidate


def _rows(index: pd.Index, shown: int = 5) -> str:
    # Row numbers as a user sees them in an editor: the header is line 1, so data starts at 2.
    lines = [str(i + 2) for i in index[:shown]]
    more = f" and {len(index) - shown} more" if len(index) > shown else ""
    return "lines " + ", ".join(lines) + more
