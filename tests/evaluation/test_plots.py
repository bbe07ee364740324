import os
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import tifffile

from braintumor.evaluation.metrics import per_patient_segmentation
from braintumor.evaluation.plots import (
    plot_confusion_matrix,
    plot_overlay_grid,
    plot_per_patient_dice,
    plot_roc_pr,
    plot_training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_DIR = Path(os.environ.get("BRAINTUMOR_DATA", "/work/shared/data/lgg/kaggle_3m"))


def assert_valid_png(path, min_side=200, max_side=4000):
    path = Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert min_side <= height <= max_side
    assert min_side <= width <= max_side


def _stack(n=3, size=32, seed=0):
    """Return n random (size, size, 3) uint8 slices, square reference masks and shifted predictions."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    true_masks = np.zeros((n, size, size), dtype=bool)
    true_masks[:, 8:20, 8:20] = True
    pred_masks = np.roll(true_masks, 3, axis=2)
    return images, true_masks, pred_masks


def test_training_curves_png(tmp_path):
    history = {
        "loss": [0.9, 0.6, 0.4],
        "val_loss": [1.0, 0.7, 0.5],
        "dice": [0.3, 0.5, 0.6],
        "val_dice": [0.2, 0.4, 0.55],
        "auc": [0.7, 0.8, 0.85],
        "val_auc": [0.65, 0.75, 0.8],
        "lr": [1e-3, 1e-3, 1e-4],
    }
    path = plot_training_curves(history, tmp_path / "curves" / "training.png", title="run 1")
    assert path == tmp_path / "curves" / "training.png"
    assert_valid_png(path)


def test_training_curves_val_only_and_nonpositive_lr(tmp_path):
    history = {"val_loss": [0.5, 0.4], "learning_rate": [0.0, 1e-3]}
    assert_valid_png(plot_training_curves(history, tmp_path / "training.png"))


def test_training_curves_empty_history(tmp_path):
    with pytest.raises(ValueError, match=r"history contains no values to plot, got keys \['loss'\]"):
        plot_training_curves({"loss": []}, tmp_path / "training.png")


def test_confusion_matrix_png(tmp_path):
    path = plot_confusion_matrix([[50, 3], [7, 40]], tmp_path / "confusion.png")
    assert_valid_png(path)


def test_confusion_matrix_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"square \(K, K\) matrix, got shape \(2, 3\)"):
        plot_confusion_matrix([[1, 2, 3], [4, 5, 6]], tmp_path / "confusion.png")
    with pytest.raises(ValueError, match=r"labels must name each of the 2 classes, got \['a'\]"):
        plot_confusion_matrix([[1, 2], [3, 4]], tmp_path / "confusion.png", labels=("a",))


def test_roc_pr_png(tmp_path):
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=200)
    probability = np.clip(0.3 * y_true + rng.uniform(0, 0.7, size=200), 0, 1)
    assert_valid_png(plot_roc_pr(y_true, probability, tmp_path / "roc_pr.png"))


def test_roc_pr_one_class(tmp_path):
    with pytest.raises(ValueError, match=r"both labels 0 and 1.*got \[1\]"):
        plot_roc_pr([1, 1, 1], [0.2, 0.5, 0.9], tmp_path / "roc_pr.png")


def test_overlay_grid_png(tmp_path):
    images, true_masks, pred_masks = _stack(n=5)
    path = plot_overlay_grid(images, true_masks, pred_masks, tmp_path / "overlay.png", max_columns=4)
    assert_valid_png(path)


def test_overlay_grid_empty_masks_and_titles(tmp_path):
    images, true_masks, _ = _stack(n=2)
    empty = np.zeros_like(true_masks)
    # A mask that fills the slice touches every border, which tests the padded outline.
    full = np.ones_like(true_masks)
    path = plot_overlay_grid(
        images, empty, full, tmp_path / "overlay.png", titles=["first", "second"], channel=0
    )
    assert_valid_png(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": np.zeros((2, 32, 32), np.uint8)}, r"images must be \(N, H, W, 3\), got shape \(2, 32, 32\)"),
        ({"true_masks": np.zeros((2, 16, 16), bool)}, r"true_masks must be \(2, 32, 32\) to match images"),
        ({"pred_masks": np.zeros((3, 32, 32), bool)}, r"pred_masks must be \(2, 32, 32\) to match images"),
        ({"titles": ["only one"]}, r"one title per slice \(2\), got 1"),
        ({"channel": 3}, r"channel must be 0 \(pre-contrast\), 1 \(FLAIR\) or 2 \(post-contrast\), got 3"),
        ({"max_columns": 0}, r"max_columns must be at least 1, got 0"),
    ],
)
def test_overlay_grid_bad_input(tmp_path, change, message):
    images, true_masks, pred_masks = _stack(n=2)
    arguments = {"images": images, "true_masks": true_masks, "pred_masks": pred_masks, **change}
    with pytest.raises(ValueError, match=message):
        plot_overlay_grid(path=tmp_path / "overlay.png", **arguments)


def test_per_patient_dice_png(tmp_path):
    images, true_masks, pred_masks = _stack(n=6)
    pred_masks[4:] = False
    table = per_patient_segmentation(pred_masks, true_masks, ["a", "a", "b", "b", "c", "c"])
    assert_valid_png(plot_per_patient_dice(table, tmp_path / "dice.png"))


def test_per_patient_dice_bad_table(tmp_path):
    with pytest.raises(ValueError, match=r"missing the column\(s\) \['dice'\]"):
        plot_per_patient_dice(pd.DataFrame({"patient_id": ["a"]}), tmp_path / "dice.png")
    with pytest.raises(ValueError, match=r"no rows"):
        plot_per_patient_dice(pd.DataFrame({"patient_id": [], "dice": []}), tmp_path / "dice.png")


def _read_real_tumour_slices(count):
    """Read the first `count` slices with a non-empty mask from the first patient folders, in slice order."""
    images, masks, titles = [], [], []
    for patient_dir in sorted(path for path in DATA_DIR.iterdir() if path.is_dir()):
        mask_paths = sorted(patient_dir.glob("*_mask.tif"), key=lambda path: int(path.stem.split("_")[-2]))
        for mask_path in mask_paths:
            mask = tifffile.imread(mask_path) == 255
            if not mask.any():
                continue
            image_path = mask_path.with_name(mask_path.name.replace("_mask", ""))
            images.append(tifffile.imread(image_path))
            masks.append(mask)
            titles.append(image_path.stem)
            if len(images) == count:
                return np.stack(images), np.stack(masks), titles
    pytest.skip(f"fewer than {count} tumour slices found in {DATA_DIR}")


def test_overlay_grid_real_slices(tmp_path):
    if not DATA_DIR.is_dir():
        pytest.skip(f"LGG data folder {DATA_DIR} not found, set BRAINTUMOR_DATA to the kaggle_3m folder")

    images, true_masks, titles = _read_real_tumour_slices(3)
    assert images.shape == (3, 256, 256, 3)
    assert images.dtype == np.uint8

    # A prediction shifted by 5 pixels gives two visibly different outlines.
    pred_masks = np.roll(true_masks, 5, axis=2)
    path = plot_overlay_grid(images, true_masks, pred_masks, tmp_path / "real_overlay.png", titles=titles)
    assert_valid_png(path)
