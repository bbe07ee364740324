"""Turn a segmenter's pixel probabilities into masks: flip averaging, threshold, small-component removal.

Evaluation, batch scoring and serving all call `segment`, so a slice gets the same mask whichever
way it is scored. The settings are chosen on validation patients by `jobs/tune.py` and stored in
the model's `model_info.json`; a model without them gets a plain 0.5 threshold.
"""

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MaskSettings:
    """Settings that turn pixel probabilities into a mask."""

    threshold: float = 0.5
    flip_averaging: bool = False  # average the prediction of the slice and of its left-right mirror
    min_component_pixels: int = 0  # 8-connected tumour regions smaller than this are removed

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.min_component_pixels < 0:
            raise ValueError(f"min_component_pixels must be at least 0, got {self.min_component_pixels}")

    def postprocessing(self) -> dict:
        """Return the settings besides the threshold, as ModelInfo.postprocessing stores them."""
        values = asdict(self)
        del values["threshold"]
        return values


def pixel_probabilities(model, inputs: np.ndarray, flip_averaging: bool = False) -> np.ndarray:
    """Run the segmenter on normalised slices.

    Args:
        model: a Keras segmenter returning (N, H, W, 1) probabilities.
        inputs: (N, H, W, 3) float32 normalised slices.
        flip_averaging: also predict the left-right mirror of each slice and average the two.

    Returns:
        (N, H, W) float32 tumour probability per pixel.
    """
    probability = np.asarray(model.predict_on_batch(inputs), dtype=np.float32)[..., 0]
    if flip_averaging:
        mirrored = np.asarray(model.predict_on_batch(np.ascontiguousarray(inputs[:, :, ::-1])), dtype=np.float32)
        probability = (probability + mirrored[:, :, ::-1, 0]) / 2.0
    return probability


def remove_small_components(masks: np.ndarray, min_pixels: int) -> np.ndarray:
    """Remove the 8-connected regions of fewer than `min_pixels` pixels from each (H, W) mask of (N, H, W)."""
    masks = np.asarray(masks, dtype=bool)
    if min_pixels <= 1:
        return masks.copy()
    cleaned = np.zeros_like(masks)
    for index, mask in enumerate(masks):
        if not mask.any():
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = np.zeros(count, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels  # label 0 is the background
        cleaned[index] = keep[labels]
    return cleaned


def masks_from_probabilities(probability: np.ndarray, settings: MaskSettings) -> np.ndarray:
    """Threshold (N, H, W) pixel probabilities and remove small regions; returns (N, H, W) bool."""
    masks = probability >= settings.threshold
    return remove_small_components(masks, settings.min_component_pixels)


def segment(model, inputs: np.ndarray, settings: MaskSettings) -> tuple[np.ndarray, np.ndarray]:
    """Predict masks for normalised slices with `settings`.

    Returns:
        (pixel probabilities (N, H, W) float32, masks (N, H, W) bool).
    """
    probability = pixel_probabilities(model, inputs, settings.flip_averaging)
    return probability, masks_from_probabilities(probability, settings)


def mask_settings(info) -> MaskSettings:
    """Read the mask settings of a segmenter's ModelInfo: its threshold and its `postprocessing` entries."""
    return MaskSettings(threshold=info.threshold, **(info.postprocessing or {}))
