"""Score every slice of an input with Ray Data, writing masks and tables that a rerun completes.

The input and the output may each be local or in S3 (`s3://bucket/prefix`), in any combination.

Pipeline (`braintumor.scoring.pipeline`): a Ray Data read stage reads the files of the slices still
to score -> `map_batches` on a pool of actors, each loading the models once, decodes the slices,
normalises them with the training normalisation (`slice-zscore-v1`, per slice, so no patient
volume is needed), predicts, and writes one mask PNG per slice and then one part file per batch
-> the driver builds the tables from all parts.

Output folder (or the objects under an S3 prefix):

    <member without suffix>_pred_mask.png   8-bit PNG, 0 background and 255 tumour, per slice
    labels.parquet, labels.csv              one row per scored slice (written last)
    errors.csv                              members not scored, with the reason
    patients.csv                            per patient: slices, tumour slices, total area
    summary.json                            counts, speed, models and normalisation of the run
    .parts/                                 per-batch results that a rerun resumes from

Every file is written all-or-nothing: locally to a temporary name that is renamed when complete,
in S3 by a single PUT. A rerun skips the slices whose mask and part row exist for the same model
versions, scores the rest, and rebuilds the tables.
A job killed at any point and run again therefore ends with the same outputs as a run that was
never stopped.
"""

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from braintumor import locations
from braintumor.models.io import INFO_FILE, MODEL_FILE, ModelInfo, parse_model_info
from braintumor.preprocessing.normalization import NORMALIZATION
from braintumor.scoring.sources import SLICE_SUFFIXES, list_source
from braintumor.scoring.storage import OutputStorage, open_storage
from braintumor.scoring.tables import (
    ERRORS_CSV,
    FINAL_TABLES,
    SCORED,
    assemble_tables,
    completed_members,
    read_latest_results,
    write_tables,
)

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
NORMALIZATION_SCOPE = (
    "per slice: each slice is standardised with its own statistics, so slices are scored "
    "independently and no patient volume is needed"
)
LOGGED_ERRORS = 5  # errors named in the end-of-run warning, while errors.csv lists them all


@dataclass
class ScoringSummary:
    """Counts, speed and settings of one scoring run. `failed` counts every row of the errors table."""

    input: str
    output: str
    kind: str
    slices: int  # slices listed (after --limit)
    scored: int  # scored by this run
    skipped: int  # already complete before this run
    failed: int
    ignored: int  # files that are not slices (ground-truth masks, other file types)
    patients: int
    seconds: float
    models: dict
    normalization: str = NORMALIZATION
    normalization_scope: str = NORMALIZATION_SCOPE

    @property
    def slices_per_second(self) -> float:
        """Slices scored by this run per second of the whole run."""
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_status(self) -> int:
        """Process exit status: 0 when every listed file or member was scored, 1 when some failed."""
        return 0 if self.failed == 0 else 1

    def line(self) -> str:
        """Return the one-line summary logged at the end of a run."""
        return (
            f"scoring finished: {self.scored} scored, {self.skipped} skipped (already complete), "
            f"{self.failed} failed, {self.ignored} ignored; {self.slices_per_second:.1f} slices/s "
            f"over {self.seconds:.1f} s; outputs in {self.output}"
        )

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "slices_per_second": round(self.slices_per_second, 3)}, indent=2) + "\n"


def read_model_info(folder: str | Path, role: str) -> ModelInfo:
    """Read the ModelInfo of a saved model, a local folder or an `s3://` prefix, without loading TensorFlow.

    Raises:
        FileNotFoundError: the folder lacks `model.keras` or `model_info.json`, with what to do.
        ModelLoadError: `model_info.json` is not valid model info.
        s3.S3Error: the bucket is missing or cannot be read.
    """
    missing = [name for name in (MODEL_FILE, INFO_FILE) if not locations.is_file(locations.join(folder, name))]
    if missing:
        raise FileNotFoundError(
            f"{role} model not found: {folder} has no {' or '.join(missing)}. Train one with "
            f"`python jobs/train.py --task {'segment' if role == 'segmenter' else 'classify'}` "
            f"or pass --{role} with a model folder."
        )
    info_file = locations.join(folder, INFO_FILE)
    return parse_model_info(locations.read_text(info_file), info_file)


