"""The one intensity normalisation that training, batch scoring and serving all apply.

Scheme `slice-zscore-v1`: each channel of each slice is scaled to [0, 1] by dividing by 255, then
standardised with the mean and standard deviation of that channel over that slice's pixels.
The statistics come from the slice alone, so a lone slice sent to the HTTP service gets exactly
the normalisation it got in training; no patient volume is needed.

The standard deviation is floored at `STD_FLOOR` (on the [0, 1] scale). Slices at the top and
bottom of a volume are nearly all background, and without the floor their noise would be
stretched to unit variance.
"""

import numpy as np

NORMALIZATION = "slice-zscore-v1"
STD_FLOOR = 0.05


def normalize_slices(images: np.ndarray) -> np.ndarray:
    """Normalise slices for a model.

    Args:
        images: (N, H, W, C) or (H, W, C) uint8.

    Returns:
        float32 array of the same shape; per slice and channel, zero mean and unit standard
        deviation unless the floor applied.

    Raises:
        ValueError: if `images` is not uint8 or has fewer than 3 dimensions.
    """
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 slices, got {images.dtype}")
    if images.ndim not in (3, 4):
        raise ValueError(f"expected (N, H, W, C) or (H, W, C) slices, got shape {images.shape}")

    scaled = images.astype(np.float32) / 255.0
    spatial_axes = (-3, -2)
    mean = scaled.mean(axis=spatial_axes, keepdims=True)
    std = np.maximum(scaled.std(axis=spatial_axes, keepdims=True), STD_FLOOR)
    return (scaled - mean) / std
