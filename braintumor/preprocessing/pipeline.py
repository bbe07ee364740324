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

    output: Path
    rows: dict[str, int]
    written: list[str]
    reused: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)


def parquet_dir(output: str | Path, split: str) -> Path:
    """Return the folder of one split's Parquet shards."""
    return Path(output) / "parquet" / split


def preprocess(
    data: str | Path,
    output: str | Path,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> PreprocessResult:
    """Index `data`, split its patients and write normalised Parquet shards for each split.

    Args:
        data: a `kaggle_3m`-style folder or an index CSV.
        output: folder for the index, the split and the Parquet shards.
        fractions: shares of patients for train, validation and test (used only for a new split).
        seed: seed of a new split.

    Returns:
        Rows per split, which splits were written and which reused, and the skipped files.
    """
    from braintumor.runtime import init_ray

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    indexed = load_index(data)
    write_index(indexed.frame, output / "index.csv")
    split = load_or_create_split(indexed.frame, output / "split.json", fractions, seed)

    init_ray()
    result = PreprocessResult(output=output, rows={}, written=[], reused=[], skipped=list(indexed.skipped))
    for name in SPLIT_NAMES:
        rows = indexed.frame[indexed.frame["patient_id"].isin(split[name])].reset_index(drop=True)
        target = parquet_dir(output, name)
        manifest = _manifest_for(rows)
        if _manifest_matches(target, manifest):
            logger.info("split %s: %d slices already written in %s, reused", name, len(rows), target)
            result.reused.append(name)
            result.rows[name] = manifest["rows"]
            continue
        written, failed = _write_split(rows, target, manifest)
        result.rows[name] = written
        result.written.append(name)
        result.skipped += failed

    _write_skipped(result.skipped, output / "skipped.csv")
    logger.info(
        "preprocessing finished in %.1f s: rows per split %s, %d file(s) skipped (listed in %s)",
        time.perf_counter() - started, result.rows, len(result.skipped), output / "skipped.csv",
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


def _write_split(rows: pd.DataFrame, target: Path, manifest: dict) -> tuple[int, list[SkippedFile]]:
    import pyarrow.parquet as pq
    import ray

    started = time.perf_counter()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)

    chunks = [rows.iloc[i : i + ROWS_PER_BLOCK] for i in range(0, len(rows), ROWS_PER_BLOCK)]
    dataset = ray.data.from_pandas(chunks).map_batches(decode_batch, batch_format="pandas", batch_size=None)
    dataset.write_parquet(str(partial))

    written_paths = set(pq.read_table(partial, columns=["image_path"]).column("image_path").to_pylist())
    failed = [
        SkippedFile(path, "could not be read during preprocessing (the log has the reason)")
        for path in rows["image_path"]
        if path not in written_paths
    ]
    manifest = dict(manifest, rows=len(written_paths))
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    logger.info(
        "split %s: wrote %d slices of %d patients to %s in %.1f s",
        target.name, len(written_paths), rows["patient_id"].nunique(), target, time.perf_counter() - started,
    )
    return len(written_paths), failed


def _manifest_for(rows: pd.DataFrame) -> dict:
    digest = hashlib.sha256()
    for row in rows.itertuples(index=False):
        digest.update(f"{row.patient_id}\t{row.image_path}\t{row.mask_path}\n".encode())
    return {"normalization": NORMALIZATION, "index_sha256": digest.hexdigest(), "rows": len(rows)}


def _manifest_matches(target: Path, expected: dict) -> bool:
    path = target / MANIFEST
    if not path.is_file():
        return False
    found = json.loads(path.read_text())
    return all(found.get(key) == expected[key] for key in ("normalization", "index_sha256"))


def _write_skipped(skipped: list[SkippedFile], path: Path) -> None:
    frame = pd.DataFrame([(item.path, item.reason) for item in skipped], columns=["path", "reason"])
    partial = path.with_name(path.name + ".partial")
    frame.to_csv(partial, index=False)
    partial.replace(path)


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
