"""Turn an HTTP request body into one checked slice, or into an `UploadError` with a 4xx status.

Every check on what a client sends happens here, before the data reaches a model:

- the body size, against a limit, before and while it is read (413);
- an empty body or a multipart body without a file part (400);
- the format, by the file's first bytes: TIFF, PNG or JPEG, whatever the name or Content-Type (415);
- the pixel count declared in a PNG or JPEG header, before decoding, so that a small file cannot
  make the replica allocate gigabytes (422);
- the decoded slice, by `braintumor.data.io.decode_slice`: 8-bit, 3 channels, 256x256 (422).

Slices of another size are rejected, not resized: the models saw only the dataset's 256x256 slices,
and rescaling would change both the apparent size of the anatomy and the unit of the tumour area.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from braintumor.data.io import MAX_PIXELS, SLICE_SHAPE, SliceReadError, decode_slice

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

# Magic numbers of the accepted formats: classic and BigTIFF (both byte orders), PNG, JPEG.
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

EXPECTED_SLICE = (
    f"a {SLICE_SHAPE[0]}x{SLICE_SHAPE[1]} slice with {SLICE_SHAPE[2]} channels of 8-bit pixels "
    "(pre-contrast, FLAIR, post-contrast) as TIFF, PNG or JPEG"
)


class UploadError(Exception):
    """A request the service rejects: HTTP status, a short machine-readable code and a message."""

    def __init__(self, status: int, code: str, message: str):
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")

    def to_json(self) -> dict:
        body = {"error": self.code, "message": self.message}
        if self.code in ("invalid_slice", "unsupported_media_type"):
            body["expected"] = EXPECTED_SLICE
        return body


@dataclass
class Upload:
    """One uploaded file: its bytes, the name the client gave (or a default) and the sniffed format."""

    data: bytes
    filename: str
    format: str  # "tiff", "png" or "jpeg"


@dataclass
class DecodedSlice:
    """A checked slice and where it came from."""

    image: np.ndarray  # (256, 256, 3) uint8
    filename: str
    format: str


async def read_body(request: Request, max_bytes: int) -> bytes:
    """Read the whole request body, rejecting it with 413 as soon as it passes `max_bytes`.

    The declared Content-Length is checked first, so an honest client with a large file is rejected
    before the body is read. A chunked body is counted while it streams.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)

    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(total, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, max_bytes: int, filename: str | None = None) -> Upload:
    """Read the slice file from a multipart form (field `file`, or else the first file) or a raw body.

    Args:
        request: the incoming request.
        max_bytes: the body size limit.
        filename: the name to report for a raw body (the `filename` query parameter).

    Raises:
        UploadError: 413 body over the limit, 400 empty body or no file part, 415 not TIFF/PNG/JPEG.
    """
    body = await read_body(request, max_bytes)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        data, filename = await _file_from_multipart(request, body)
    else:
        data, filename = body, filename or "upload"

    if not data:
        raise UploadError(400, "empty_body", f"'{filename}' is empty (0 bytes); send the slice file as the body or as form field 'file'")
    return Upload(data=data, filename=filename, format=sniff_format(data, filename))


def sniff_format(data: bytes, filename: str) -> str:
    """Return "tiff", "png" or "jpeg" from the file's first bytes.

    Raises:
        UploadError: 415 when the bytes match none of the three.
    """
    if data[:4] in TIFF_SIGNATURES:
        return "tiff"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    raise UploadError(
        415,
        "unsupported_media_type",
        f"'{filename}' is not a TIFF, PNG or JPEG image (it starts with bytes {data[:8]!r})",
    )


def decode_upload(upload: Upload) -> DecodedSlice:
    """Decode and check an upload.

    Raises:
        UploadError: 422 when the image is corrupt, declares too many pixels, or is not a
            256x256, 3-channel, 8-bit slice. The message names the problem.
    """
    if upload.format in ("png", "jpeg"):
        _check_declared_pixels(upload)
    suffix = {"tiff": ".tif", "png": ".png", "jpeg": ".jpg"}[upload.format]
    try:
        # The suffix picks decode_slice's decoder; the format came from the bytes, not the name.
        image = decode_slice(upload.data, f"upload{suffix}")
    except SliceReadError as error:
        raise UploadError(422, "invalid_slice", f"'{upload.filename}': {error.reason}") from None
    return DecodedSlice(image=image, filename=upload.filename, format=upload.format)


async def _file_from_multipart(request: Request, body: bytes) -> tuple[bytes, str]:
    async def replay_body():
        return {"type": "http.request", "body": body, "more_body": False}

    # The body has been read already (to enforce the limit), so the form parser gets it replayed.
    replayed = Request(request.scope, receive=replay_body)
    try:
        form = await replayed.form(max_files=1, max_fields=16)
    except (MultiPartException, HTTPException) as error:
        detail = getattr(error, "message", None) or getattr(error, "detail", None) or str(error)
        raise UploadError(400, "invalid_multipart", f"cannot parse the multipart body: {detail}") from None

    files = [(key, value) for key, value in form.multi_items() if not isinstance(value, str)]
    if not files:
        raise UploadError(400, "missing_file", "the multipart body has no file part; send the slice as form field 'file'")
    chosen = next((value for key, value in files if key == "file"), files[0][1])
    data = await chosen.read()
    await form.close()
    return data, chosen.filename or "upload"


def _check_declared_pixels(upload: Upload) -> None:
    """Reject a PNG or JPEG whose header declares more than MAX_PIXELS, without decoding it."""
    try:
        with Image.open(io.BytesIO(upload.data)) as header:  # reads the header only
            width, height = header.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise UploadError(422, "invalid_slice", f"'{upload.filename}': cannot read the {upload.format.upper()} header ({error})") from None
    if width * height > MAX_PIXELS:
        raise UploadError(
            422,
            "invalid_slice",
            f"'{upload.filename}': the image declares {width}x{height} pixels, over the limit of {MAX_PIXELS}; "
            f"expected {SLICE_SHAPE[1]}x{SLICE_SHAPE[0]}",
        )


def _too_large(size: int, max_bytes: int) -> UploadError:
    return UploadError(
        413,
        "body_too_large",
        f"the request body is {size} bytes or more, over the limit of {max_bytes} bytes; "
        f"an uncompressed {SLICE_SHAPE[0]}x{SLICE_SHAPE[1]}x{SLICE_SHAPE[2]} TIFF slice is about 197 KB",
    )
