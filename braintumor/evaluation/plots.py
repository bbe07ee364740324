"""Draw training curves, classification curves and mask overlays as PNG files.

Every function writes one PNG, creates the parent folders, closes its figure and returns the path.
"""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

# Evaluation runs in jobs and workers without a display, so the non-interactive Agg backend is set
# before pyplot is imported.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from skimage import measure  # noqa: E402
from sklearn import metrics as sklearn_metrics  # noqa: E402

from braintumor.evaluation.metrics import dice_score  # noqa: E402

DPI = 100
TRUE_MASK_COLOR = "lime"
PRED_MASK_COLOR = "red"
CHANNEL_NAMES = ("pre-contrast", "FLAIR", "post-contrast")
LEARNING_RATE_KEYS = ("lr", "learning_rate")


def plot_training_curves(
    history: Mapping[str, Sequence[float]], path: str | Path, title: str | None = None
) -> Path:
    """Plot each training metric per epoch next to its validation counterpart.

    A metric ``name`` and ``val_name`` share a panel. A ``val_`` metric without a training
    counterpart gets its own panel. An ``lr`` or ``learning_rate`` entry gets a panel with a log
    axis (linear if a value is not positive).

    Args:
        history: metric name to one value per epoch, as in a Keras ``History.history``.
        path: PNG file to write.
        title: figure title, or no title if None.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: if history is empty or every series in it is empty.
    """
    series = {name: np.asarray(values, dtype=float) for name, values in history.items() if len(values) > 0}
    if not series:
        raise ValueError(f"history contains no values to plot, got keys {sorted(history)}")

    panels = _group_training_metrics(series)
    n_columns = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(4.5 * n_columns, 3.5 * n_rows), squeeze=False)

    for ax, (panel_title, names) in zip(axes.flat, panels):
        for name in names:
            values = series[name]
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, marker="o", markersize=3, label=name)
        if panel_title in LEARNING_RATE_KEYS and all((series[name] > 0).all() for name in names):
            ax.set_yscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend()

    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)

    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    path: str | Path,
    labels: Sequence[str] = ("no tumour", "tumour"),
) -> Path:
    """Draw a confusion matrix with the count written in each cell.

    Args:
        confusion: (K, K) counts, rows are reference classes and columns predicted classes, as in
            ``classification_summary``'s [[tn, fp], [fn, tp]].
        path: PNG file to write.
        labels: K class names, in the order of the rows.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: if confusion is not square or labels does not name each row.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square (K, K) matrix, got shape {confusion.shape}")
    if len(labels) != confusion.shape[0]:
        raise ValueError(f"labels must name each of the {confusion.shape[0]} classes, got {list(labels)}")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    image = ax.imshow(confusion, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax)

    # White text on dark cells and black text on light cells keeps every count readable.
    halfway = confusion.max() / 2.0
    for row in range(confusion.shape[0]):
        for column in range(confusion.shape[1]):
            count = confusion[row, column]
            color = "white" if count > halfway else "black"
            ax.text(column, row, f"{count:g}", ha="center", va="center", color=color, fontsize=12)

    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title("Confusion matrix")
    return save_figure(fig, path)


def plot_roc_pr(
    y_true: Sequence[int] | np.ndarray, probability: Sequence[float] | np.ndarray, path: str | Path
) -> Path:
    """Plot the ROC curve and the precision-recall curve side by side.

    The ROC panel shows the diagonal of a random classifier, and the precision-recall panel the
    horizontal line at the share of positives, which is what a random classifier reaches.

    Args:
        y_true: (N,) reference labels, 0 or 1.
        probability: (N,) predicted probability of label 1.
        path: PNG file to write.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: if the lengths differ or y_true does not contain both classes, because both
            curves are undefined then.
    """
    labels = np.asarray(y_true).astype(int)
    probability = np.asarray(probability, dtype=float)
    if labels.shape != probability.shape:
        raise ValueError(
            f"y_true and probability must have the same shape, got {labels.shape} and {probability.shape}"
        )
    present = np.unique(labels).tolist()
    if present != [0, 1]:
        raise ValueError(f"y_true must contain both labels 0 and 1 to draw ROC and PR curves, got {present}")

    false_positive_rate, true_positive_rate, _ = sklearn_metrics.roc_curve(labels, probability)
    roc_auc = sklearn_metrics.roc_auc_score(labels, probability)
    precision, recall, _ = sklearn_metrics.precision_recall_curve(labels, probability)
    average_precision = sklearn_metrics.average_precision_score(labels, probability)
    prevalence = labels.mean()

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.5))

    roc_ax.plot(false_positive_rate, true_positive_rate, label=f"model (AUC = {roc_auc:.3f})")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="chance (AUC = 0.5)")
    roc_ax.set_xlabel("false positive rate")
    roc_ax.set_ylabel("true positive rate")
    roc_ax.set_title("ROC curve")

    # drawstyle="steps-post" draws the step function that average precision sums over.
    pr_ax.plot(recall, precision, drawstyle="steps-post", label=f"model (AP = {average_precision:.3f})")
    pr_ax.axhline(prevalence, linestyle="--", color="gray", label=f"chance (AP = {prevalence:.3f})")
    pr_ax.set_xlabel("recall")
    pr_ax.set_ylabel("precision")
    pr_ax.set_title("Precision-recall curve")

    for ax in (roc_ax, pr_ax):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left")
    return save_figure(fig, path)


def plot_overlay_grid(
    images: np.ndarray,
    true_masks: np.ndarray,
    pred_masks: np.ndarray,
    path: str | Path,
    titles: Sequence[str] | None = None,
    channel: int = 1,
    max_columns: int = 4,
) -> Path:
    """Draw slices in a grid with the reference mask outlined in green and the prediction in red.

    Args:
        images: (N, H, W, 3) uint8 raw slices, channels pre-contrast, FLAIR, post-contrast.
        true_masks: (N, H, W) bool reference masks.
        pred_masks: (N, H, W) bool predicted masks.
        path: PNG file to write.
        titles: N tile titles (for example patient, slice and Dice). If None, each tile shows
            its index and the slice's Dice.
        channel: channel shown in gray, 0 pre-contrast, 1 FLAIR, 2 post-contrast.
        max_columns: maximum number of tiles per row, at least 1.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: if the shapes do not match, the stack is empty, or channel, max_columns or
            titles is invalid.
    """
    images = np.asarray(images)
    true_masks = np.asarray(true_masks, dtype=bool)
    pred_masks = np.asarray(pred_masks, dtype=bool)
    _check_overlay_input(images, true_masks, pred_masks, titles, channel, max_columns)

    if titles is None:
        titles = [
            f"#{i}  Dice {dice_score(pred, true):.3f}" for i, (pred, true) in enumerate(zip(pred_masks, true_masks))
        ]

    n_tiles = len(images)
    n_columns = min(max_columns, n_tiles)
    n_rows = math.ceil(n_tiles / n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(3 * n_columns, 3.3 * n_rows + 0.5), squeeze=False)

    for ax, image, true_mask, pred_mask, tile_title in zip(axes.flat, images, true_masks, pred_masks, titles):
        ax.imshow(image[..., channel], cmap="gray", vmin=0, vmax=255)
        draw_mask_outline(ax, true_mask, TRUE_MASK_COLOR)
        draw_mask_outline(ax, pred_mask, PRED_MASK_COLOR)
        ax.set_title(tile_title, fontsize=9)

    for ax in axes.flat:
        ax.axis("off")

    legend_lines = [
        Line2D([], [], color=TRUE_MASK_COLOR, label="reference mask"),
        Line2D([], [], color=PRED_MASK_COLOR, label="predicted mask"),
    ]
    fig.legend(handles=legend_lines, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(f"{CHANNEL_NAMES[channel]} with mask outlines")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, path, tight=False)


def plot_per_patient_dice(table: pd.DataFrame, path: str | Path) -> Path:
    """Draw a bar per patient with its volume Dice, sorted from lowest to highest.

    Args:
        table: output of ``per_patient_segmentation``, with at least the columns patient_id and dice.
        path: PNG file to write.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: if a column is missing or the table is empty.
    """
    missing = sorted({"patient_id", "dice"} - set(table.columns))
    if missing:
        raise ValueError(
            f"table is missing the column(s) {missing}, expected the output of per_patient_segmentation"
        )
    if table.empty:
        raise ValueError("table has no rows, so there is no patient to plot")

    ordered = table.sort_values("dice", kind="stable")
    positions = np.arange(len(ordered))
    mean_dice = ordered["dice"].mean()

    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(ordered) + 1.5), 4.5))
    ax.bar(positions, ordered["dice"], color="tab:blue")
    ax.axhline(mean_dice, linestyle="--", color="tab:orange", label=f"mean Dice {mean_dice:.3f}")
    ax.set_xticks(positions, ordered["patient_id"].astype(str), rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(ordered) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_xlabel("patient")
    ax.set_ylabel("Dice over the patient volume")
    ax.set_title(f"Dice per patient ({len(ordered)} patients)")
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def draw_mask_outline(ax: plt.Axes, mask: np.ndarray, color: str, linewidth: float = 1.0) -> None:
    """Draw the outline of a (H, W) bool mask on an axes that shows an image in pixel coordinates."""
    # Padding closes the contours of regions that touch the border of the slice.
    padded = np.pad(mask.astype(float), 1)
    for contour in measure.find_contours(padded, 0.5):
        ax.plot(contour[:, 1] - 1, contour[:, 0] - 1, color=color, linewidth=linewidth)


def _group_training_metrics(series: Mapping[str, np.ndarray]) -> list[tuple[str, list[str]]]:
    """Return (panel title, metric names) pairs: training metric with its val_ metric, learning rate last."""
    panels = []
    for name in series:
        if name in LEARNING_RATE_KEYS:
            continue
        if name.startswith("val_"):
            if name[len("val_"):] not in series:
                panels.append((name, [name]))
            continue
        names = [name] + ([f"val_{name}"] if f"val_{name}" in series else [])
        panels.append((name, names))

    panels.extend((name, [name]) for name in LEARNING_RATE_KEYS if name in series)
    return panels


def _check_overlay_input(
    images: np.ndarray,
    true_masks: np.ndarray,
    pred_masks: np.ndarray,
    titles: Sequence[str] | None,
    channel: int,
    max_columns: int,
) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("images is empty, at least one slice is needed")
    if true_masks.shape != images.shape[:3]:
        raise ValueError(f"true_masks must be {images.shape[:3]} to match images, got {true_masks.shape}")
    if pred_masks.shape != images.shape[:3]:
        raise ValueError(f"pred_masks must be {images.shape[:3]} to match images, got {pred_masks.shape}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles must contain one title per slice ({len(images)}), got {len(titles)}")
    if channel not in (0, 1, 2):
        raise ValueError(f"channel must be 0 (pre-contrast), 1 (FLAIR) or 2 (post-contrast), got {channel}")
    if max_columns < 1:
        raise ValueError(f"max_columns must be at least 1, got {max_columns}")


def save_figure(fig: plt.Figure, path: str | Path, tight: bool = True) -> Path:
    """Write a figure as PNG at DPI dots per inch, creating parent folders, then close it.

    Args:
        fig: figure to write.
        path: PNG file to write.
        tight: whether to apply ``fig.tight_layout()`` first. Pass False after a custom layout.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if tight:
            fig.tight_layout()
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path
