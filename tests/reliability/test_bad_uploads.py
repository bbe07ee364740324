"""HTTP bodies that the service must reject, checked on the upload functions without starting Ray Serve."""

import asyncio

import numpy as np
import pytest
from bad_inputs import HUGE_SIDE, encoded, good_slice_tiff, multipart_body, png_declaring, random_slice, raw_request, tiff_declaring

from braintumor.serving.uploads import UploadError, decode_upload, read_upload

MAX_BYTES = 1024 * 1024


def upload_outcome(request, max_bytes: int = MAX_BYTES, filename: str | None = None):
    """Run read_upload and decode_upload on `request`; return the DecodedSlice or raise UploadError."""

    async def run():
        return decode_upload(await read_upload(request, max_bytes, filename))

    return asyncio.run(run())


def assert_rejected(request, status: int, code: str, message: str, **options) -> UploadError:
    with pytest.raises(UploadError) as caught:
        upload_outcome(request, **options)
    assert caught.value.status == status
    assert caught.value.code == code
    assert message in caught.value.message
    return caught.value


def test_good_slice_accepted():
    decoded = upload_outcome(raw_request(good_slice_tiff()), max_bytes=2**20, filename="P1_1.tif")

    assert decoded.image.shape == (256, 256, 3)
    assert decoded.filename == "P1_1.tif"


def test_empty_body():
    assert_rejected(raw_request(b""), 400, "empty_body", "'upload' is empty (0 bytes)")


def test_empty_file_part():
    body, content_type = multipart_body([("file", "empty.tif", b"")])
    request = raw_request(body, {"content-type": content_type, "content-length": str(len(body))})

    assert_rejected(request, 400, "empty_body", "'empty.tif' is empty (0 bytes)")


def test_multipart_without_file_part():
    body, content_type = multipart_body([("note", None, b"no file here")])
    request = raw_request(body, {"content-type": content_type, "content-length": str(len(body))})

    assert_rejected(request, 400, "missing_file", "no file part")


def test_oversized_body_rejected_before_reading():
    def receive_never():
        raise AssertionError("the body was read although its declared length is over the limit")

    request = raw_request(b"", {"content-type": "application/octet-stream", "content-length": str(MAX_BYTES + 1)})
    request._receive = receive_never

    assert_rejected(request, 413, "body_too_large", f"is {MAX_BYTES + 1} bytes or more, over the limit of {MAX_BYTES} bytes")


def test_oversized_chunked_body():
    chunks = [b"\0" * 65536] * 20  # 1.25 MiB without a Content-Length, as a chunked upload arrives

    assert_rejected(raw_request(chunks, {"content-type": "application/octet-stream"}), 413, "body_too_large", f"over the limit of {MAX_BYTES} bytes")


def test_body_longer_than_declared_length():
    chunks = [b"\0" * 65536] * 20
    headers = {"content-type": "application/octet-stream", "content-length": "100"}

    assert_rejected(raw_request(chunks, headers), 413, "body_too_large", f"over the limit of {MAX_BYTES} bytes")


def test_non_image_named_tif():
    body, content_type = multipart_body([("file", "notes.tif", b"patient notes, not an image\n")])
    request = raw_request(body, {"content-type": content_type, "content-length": str(len(body))})

    error = assert_rejected(request, 415, "unsupported_media_type", "'notes.tif' is not a TIFF, PNG or JPEG image")

    assert "expected" in error.to_json()


@pytest.mark.parametrize(
    "suffix, side, shape",
    [(".png", 512, "(512, 512, 3)"), (".jpg", 128, "(128, 128, 3)")],
)
def test_wrong_size_png_and_jpeg(suffix, side, shape):
    data = encoded(random_slice(0, shape=(side, side, 3)), suffix)
    body, content_type = multipart_body([("file", f"slice{suffix}", data)])
    request = raw_request(body, {"content-type": content_type, "content-length": str(len(body))})

    assert_rejected(request, 422, "invalid_slice", f"'slice{suffix}': expected shape (256, 256, 3), got {shape}")


def test_png_declaring_huge_size():
    request = raw_request(png_declaring(HUGE_SIDE, HUGE_SIDE))

    assert_rejected(request, 422, "invalid_slice", "'bomb.png': cannot read the PNG header (Image size (10000000000 pixels) exceeds limit", filename="bomb.png")


def test_tiff_declaring_huge_size():
    data = tiff_declaring(HUGE_SIDE, HUGE_SIDE, np.zeros((4, 4, 3), dtype=np.uint8))

    assert_rejected(raw_request(data), 422, "invalid_slice", "TIFF declares shape (100000, 100000, 3), over the limit")


def test_truncated_tiff():
    data = good_slice_tiff()

    assert_rejected(raw_request(data[: len(data) // 2]), 422, "invalid_slice", "cannot decode TIFF", filename="cut.tif")


def test_two_file_parts():
    body, content_type = multipart_body([("file", "a.tif", b"II*\x00"), ("file", "b.tif", b"II*\x00")])
    request = raw_request(body, {"content-type": content_type, "content-length": str(len(body))})

    assert_rejected(request, 400, "invalid_multipart", "cannot parse the multipart body")
