"""Evaluate a saved model on one split of the preprocessed data and write the report.

The model, the preprocessed data and the report may each be local or under an `s3://` prefix.
Writes into `output`:

    metrics.json        the metrics, the model's facts and the split's patients
    predictions.csv     one row per slice: patient, slice, label, probability (and areas for a segmenter)
    per_patient.csv     per patient volume: Dice, IoU, true and predicted tumour area (segmenter)
    *.png               curves, confusion matrix, ROC/PR, overlays, per-patient Dice
"""

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from braintumor import locations, s3
from braintumor.data.io import SliceReadError, read_slice
from braintumor.evaluation import metrics, plots
from braintumor.models.io import ARCHITECTURE_FILE, architecture_summary, load_model
from braintumor.postprocessing import MaskSettings, mask_settings, masks_from_probabilities, pixel_probabilities
from braintumor.preprocessing.pipeline import MANIFEST, parquet_dir

logger = logging.getLogger(__name__)

PREDICT_BATCH = 32
OVERLAY_TILES = 12


def evaluate(
    model_dir: str | Path,
    data: str | Path,
    output: str | Path,
    split: str = "test",
    history: dict[str, list[float]] | None = None,
    settings: MaskSettings | None = None,
) -> dict:
    """Predict every slice of `split` with the model in `model_dir` and write metrics and plots.

    Args:
        model_dir: a folder or S3 prefix written by `braintumor.models.io.save_model`.
        data: the preprocessing output folder or S3 prefix (contains parquet/<split>/ and split.json).
        output: folder or S3 prefix for the report. For S3 the files are written to a temporary
            folder and uploaded, one object each, when the report is complete.
        split: "test" for the honest figures; "validation" to tune post-processing.
        history: per-epoch training metrics, plotted as training curves if given.
        settings: how a segmenter's probabilities become masks; by default the settings stored
            with the model (see `braintumor.postprocessing`).

    Returns:
        The metrics written to metrics.json.

    Raises:
        FileNotFoundError: the split's Parquet folder does not exist.
        s3.S3Error: an S3 location cannot be read or written, naming the bucket and key.
    """
    with locations.staging_folder(output) as folder:
        return _write_report(model_dir, data, folder, split, history, settings)


def _write_report(model_dir, data, output: Path, split: str, history, settings: MaskSettings | None) -> dict:
    started = time.perf_counter()
    model, info = load_model(model_dir)
    if info.task == "segment":
        settings = settings or mask_settings(info)
        threshold = settings.threshold
    else:
        threshold = info.threshold
    flip_averaging = settings.flip_averaging if info.task == "segment" else False
    rows, probabilities, true_masks = predict_split(model, info.task, data, split, flip_averaging)

    report = {
        "model": {"task": info.task, "architecture": info.architecture, "version": info.version,
                  "normalization": info.normalization, "threshold": threshold},
        "split": split,
        "n_patients": int(rows["patient_id"].nunique()),
        "patients": sorted(rows["patient_id"].unique().tolist()),
        "n_slices": len(rows),
    }
    if info.task == "segment":
        report["model"]["postprocessing"] = settings.postprocessing()
        report["segmentation"] = _segmentation_report(rows, probabilities, true_masks, settings, output)
    else:
        rows["probability"] = probabilities
        report["classification"] = metrics.classification_summary(rows["label"], rows["probability"], threshold)
        plots.plot_confusion_matrix(report["classification"]["confusion_matrix"], output / "confusion_matrix.png")
        if rows["label"].nunique() == 2:
            plots.plot_roc_pr(rows["label"], rows["probability"], output / "roc_pr.png")
    if history:
        plots.plot_training_curves(history, output / "training_curves.png", title=f"{info.architecture} training")

    rows.drop(columns=["image_path"]).to_csv(output / "predictions.csv", index=False)
    (output / ARCHITECTURE_FILE).write_text(architecture_summary(model, info))
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json(report, output / "metrics.json")
    logger.info("evaluation on %d %s slices of %d patients: %s", len(rows), split, report["n_patients"], _headline(report))
    return report


def predict_split(model, task: str, data, split: str, flip_averaging: bool = False):
    """Predict every slice of a preprocessed split, sorted by patient and slice number.

    Returns:
        A tuple of three. The rows have patient_id, slice_number, image_path and label. The
        probabilities are (N, H, W) per pixel for a segmenter and (N,) per slice for a classifier.
        The reference masks are (N, H, W) bool.
    """
    import ray

    from braintumor.runtime import init_ray

    filesystem, path = locations.arrow_filesystem(preprocessed_split(data, split))
    init_ray()
    columns = ["patient_id", "slice_number", "image_path", "label", "image", "mask"]
    dataset = ray.data.read_parquet(path, filesystem=filesystem).select_columns(columns)

    frames, probabilities, masks = [], [], []
    for batch in dataset.iter_batches(batch_size=PREDICT_BATCH, batch_format="numpy"):
        if task == "segment":
            predicted = pixel_probabilities(model, batch["image"], flip_averaging)
        else:
            predicted = np.asarray(model.predict_on_batch(batch["image"]), dtype=np.float32).reshape(-1)
        probabilities.append(predicted)
        masks.append(batch["mask"][..., 0].astype(bool))
        frames.append(pd.DataFrame({key: batch[key] for key in ("patient_id", "slice_number", "image_path", "label")}))

    rows = pd.concat(frames, ignore_index=True)
    probabilities = np.concatenate(probabilities)
    masks = np.concatenate(masks)
    # Parquet shards come back in no fixed order; sort so reports list patients and slices in order.
    order = np.lexsort((rows["slice_number"].to_numpy(), rows["patient_id"].to_numpy()))
    rows = rows.iloc[order].reset_index(drop=True)
    return rows, probabilities[order], masks[order]


