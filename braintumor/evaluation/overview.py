"""Summarise a dataset index with counts, histograms and example slices before training."""

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

# Importing plots also selects the non-interactive Agg backend, before any figure is made here.
from braintumor.evaluation.plots import CHANNEL_NAMES, TRUE_MASK_COLOR, draw_mask_outline, save_figure

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ("patient_id", "image_path", "mask_path", "mask")


def dataset_overview(
    index: pd.DataFrame,
    out_dir: str | Path,
    read_slice: Callable[[str], np.ndarray],
    read_mask: Callable[[str], np.ndarray],
    n_examples: int = 4,
    seed: int = 0,
) -> dict:
    """Count slices, patients and tumour areas of a dataset and draw them.

    Writes into ``out_dir``: class_balance.png (slices and patients with and without tumour),
    slices_per_patient.png, tumour_area.png (tumour area of each tumour slice), example_slices.png
    (``n_examples`` random tumour slices, each channel and the mask outline) and overview.json
    (the returned counts). Only the masks of slices marked as tumour slices are read.

    Args:
        index: one row per slice with columns patient_id, image_path, mask_path and mask
            (1 if the slice has a tumour, else 0).
        out_dir: folder to write into, created if missing.
        read_slice: reads an image path into a (H, W, 3) uint8 slice.
        read_mask: reads a mask path into a (H, W) bool mask.
        n_examples: number of tumour slices in example_slices.png, at least 1.
        seed: seed for choosing the example slices.

    Returns:
        JSON-serialisable dict with n_patients, n_tumour_patients, n_slices, n_tumour_slices,
        n_empty_slices, tumour_area_median and tumour_area_mean (pixels, None without tumour
        slices), slices_per_patient_min, slices_per_patient_median and slices_per_patient_max.

    Raises:
        ValueError: if a column is missing, the index is empty or n_examples is below 1.
    """
    missing = [column for column in INDEX_COLUMNS if column not in index.columns]
    if missing:
        raise ValueError(f"index is missing the column(s) {missing}, expected {list(INDEX_COLUMNS)}")
    if index.empty:
        raise ValueError("index has no rows, so there is nothing to summarise")
    if n_examples < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    has_tumour = index["mask"].astype(bool)
    tumour_slices = index[has_tumour]
    slices_per_patient = index.groupby("patient_id").size()
    tumour_patients = set(tumour_slices["patient_id"])

    tumour_areas = _read_tumour_areas(tumour_slices["mask_path"], read_mask)
    n_empty_masks = int((tumour_areas == 0).sum())
    if n_empty_masks:
        logger.warning(
            "%d slices have mask = 1 in the index but an empty mask file, so the index disagrees with the masks",
            n_empty_masks,
        )

    summary = {
        "n_patients": int(len(slices_per_patient)),
        "n_tumour_patients": len(tumour_patients),
        "n_slices": int(len(index)),
        "n_tumour_slices": int(has_tumour.sum()),
        "n_empty_slices": int((~has_tumour).sum()),
        "tumour_area_median": float(np.median(tumour_areas)) if len(tumour_areas) else None,
        "tumour_area_mean": float(np.mean(tumour_areas)) if len(tumour_areas) else None,
        "slices_per_patient_min": int(slices_per_patient.min()),
        "slices_per_patient_median": float(slices_per_patient.median()),
        "slices_per_patient_max": int(slices_per_patient.max()),
    }

    _log_written(_plot_class_balance(summary, out_dir / "class_balance.png"))
    _log_written(_plot_slices_per_patient(slices_per_patient, out_dir / "slices_per_patient.png"))
    _log_written(_plot_tumour_area(tumour_areas, out_dir / "tumour_area.png"))

    # Without tumour slices the examples come from all slices, so the figure still shows the data.
    candidates = tumour_slices if len(tumour_slices) else index
    examples = candidates.sample(n=min(n_examples, len(candidates)), random_state=seed)
    _log_written(_plot_examples(examples, read_slice, read_mask, out_dir / "example_slices.png"))

    json_path = out_dir / "overview.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    _log_written(json_path)
    return summary


def _read_tumour_areas(mask_paths: pd.Series, read_mask: Callable[[str], np.ndarray]) -> np.ndarray:
    """Read each mask in parallel threads and return its tumour area in pixels, (M,) int64."""

    def count_pixels(path: str) -> int:
        return int(np.count_nonzero(read_mask(path)))

    # File reads release the GIL, so threads overlap the I/O of many small mask files.
    with ThreadPoolExecutor() as executor:
        areas = list(executor.map(count_pixels, mask_paths))
    return np.asarray(areas, dtype=np.int64)


def _plot_class_balance(summary: dict, path: Path) -> Path:
    fig, (slice_ax, patient_ax) = plt.subplots(1, 2, figsize=(9, 4))
    n_patients_without = summary["n_patients"] - summary["n_tumour_patients"]
    panels = [
        (slice_ax, "Slices", [summary["n_empty_slices"], summary["n_tumour_slices"]]),
        (patient_ax, "Patients", [n_patients_without, summary["n_tumour_patients"]]),
    ]

    for ax, title, counts in panels:
        bars = ax.bar(["no tumour", "tumour"], counts, color=["tab:gray", "tab:red"])
        ax.bar_label(bars)
        ax.set_title(f"{title} ({sum(counts)})")
        ax.set_ylabel("count")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(y=0.1)
    patient_ax.set_xticks([0, 1], ["no tumour slice", "at least one\ntumour slice"])
    return save_figure(fig, path)


def _plot_slices_per_patient(slices_per_patient: pd.Series, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(slices_per_patient.to_numpy(), bins="auto", color="tab:blue", edgecolor="white")
    ax.set_xlabel("slices per patient")
    ax.set_ylabel("patients")
    ax.set_title(f"Slices per patient ({len(slices_per_patient)} patients)")
    return save_figure(fig, path)


def _plot_tumour_area(tumour_areas: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(tumour_areas):
        ax.hist(tumour_areas, bins="auto", color="tab:red", edgecolor="white")
    else:
        ax.text(0.5, 0.5, "no tumour slices", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("tumour area (pixels)")
    ax.set_ylabel("slices")
    ax.set_title(f"Tumour area per tumour slice ({len(tumour_areas)} slices)")
    return save_figure(fig, path)


def _plot_examples(
    examples: pd.DataFrame,
    read_slice: Callable[[str], np.ndarray],
    read_mask: Callable[[str], np.ndarray],
    path: Path,
) -> Path:
    """Draw one row per slice: its three channels, then FLAIR with the mask outline."""
    n_rows = len(examples)
    fig, axes = plt.subplots(n_rows, 4, figsize=(12, 3 * n_rows), squeeze=False)

    for row_axes, row in zip(axes, examples.itertuples(index=False)):
        image = read_slice(row.image_path)
        mask = read_mask(row.mask_path)

        for channel, name in enumerate(CHANNEL_NAMES):
            row_axes[channel].imshow(image[..., channel], cmap="gray", vmin=0, vmax=255)
            row_axes[channel].set_title(name, fontsize=9)
        row_axes[3].imshow(image[..., 1], cmap="gray", vmin=0, vmax=255)
        draw_mask_outline(row_axes[3], mask, TRUE_MASK_COLOR)
        row_axes[3].set_title("FLAIR + mask outline", fontsize=9)
        row_axes[0].set_ylabel(f"{row.patient_id}\n{Path(row.image_path).stem}", fontsize=8)

    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def _log_written(path: Path) -> None:
    logger.info("wrote %s", path)
