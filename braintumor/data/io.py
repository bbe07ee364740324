"""Read MRI slices and tumour masks from TIFF, PNG or JPEG files.

TIFF goes through tifffile with imagecodecs, which decodes both the uncompressed TIFFs of the public
download and WebP- or deflate-compressed copies (OpenCV and Pillow cannot decode WebP inside TIFF).
PNG and JPEG go through OpenCV. Every check happens here, where a file enters the system, and
every failure is a `SliceReadError` that names the file and the reason.

A file may also be an S3 object, given as an `s3://bucket/key` URI. A missing object is a
`SliceReadError` like a missing file. A missing bucket, denied access or absent credentials raise
`braintumor.s3.S3Error` instead, because they concern every file of the dataset, not this one.
"""

import io
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from braintumor import s3

SLICE_SHAPE = (256, 256, 3)
MASK_SHAPE = (256, 256)
TIFF_SUFFIXES = (".tif", ".tiff")
OTHER_SUFFIXES = (".png", ".jpg", ".jpeg")

# A slice of this dataset is 256x256. Anything that declares more pixels than this is refused before
# it is decoded, so a hostile header cannot make a reader allocate gigabytes.
MAX_PIXELS = 4096 * 4096
# Channels of the largest image any reader accepts (an RGBA mask whose colour channels are equal).
MAX_CHANNELS = 4


class SliceReadError(ValueError):
    """A slice or mask file that cannot be used, with the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_slice(path: str | Path) -> np.ndarray:
    """Read one 3-channel MRI slice.

    Args:
        path: a .tif/.tiff, .png or .jpg/.jpeg file or `s3://` object with channels in the
            dataset's order (pre-contrast, FLAIR, post-contrast); PNG and JPEG channels are read as RGB.

    Returns:
        (256, 256, 3) uint8 array.

    Raises:
        SliceReadError: missing or unreadable file or object, wrong size, channel count or bit depth.
        s3.S3Error: the bucket is missing, access is denied or there are no credentials.
    """
    return _check_slice(_decode(path), path)


def read_mask(path: str | Path) -> np.ndarray:
    """Read one tumour mask.

    Args:
        path: a single-channel mask file or `s3://` object with values 0 (background) and 255
            (tumour); a 3-channel mask whose channels are equal is accepted too.

    Returns:
        (256, 256) bool array, True on tumour pixels.

    Raises:
        SliceReadError: missing or unreadable file or object, wrong size, or values other than 0 and 255.
        s3.S3Error: the bucket is missing, access is denied or there are no credentials.
    """
    mask = _decode(path)
    if mask.ndim == 3 and mask.shape[2] in (3, 4) and _channels_equal(mask[..., :3]):
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise SliceReadError(path, f"expected a single-channel mask (H, W), got shape {mask.shape}")
    if mask.shape != MASK_SHAPE:
        raise SliceReadError(path, f"expected mask shape {MASK_SHAPE}, got {mask.shape}")
    values = np.unique(mask)
    if not np.isin(values, (0, 255)).all():
        shown = ", ".join(str(v) for v in values[:8])
        raise SliceReadError(path, f"expected mask values 0 and 255, found {shown}")
    return mask == 255


def decode_slice(data: bytes, name: str) -> np.ndarray:
    """Decode a slice held in memory (an upload or an archive member) with the checks of `read_slice`.

    Args:
        data: the encoded file.
        name: the file name; its suffix picks the decoder, and errors name it.
    """
    return _check_slice(_decode_buffer(data, name), name)


def _check_slice(image: np.ndarray, name: str | Path) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise SliceReadError(name, f"expected 3 channels (H, W, 3), got shape {image.shape}")
    if image.shape != SLICE_SHAPE:
        raise SliceReadError(name, f"expected shape {SLICE_SHAPE}, got {image.shape}")
    return image


def _decode(path: str | Path) -> np.ndarray:
    if s3.is_s3(path):
        return _decode_buffer(_read_object(str(path)), str(path))
    path = Path(path)
    if not path.is_file():
        raise SliceReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise SliceReadError(path, "file is empty (0 bytes)")
    return _decode_buffer(path.read_bytes(), path)


def _read_object(uri: str) -> bytes:
    try:
        return s3.read_bytes(uri)
    except s3.S3NotFoundError:
        # S3 returns "not found" for a missing bucket as well as for a missing object. A missing
        # bucket raises here, so that the caller stops instead of skipping every slice.
        s3.check_bucket(uri)
        raise SliceReadError(uri, "object not found") from None


def _decode_buffer(data: bytes, name: str | Path) -> np.ndarray:
    if len(data) == 0:
        raise SliceReadError(name, "file is empty (0 bytes)")
    suffix = Path(str(name)).suffix.lower()
    if suffix in TIFF_SUFFIXES or data[:4] in (b"II*\x00", b"MM\x00*"):
        image = _decode_tiff(data, name)
    elif suffix in OTHER_SUFFIXES or suffix == "":
        image = _decode_with_opencv(data, name)
    else:
        raise SliceReadError(
            name, f"unsupported file type '{suffix}', expected one of {TIFF_SUFFIXES + OTHER_SUFFIXES}"
        )
    if image.dtype != np.uint8:
        raise SliceReadError(name, f"expected 8-bit unsigned pixels (uint8), got {image.dtype}")
    return image


def _decode_tiff(data: bytes, name: str | Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.pages:
                raise SliceReadError(name, "TIFF contains no image")
            page = tif.pages[0]
            # These checks read the header only. Samples per pixel and depth multiply the decoded
            # size of an allowed width and height, so the count of values is bounded too.
            if page.imagelength * page.imagewidth > MAX_PIXELS:
                raise SliceReadError(
                    name, f"TIFF declares shape {page.shape}, over the limit of {MAX_PIXELS} pixels"
                )
            if page.size > MAX_PIXELS * MAX_CHANNELS:
                raise SliceReadError(
                    name,
                    f"TIFF declares shape {page.shape}, over the limit of {MAX_PIXELS * MAX_CHANNELS} values "
                    f"({MAX_PIXELS} pixels of {MAX_CHANNELS} channels)",
                )
            if page.dtype != np.uint8:
                raise SliceReadError(name, f"expected 8-bit unsigned pixels (uint8), got {page.dtype}")
            return page.asarray()
    except SliceReadError:
        raise
    except Exception as error:  # tifffile and imagecodecs raise many types for corrupt files
        raise SliceReadError(name, f"cannot decode TIFF ({type(error).__name__}: {error})") from None


def _decode_with_opencv(data: bytes, name: str | Path) -> np.ndarray:
    _check_declared_pixels(data, name)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise SliceReadError(name, f"cannot decode the image ({error.err or error})") from None
    if image is None:
        raise SliceReadError(name, "not a readable PNG or JPEG image")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _check_declared_pixels(data: bytes, name: str | Path) -> None:
    """Reject an image whose header declares more than MAX_PIXELS, before OpenCV allocates it."""
    try:
        with Image.open(io.BytesIO(data)) as header:  # parses the header only
            width, height = header.size
    except Image.DecompressionBombError as error:
        raise SliceReadError(name, f"the image declares more than {MAX_PIXELS} pixels ({error})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise SliceReadError(name, "not a readable PNG or JPEG image") from None
    if width * height > MAX_PIXELS:
        raise SliceReadError(name, f"the image declares {width}x{height} pixels, over the limit of {MAX_PIXELS} pixels")


def _channels_equal(image: np.ndarray) -> bool:
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all())
