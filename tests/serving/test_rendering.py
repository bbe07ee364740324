import cv2
import numpy as np

from braintumor.serving.rendering import mask_png, overlay_image


def _slice() -> np.ndarray:
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    image[..., 0] = 10
    image[..., 1] = np.arange(256, dtype=np.uint8)[None, :]  # FLAIR: a horizontal ramp
    image[..., 2] = 200
    return image


def test_mask_png_round_trip():
    mask = np.zeros((256, 256), dtype=bool)
    mask[40:60, 100:130] = True

    decoded = cv2.imdecode(np.frombuffer(mask_png(mask), dtype=np.uint8), cv2.IMREAD_UNCHANGED)

    assert decoded.shape == (256, 256)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask.astype(np.uint8) * 255)


def test_overlay_keeps_flair_outside_mask():
    mask = np.zeros((256, 256), dtype=bool)
    mask[40:60, 100:130] = True

    overlay = overlay_image(_slice(), mask)

    flair = _slice()[..., 1]
    for channel in range(3):
        np.testing.assert_array_equal(overlay[~mask][:, channel], flair[~mask])


def test_overlay_tints_mask_red():
    mask = np.zeros((256, 256), dtype=bool)
    mask[40:60, 100:130] = True

    overlay = overlay_image(_slice(), mask).astype(int)

    inside = overlay[45:55, 105:125]
    assert (inside[..., 0] > inside[..., 1]).all()
    assert (inside[..., 1] == inside[..., 2]).all()
    # The 1-pixel outline on the mask's edge is pure red.
    assert overlay[40, 110].tolist() == [255, 0, 0]


def test_overlay_empty_mask_is_flair():
    overlay = overlay_image(_slice(), np.zeros((256, 256), dtype=bool))

    np.testing.assert_array_equal(overlay, np.repeat(_slice()[..., 1:2], 3, axis=2))
