"""The part files each scored batch writes, and the run's tables assembled from them.

Each batch writes one Parquet part under `.parts/` after its masks, so a part names only slices
whose masks are complete. The final tables are built from all parts and the current listing:

- `labels.parquet` and `labels.csv`: one row per scored slice, sorted by member name (columns in
  `LABEL_COLUMNS`). `source` contains the container (folder, archive or file path). Every other
  column depends only on the member name and the slice's bytes, so a folder, a zip and a tar
  archive of the same files give the same table apart from `source`.
- `errors.csv`: every file or member that was not scored, with the reason.
- `patients.csv`: per patient, slices scored, slices labelled tumour, total predicted tumour area
  and slices that failed.
"""

import io
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from braintumor.scoring.sources import MemberError, SliceEntry
from braintumor.scoring.storage import OutputStorage

PARTS_FOLDER = ".parts"
LABELS_PARQUET = "labels.parquet"
LABELS_CSV = "labels.csv"
ERRORS_CSV = "errors.csv"
PATIENTS_CSV = "patients.csv"
SUMMARY_JSON = "summary.json"
# In the order they are written. The labels Parquet comes last, so it exists only after a
# complete run.
FINAL_TABLES = (ERRORS_CSV, PATIENTS_CSV, SUMMARY_JSON, LABELS_CSV, LABELS_PARQUET)

SCORED, FAILED = "scored", "failed"

PART_SCHEMA = pa.schema(
    [
        ("member", pa.string()),
        ("status", pa.string()),  # SCORED or FAILED
        ("tumour_probability", pa.float32()),
        ("label", pa.int64()),
        ("tumour_area_pixels", pa.int64()),
        ("reason", pa.string()),
        ("segmenter_version", pa.string()),
        ("classifier_version", pa.string()),
        ("run_id", pa.string()),  # zero-padded start time in ns: later runs sort after earlier ones
    ]
)
LABEL_COLUMNS = [
    "source",
    "member",
    "patient_id",
    "slice_number",
    "tumour_probability",
    "label",
    "tumour_area_pixels",
    "mask_file",
    "segmenter_version",
    "classifier_version",
]
ERROR_COLUMNS = ["source", "member", "patient_id", "reason"]
PATIENT_COLUMNS = ["patient_id", "slices_scored", "tumour_slices", "tumour_area_pixels", "slices_failed"]


def write_part(storage: OutputStorage, rows: dict[str, list], run_id: str) -> str:
    """Write one batch's results as a part file and return its name.

    Args:
        rows: a list per `PART_SCHEMA` column except `run_id`.
    """
    table = pa.table({**rows, "run_id": [run_id] * len(rows["member"])}, schema=PART_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    name = f"{PARTS_FOLDER}/part-{run_id}-{uuid.uuid4().hex}.parquet"
    storage.write_bytes(name, buffer.getvalue())
    return name


def read_latest_results(storage: OutputStorage) -> pd.DataFrame:
    """Return the newest part row of each member, or an empty frame with the part columns.

    A member has more than one row after it was scored again: a batch retried by Ray, or a rerun
    with other models.
    """
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(name))) for name in storage.list(PARTS_FOLDER)]
    if not tables:
        return PART_SCHEMA.empty_table().to_pandas()
    frame = pa.concat_tables(tables).to_pandas()
    frame = frame.sort_values("run_id", kind="stable")
    return frame.drop_duplicates("member", keep="last").reset_index(drop=True)


def completed_members(
    results: pd.DataFrame, storage: OutputStorage, entries: list[SliceEntry], versions: dict[str, str]
) -> set[str]:
    """Return the members already scored by these model versions whose mask file exists."""
    scored = results[
        (results["status"] == SCORED)
        & (results["segmenter_version"] == versions["segmenter"])
        & (results["classifier_version"] == versions["classifier"])
    ]
    scored_members = set(scored["member"])
    if not scored_members:
        return set()
    # One listing of the output instead of a check per slice, which in S3 would be one request each.
    stored = set(storage.list(""))
    return {entry.member for entry in entries if entry.member in scored_members and entry.mask_name in stored}


def assemble_tables(
    entries: list[SliceEntry], listing_errors: list[MemberError], results: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Build the labels, errors and patients tables of the listed slices from their part rows.

    A listed slice without any part row (which a complete run never leaves) becomes an error, so no
    slice goes missing without a trace.

    Returns:
        (labels, errors, patients), sorted by member name or patient.
    """
    listed = pd.DataFrame(
        {
            "source": pd.Series([entry.source for entry in entries], dtype="str"),
            "member": pd.Series([entry.member for entry in entries], dtype="str"),
            "patient_id": pd.Series([entry.patient_id for entry in entries], dtype="str"),
            "slice_number": pd.Series([entry.slice_number for entry in entries], dtype="Int64"),
            "mask_file": pd.Series([entry.mask_name for entry in entries], dtype="str"),
        }
    )
    merged = listed.merge(results, on="member", how="left")

    labels = merged[merged["status"] == SCORED][LABEL_COLUMNS].copy()
    labels["tumour_probability"] = labels["tumour_probability"].astype(np.float32)
    labels["label"] = labels["label"].astype(np.int64)
    labels["tumour_area_pixels"] = labels["tumour_area_pixels"].astype(np.int64)
    labels = labels.sort_values("member", kind="stable").reset_index(drop=True)

    failed = merged[merged["status"] == FAILED][ERROR_COLUMNS]
    missing = merged[merged["status"].isna()][["source", "member", "patient_id"]].assign(
        reason="no result was written for this slice, so rerun the job to score it"
    )
    from_listing = pd.DataFrame([vars(error) for error in listing_errors], columns=ERROR_COLUMNS)
    errors = pd.concat([from_listing, failed, missing], ignore_index=True)[ERROR_COLUMNS]
    errors = errors.sort_values(["member", "reason"], kind="stable").reset_index(drop=True)

    return labels, errors, _patient_summary(labels, errors)


def _patient_summary(labels: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame:
    scored = labels.groupby("patient_id").agg(
        slices_scored=("member", "size"),
        tumour_slices=("label", "sum"),
        tumour_area_pixels=("tumour_area_pixels", "sum"),
    )
    failed = errors[errors["patient_id"] != ""].groupby("patient_id").size().rename("slices_failed")
    patients = scored.join(failed, how="outer").fillna(0).astype(np.int64)
    return patients.reset_index().sort_values("patient_id", kind="stable").reset_index(drop=True)[PATIENT_COLUMNS]


def write_tables(
    storage: OutputStorage, labels: pd.DataFrame, errors: pd.DataFrame, patients: pd.DataFrame, summary: str
) -> None:
    """Write the final tables and the summary JSON, the labels Parquet last."""
    contents = {
        ERRORS_CSV: errors.to_csv(index=False).encode(),
        PATIENTS_CSV: patients.to_csv(index=False).encode(),
        SUMMARY_JSON: summary.encode(),
        LABELS_CSV: labels.to_csv(index=False).encode(),
        LABELS_PARQUET: _parquet_bytes(labels),
    }
    for name in FINAL_TABLES:
        storage.write_bytes(name, contents[name])


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
