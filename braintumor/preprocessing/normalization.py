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

    batch = images.reshape(-1, *images.shape[-3:])
    mean, std = _channel_statistics(batch)
    mean, std = mean / 255.0, np.maximum(std / 255.0, STD_FLOOR)
    # (x / 255 - mean) / std, as one multiply and one add per pixel.
    scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None, :]
    offset = (-mean / std).astype(np.float32)[:, None, None, :]
    normalized = batch.astype(np.float32)
    normalized *= scale
    normalized += offset
    return normalized.reshape(images.shape)


def _channel_statistics(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-slice, per-channel mean and standard deviation of a (N, H, W, C) uint8 batch.

    Both are (N, C) float64, computed from a 256-bin histogram of each slice and channel, so they
    are exact up to float64 rounding. Plain float32 reductions over the 65,536 pixels of a slice
    moved normalised values by up to 5e-3 on the dataset's slices.
    """
    count, height, width, channels = batch.shape
    pixels = batch.reshape(count, height * width, channels)
    histograms = np.empty((count, channels, 256), dtype=np.float64)
    for index in range(count):
        for channel in range(channels):
            histograms[index, channel] = np.bincount(pixels[index, :, channel], minlength=256)
    levels = np.arange(256, dtype=np.float64)
    mean = histograms @ levels / (height * width)
    variance = (histograms * (levels - mean[..., None]) ** 2).sum(axis=-1) / (height * width)
    return mean, np.sqrt(variance)
