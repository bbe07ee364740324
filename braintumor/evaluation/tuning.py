"""Choose a model's decision settings on the validation patients and store them with the model.

For a segmenter the search covers the threshold, flip averaging and the minimum region size,
scored by the mean per-patient Dice. Each setting is kept only where it raises validation Dice:
ties go to the plain setting (no flip, no region removal, the threshold nearest 0.5), and the gain
of each setting on its own is recorded beside the choice. For a classifier it covers the
probability threshold, scored by F1 over slices. Test patients are never read.
"""

import itertools
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from braintumor import locations
from braintumor.evaluation import metrics
from braintumor.evaluation.report import write_json
from braintumor.models.io import INFO_FILE, load_model
from braintumor.postprocessing import MaskSettings, masks_from_probabilities, pixel_probabilities

logger = logging.getLogger(__name__)

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
CLASSIFIER_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(2, 19))  # 0.1 to 0.9
MIN_COMPONENT_PIXELS = (0, 16, 32, 64, 128, 256)
TUNING_FILE = "tuning.json"


def mean_patient_dice(probability: np.ndarray, true_masks: np.ndarray, patient_ids, settings: MaskSettings) -> float:
    """Return the mean over patients of the volume Dice of the masks `settings` makes."""
    pred_masks = masks_from_probabilities(probability, settings)
    return float(metrics.per_patient_segmentation(pred_masks, true_masks, patient_ids)["dice"].mean())


def search(plain: np.ndarray, flipped: np.ndarray, true_masks: np.ndarray, patient_ids) -> list[dict]:
    """Score every combination of the grid.

    Args:
        plain: (N, H, W) pixel probabilities of the slices.
        flipped: (N, H, W) the same, averaged with the prediction of each mirrored slice.
        true_masks: (N, H, W) bool reference masks.
        patient_ids: (N,) patient of each slice.

    Returns:
        One dict per combination: the settings and "dice", best first.
    """
    results = []
    for flip, threshold, min_pixels in itertools.product((False, True), THRESHOLDS, MIN_COMPONENT_PIXELS):
        settings = MaskSettings(threshold=threshold, flip_averaging=flip, min_component_pixels=min_pixels)
        dice = mean_patient_dice(flipped if flip else plain, true_masks, patient_ids, settings)
        results.append({**asdict(settings), "dice": dice})
    results.sort(key=_preference)
    return results


def _preference(result: dict):
    # Higher Dice first; among equal Dice (to 1e-4) the simpler setting.
    return (-round(result["dice"], 4), result["flip_averaging"], result["min_component_pixels"], abs(result["threshold"] - 0.5))


def single_change_gains(results: list[dict]) -> dict:
    """Return the validation Dice gain of each setting changed alone from the plain 0.5 threshold."""
    by_key = {(r["flip_averaging"], r["threshold"], r["min_component_pixels"]): r["dice"] for r in results}
    best = results[0]
    baseline = by_key[(False, 0.5, 0)]
    return {
        "baseline_dice": baseline,
        "flip_averaging": by_key[(True, 0.5, 0)] - baseline,
        f"threshold_{best['threshold']}": by_key[(False, best["threshold"], 0)] - baseline,
        f"min_component_pixels_{best['min_component_pixels']}": by_key[(False, 0.5, best["min_component_pixels"])] - baseline,
        "chosen_combination": best["dice"] - baseline,
    }


def search_classifier_threshold(labels, probability) -> list[dict]:
    """Score each threshold of CLASSIFIER_THRESHOLDS by F1; best first, ties to the threshold nearest 0.5."""
    results = [
        {"threshold": threshold, **{key: metrics.classification_summary(labels, probability, threshold)[key] for key in ("f1", "precision", "recall")}}
        for threshold in CLASSIFIER_THRESHOLDS
    ]
    results.sort(key=lambda result: (-round(result["f1"], 4), abs(result["threshold"] - 0.5)))
    return results


def tune(model_dir: str | Path, data: str | Path, write: bool = True) -> dict:
    """Search the decision settings on the validation split and, with `write`, store the best in model_info.json.

    Writes `tuning.json` (the whole search and, for a segmenter, the gains) into the model folder.
    The model folder and `data` may be local or `s3://` prefixes; each file written is replaced whole.
    """
    from braintumor.evaluation.report import predict_split

    model_dir = locations.as_location(model_dir)
    model, info = load_model(model_dir)
    if info.task == "classify":
        return _tune_classifier(model, info, model_dir, data, write)
    rows, plain, true_masks = predict_split(model, "segment", data, "validation", flip_averaging=False)
    _, flipped, _ = predict_split(model, "segment", data, "validation", flip_averaging=True)
    patient_ids = rows["patient_id"].to_numpy()

    results = search(plain, flipped, true_masks, patient_ids)
    best = results[0]
    chosen = MaskSettings(threshold=best["threshold"], flip_averaging=best["flip_averaging"], min_component_pixels=best["min_component_pixels"])
    summary = {
        "split": "validation",
        "n_patients": int(rows["patient_id"].nunique()),
        "patients": sorted(rows["patient_id"].unique().tolist()),
        "model_version": info.version,
        "chosen": asdict(chosen),
        "gains": single_change_gains(results),
        "grid": results,
    }
    write_json(summary, locations.join(model_dir, TUNING_FILE))
    if write:
        updated = replace(info, threshold=chosen.threshold, postprocessing=chosen.postprocessing())
        write_json(asdict(updated), locations.join(model_dir, INFO_FILE))
    logger.info(
        "validation Dice %.4f with %s (plain 0.5 threshold: %.4f); %s",
        best["dice"], asdict(chosen), summary["gains"]["baseline_dice"],
        f"stored in {locations.join(model_dir, INFO_FILE)}" if write else "not stored",
    )
    return summary


def _tune_classifier(model, info, model_dir: str | Path, data, write: bool) -> dict:
    from braintumor.evaluation.report import predict_split

    rows, probability, _ = predict_split(model, "classify", data, "validation")
    results = search_classifier_threshold(rows["label"].to_numpy(), probability)
    best = results[0]
    plain = next(result for result in results if result["threshold"] == 0.5)
    summary = {
        "split": "validation",
        "n_patients": int(rows["patient_id"].nunique()),
        "patients": sorted(rows["patient_id"].unique().tolist()),
        "model_version": info.version,
        "chosen": {"threshold": best["threshold"]},
        "gains": {"baseline_f1": plain["f1"], f"threshold_{best['threshold']}": best["f1"] - plain["f1"]},
        "grid": results,
    }
    write_json(summary, locations.join(model_dir, TUNING_FILE))
    if write:
        write_json(asdict(replace(info, threshold=best["threshold"])), locations.join(model_dir, INFO_FILE))
    logger.info(
        "validation F1 %.4f at threshold %.2f (0.5: %.4f); %s",
        best["f1"], best["threshold"], plain["f1"],
        f"stored in {locations.join(model_dir, INFO_FILE)}" if write else "not stored",
    )
    return summary
