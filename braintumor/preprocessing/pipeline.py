"""Ray Data job: index -> decode -> normalise -> Parquet shards, one folder per split.

Output layout under `output`:

    index.csv                 the slices that were usable
    skipped.csv               files left out, with the reason
    split.json                patients of each split (reused when it already exists)
    parquet/<split>/*.parquet rows of (patient_id, slice_number, image_path, label, image, mask)
    parquet/<split>/_manifest.json

A split's folder appears only when all its shards are written (they go to a temporary folder that
is renamed at the end), and its manifest records the rows and the normalisation it was made with.
A rerun whose manifest matches skips that split, so no work is redone and no row is written twice.

`data` and `output` may also be `s3://` prefixes. S3 has no rename, so there a split's shards are
written in place and its manifest is written last: a split counts as done only when its manifest
exists and matches, and a rerun deletes any other split prefix before writing it again. The
index, the split and the skipped files are each written by a single PUT.
"""

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from braintumor import locations, s3
from braintumor.data.index import SkippedFile, load_index, write_index
from braintumor.data.io import SliceReadError, read_mask, read_slice
from braintumor.data.split import DEFAULT_FRACTIONS, SPLIT_NAMES, load_or_create_split
from braintumor.preprocessing.normalization import NORMALIZATION, normalize_slices

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
ROWS_PER_BLOCK = 64


@dataclass
class PreprocessResult:
    """Outcome of a preprocessing run: rows per split, splits written or reused, files skipped."""

    output: str | Path
    rows: dict[str, int]
    written: list[str]
    reused: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)


def parquet_dir(output: str | Path, split: str) -> str | Path:
    """Return the folder of one split's Parquet shards: a `Path`, or an `s3://` URI string for S3 output."""
    return locations.join(output, "parquet", split)


