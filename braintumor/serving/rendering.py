"""Encode a predicted mask, or an overlay of it on the slice, as PNG for an HTTP response."""

import base64

import cv2
import numpy as np

FLAIR_CHANNEL = 1
OVERLAY_COLOUR = (255, 0, 0)  # RGB red, as in the evaluation plots' predicted outlines
OVERLAY_FILL_OPACITY = 0.35


def encode_png(image: np.ndarray) -> bytes:
    """Encode a (H, W) or (H, W, 3) RGB uint8 image as PNG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {image.shape} {image.dtype} image as PNG")
    return encoded.tobytes()


def mask_png(mask: np.ndarray) -> bytes:
    """Encode a (256, 256) bool mask as a single-channel PNG with values 0 and 255, like the dataset's masks."""
    return encode_png(mask.astype(np.uint8) * 255)


def overlay_image(slice_image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Draw the predicted tumour on the slice's FLAIR channel: a translucent red fill and a red outline.

    Args:
        slice_image: (H, W, 3) uint8 slice, channels pre-contrast, FLAIR, post-contrast.
        mask: (H, W) bool predicted tumour pixels.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    flair = slice_image[..., FLAIR_CHANNEL]
    overlay = np.repeat(flair[..., None], 3, axis=2).astype(np.float32)
    colour = np.asarray(OVERLAY_COLOUR, dtype=np.float32)
    overlay[mask] = (1 - OVERLAY_FILL_OPACITY) * overlay[mask] + OVERLAY_FILL_OPACITY * colour
    overlay = overlay.round().astype(np.uint8)

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, OVERLAY_COLOUR, thickness=1)
    return overlay


def overlay_png(slice_image: np.ndarray, mask: np.ndarray) -> bytes:
    """Encode `overlay_image(slice_image, mask)` as an RGB PNG."""
    return encode_png(overlay_image(slice_image, mask))


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