def preprocessed_split(data, split: str) -> str | Path:
    """Return the Parquet folder of `split` in the preprocessing output `data`, local or S3.

    A local split folder appears only when all its shards are written. In S3 there are no folders
    to rename, so a split counts as written only once its manifest object exists.

    Raises:
        FileNotFoundError: the split has not been written (s3.S3NotFoundError when the bucket is missing).
    """
    folder = parquet_dir(data, split)
    written = locations.is_file(locations.join(folder, MANIFEST)) if s3.is_s3(folder) else Path(folder).is_dir()
    if not written:
        raise FileNotFoundError(
            f"{folder}: preprocessed {split} split not found; run jobs/preprocess.py --output {data} first"
        )
    return folder


def _segmentation_report(rows, probabilities, true_masks, settings: MaskSettings, output: Path) -> dict:
    threshold = settings.threshold
    pred_masks = masks_from_probabilities(probabilities, settings)
    patient_ids = rows["patient_id"].to_numpy()
    summary = metrics.segmentation_summary(pred_masks, true_masks, patient_ids)
    table = metrics.per_patient_segmentation(pred_masks, true_masks, patient_ids)
    low, high = metrics.bootstrap_interval(table["dice"].to_numpy())
    summary["dice_mean_95ci"] = [low, high]
    table.to_csv(output / "per_patient.csv", index=False)

    # Tumour detection from the segmenter: the slice's highest pixel probability as its score.
    rows["true_area"] = true_masks.sum(axis=(1, 2))
    rows["pred_area"] = pred_masks.sum(axis=(1, 2))
    rows["probability"] = probabilities.max(axis=(1, 2))
    summary["detection_from_mask"] = metrics.classification_summary(rows["label"], rows["probability"], threshold)

    plots.plot_per_patient_dice(table, output / "per_patient_dice.png")
    chosen = _overlay_slices(rows, true_masks, pred_masks)
    try:
        images = np.stack([read_slice(rows.at[i, "image_path"]) for i in chosen])
    except SliceReadError as error:
        # The Parquet rows keep the path each slice had when it was preprocessed, which another
        # machine may not reach. The metrics do not need the raw slices, so only the overlays go.
        logger.warning("overlays.png not drawn: cannot read a raw slice (%s)", error)
        return summary
    titles = [
        f"{rows.at[i, 'patient_id'][:12]} #{rows.at[i, 'slice_number']} "
        f"Dice {metrics.dice_score(pred_masks[i], true_masks[i]):.2f}"
        for i in chosen
    ]
    plots.plot_overlay_grid(images, true_masks[chosen], pred_masks[chosen], output / "overlays.png", titles=titles)
    return summary


def _overlay_slices(rows: pd.DataFrame, true_masks, pred_masks) -> list[int]:
    """Pick slices worth looking at: each patient's largest tumour, then the largest false positives."""
    largest = rows[rows["true_area"] > 0].sort_values("true_area", ascending=False).drop_duplicates("patient_id")
    chosen = largest.index[: OVERLAY_TILES - 4].tolist()
    false_positive = rows[(rows["true_area"] == 0) & (rows["pred_area"] > 0)].sort_values("pred_area", ascending=False)
    chosen += false_positive.index[: OVERLAY_TILES - len(chosen)].tolist()
    return chosen or rows.index[:OVERLAY_TILES].tolist()


def _headline(report: dict) -> str:
    if "segmentation" in report:
        s = report["segmentation"]
        return (
            f"Dice per patient mean {s['dice_mean']:.3f} (95% CI {s['dice_mean_95ci'][0]:.3f}-"
            f"{s['dice_mean_95ci'][1]:.3f}), median {s['dice_median']:.3f}"
        )
    c = report["classification"]
    auc = "n/a" if c["roc_auc"] is None else f"{c['roc_auc']:.3f}"
    return f"ROC AUC {auc}, F1 {c['f1']:.3f}, accuracy {c['accuracy']:.3f}"


def write_json(payload: dict, path: str | Path) -> None:
    """Write `payload` as indented JSON to a local file or an S3 object, replacing it whole."""
    locations.write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