def run_scoring(
    input_path: str | Path,
    output: str | Path,
    segmenter_dir: str | Path,
    classifier_dir: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    limit: int | None = None,
) -> ScoringSummary:
    """Score the slices of a folder tree, zip or tar archive, or index CSV, resuming earlier runs.

    Args:
        input_path: the input, a local path or an S3 URI (see `braintumor.scoring.sources`).
        output: output folder, or an S3 prefix such as s3://bucket/scored.
        segmenter_dir: saved segmenter.
        classifier_dir: saved classifier. Without one, a slice's tumour probability is the
            segmenter's highest pixel probability.
        batch_size: slices per model call and per part file.
        actors: model actors, each loading the models once.
        cpus_per_actor: CPUs Ray reserves for each actor. TensorFlow in an actor still uses as
            many threads as it finds cores.
        limit: score only the first `limit` slices in member order.

    Returns:
        The run's counts. Its `exit_status` is 1 when any file or member failed.

    Raises:
        FileNotFoundError: missing input or model (`s3.S3NotFoundError` for a missing bucket or key).
        ValueError: an input that cannot be listed, or settings out of range.
        s3.S3Error: S3 access denied, no credentials, or another failed request.
    """
    started = time.perf_counter()
    run_id = f"{time.time_ns():020d}"
    if batch_size < 1 or actors < 1 or cpus_per_actor <= 0:
        raise ValueError(
            f"batch_size and actors must be at least 1 and cpus_per_actor above 0, got "
            f"{batch_size}, {actors} and {cpus_per_actor}"
        )
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    segmenter_info = read_model_info(segmenter_dir, "segmenter")
    classifier_info = read_model_info(classifier_dir, "classifier") if classifier_dir is not None else None
    versions = {"segmenter": segmenter_info.version, "classifier": classifier_info.version if classifier_info else ""}

    storage = open_storage(output)
    removed = storage.remove_partial_writes()
    if removed:
        logger.info("removed %d partial file(s) left by an interrupted run in %s", removed, storage.uri())

    listing = list_source(input_path, exclude=storage.uri())
    if not listing.entries and not listing.errors:
        logger.warning(
            "%s: no slice files (%s) found, %d other file(s) ignored; check the input location",
            listing.path, ", ".join(SLICE_SUFFIXES), len(listing.ignored),
        )
    entries = listing.entries[:limit] if limit is not None else listing.entries
    results = read_latest_results(storage)
    done = completed_members(results, storage, entries, versions)
    pending = [entry for entry in entries if entry.member not in done]
    logger.info(
        "%s %s: %d slices (%d already complete), %d not scorable, %d ignored",
        listing.kind, listing.path, len(entries), len(done), len(listing.errors), len(listing.ignored),
    )

    counts = Counter()
    if pending:
        for name in FINAL_TABLES:
            storage.delete(name)
        from braintumor.scoring.pipeline import score_pending

        counts = score_pending(
            listing, pending, storage, segmenter_dir, classifier_dir, run_id, batch_size, actors, cpus_per_actor
        )
        results = read_latest_results(storage)

    labels, errors, patients = assemble_tables(entries, listing.errors, results)
    models = {
        "segmenter": {"path": locations.absolute(segmenter_dir), **asdict(segmenter_info)},
        "classifier": {"path": locations.absolute(classifier_dir), **asdict(classifier_info)} if classifier_info else None,
    }
    summary = ScoringSummary(
        input=str(listing.path),
        output=storage.uri(),
        kind=listing.kind,
        slices=len(entries),
        scored=counts[SCORED],
        skipped=len(done),
        failed=len(errors),
        ignored=len(listing.ignored),
        patients=int(patients["patient_id"].nunique()),
        seconds=time.perf_counter() - started,
        models=models,
    )
    write_tables(storage, labels, errors, patients, summary.to_json())
    _log_errors(errors, storage)
    logger.info("%s", summary.line())
    return summary


def _log_errors(errors, storage: OutputStorage) -> None:
    if errors.empty:
        return
    examples = "; ".join(f"{row.member}: {row.reason}" for row in errors.head(LOGGED_ERRORS).itertuples())
    more = f" and {len(errors) - LOGGED_ERRORS} more" if len(errors) > LOGGED_ERRORS else ""
    logger.warning("%d file(s) not scored: %s%s. All are listed in %s", len(errors), examples, more, storage.uri(ERRORS_CSV))