def preprocess(
    data: str | Path,
    output: str | Path,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> PreprocessResult:
    """Index `data`, split its patients and write normalised Parquet shards for each split.

    Args:
        data: a `kaggle_3m`-style folder or an index CSV, local or in S3.
        output: folder or `s3://` prefix for the index, the split and the Parquet shards.
        fractions: shares of patients for train, validation and test (used only for a new split).
        seed: seed of a new split.

    Returns:
        Rows per split, which splits were written and which reused, and the skipped files.

    Raises:
        s3.S3Error: a bucket of `data` or `output` is missing or cannot be reached, checked before
            any file is read.
    """
    from braintumor.runtime import init_ray

    # For S3 this checks the output bucket, so that a missing bucket or missing credentials stop
    # the job before indexing. load_index checks the buckets of `data` in the same way.
    output = locations.as_location(output)
    locations.make_folder(output)
    started = time.perf_counter()

    indexed = load_index(data)
    write_index(indexed.frame, locations.join(output, "index.csv"))
    split = load_or_create_split(indexed.frame, locations.join(output, "split.json"), fractions, seed)

    init_ray()
    result = PreprocessResult(output=output, rows={}, written=[], reused=[], skipped=list(indexed.skipped))
    for name in SPLIT_NAMES:
        rows = indexed.frame[indexed.frame["patient_id"].isin(split[name])].reset_index(drop=True)
        target = parquet_dir(output, name)
        manifest = _manifest_for(rows)
        stored = _matching_manifest(target, manifest)
        if stored is not None:
            # The stored count leaves out rows that could not be read when the split was written.
            result.rows[name] = stored["rows"]
            logger.info("split %s: %d slices already written in %s, reused", name, stored["rows"], target)
            result.reused.append(name)
            continue
        written, failed = _write_split(rows, target, manifest)
        result.rows[name] = written
        result.written.append(name)
        result.skipped += failed

    skipped_path = locations.join(output, "skipped.csv")
    _write_skipped(result.skipped, skipped_path)
    logger.info(
        "preprocessing finished in %.1f s: rows per split %s, %d file(s) skipped (listed in %s)",
        time.perf_counter() - started, result.rows, len(result.skipped), skipped_path,
    )
    return result


def decode_batch(batch: pd.DataFrame) -> dict[str, np.ndarray]:
    """Ray Data batch function: read, check and normalise the slices and masks of index rows.

    Rows whose files cannot be read are dropped with a warning; the driver finds them by comparing
    the written rows with the index.

    Returns:
        Columns patient_id, slice_number, image_path, label (int64, 1 if the mask has tumour),
        image (n, 256, 256, 3) float32 normalised, mask (n, 256, 256, 1) uint8 in {0, 1}.
    """
    from braintumor.data.index import slice_number

    kept, images, masks = [], [], []
    for row in batch.itertuples(index=False):
        try:
            image = read_slice(row.image_path)
            mask = read_mask(row.mask_path)
        except SliceReadError as error:
            logger.warning("skipped %s", error)
            continue
        kept.append(row)
        images.append(image)
        masks.append(mask)

    if not kept:
        return _empty_batch()
    return {
        "patient_id": np.array([row.patient_id for row in kept], dtype=object),
        "slice_number": np.array([slice_number(row.image_path) for row in kept], dtype=np.int64),
        "image_path": np.array([row.image_path for row in kept], dtype=object),
        "label": np.array([int(mask.any()) for mask in masks], dtype=np.int64),
        "image": normalize_slices(np.stack(images)),
        "mask": np.stack(masks)[..., None].astype(np.uint8),
    }


def _write_split(rows: pd.DataFrame, target: str | Path, manifest: dict) -> tuple[int, list[SkippedFile]]:
    """Write one split's shards and its manifest. Return the count of rows written and the files that failed."""
    import ray

    started = time.perf_counter()
    chunks = [rows.iloc[i : i + ROWS_PER_BLOCK] for i in range(0, len(rows), ROWS_PER_BLOCK)]
    dataset = ray.data.from_pandas(chunks).map_batches(decode_batch, batch_format="pandas", batch_size=None)
    if s3.is_s3(target):
        written_paths = _write_split_to_s3(dataset, str(target), manifest)
    else:
        written_paths = _write_split_locally(dataset, Path(target), manifest)

    failed = [
        SkippedFile(path, "could not be read during preprocessing (the log has the reason)")
        for path in rows["image_path"]
        if path not in written_paths
    ]
    logger.info(
        "split %s: wrote %d slices of %d patients to %s in %.1f s",
        locations.name(target), len(written_paths), rows["patient_id"].nunique(), target,
        time.perf_counter() - started,
    )
    return len(written_paths), failed


def _write_split_locally(dataset, target: Path, manifest: dict) -> set[str]:
    """Write the shards and the manifest into a .partial folder, then rename it to `target`."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    dataset.write_parquet(str(partial))

    written_paths = _written_image_paths(None, str(partial.resolve()))
    partial.mkdir(parents=True, exist_ok=True)  # Ray creates no folder when no row was written
    (partial / MANIFEST).write_text(_manifest_text(manifest, len(written_paths)))
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    return written_paths


def _write_split_to_s3(dataset, target: str, manifest: dict) -> set[str]:
    """Write the shards under the S3 prefix `target`, then the manifest as the last object."""
    # S3 has no rename. The manifest is deleted first and written last, so a write that stops
    # halfway leaves shards without a manifest, which the next run deletes and writes again.
    s3.delete(locations.join(target, MANIFEST))
    removed = s3.delete_folder(target)
    if removed:
        logger.info("split %s: deleted %d object(s) of an earlier write in %s", locations.name(target), removed, target)
    filesystem, path = locations.arrow_filesystem(target)
    dataset.write_parquet(path, filesystem=filesystem)

    written_paths = _written_image_paths(filesystem, path)
    locations.write_text(locations.join(target, MANIFEST), _manifest_text(manifest, len(written_paths)))
    return written_paths


def _written_image_paths(filesystem, path: str) -> set[str]:
    """Return the image paths of the rows in the Parquet shards under `path` (local if `filesystem` is None)."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    found = (filesystem or fs.LocalFileSystem()).get_file_info(fs.FileSelector(path, allow_not_found=True))
    if not any(info.path.endswith(".parquet") for info in found):
        return set()  # every row failed, and Ray Data writes no shard for an empty dataset
    table = pq.read_table(path, filesystem=filesystem, columns=["image_path"])
    return set(table.column("image_path").to_pylist())


def _manifest_text(manifest: dict, rows: int) -> str:
    return json.dumps(dict(manifest, rows=rows), indent=2) + "\n"


def _manifest_for(rows: pd.DataFrame) -> dict:
    digest = hashlib.sha256()
    for row in rows.itertuples(index=False):
        digest.update(f"{row.patient_id}\t{row.image_path}\t{row.mask_path}\n".encode())
    return {"normalization": NORMALIZATION, "index_sha256": digest.hexdigest(), "rows": len(rows)}


def _matching_manifest(target: str | Path, expected: dict) -> dict | None:
    """Return the manifest stored in `target` if it was made from the same index rows and normalisation."""
    path = locations.join(target, MANIFEST)
    if not locations.is_file(path):
        return None
    found = json.loads(locations.read_text(path))
    if all(found.get(key) == expected[key] for key in ("normalization", "index_sha256")):
        return found
    return None


def _write_skipped(skipped: list[SkippedFile], path: str | Path) -> None:
    frame = pd.DataFrame([(item.path, item.reason) for item in skipped], columns=["path", "reason"])
    locations.write_text(path, frame.to_csv(index=False))


def _empty_batch() -> dict[str, np.ndarray]:
    # Same columns and shapes as a full batch, so every Parquet shard has one schema.
    return {
        "patient_id": np.array([], dtype=object),
        "slice_number": np.array([], dtype=np.int64),
        "image_path": np.array([], dtype=object),
        "label": np.array([], dtype=np.int64),
        "image": np.zeros((0, 256, 256, 3), dtype=np.float32),
        "mask": np.zeros((0, 256, 256, 1), dtype=np.uint8),
    }
