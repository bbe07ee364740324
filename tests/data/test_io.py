import io
import struct

import cv2
import numpy as np
import pytest
import tifffile

from braintumor.data.io import MAX_PIXELS, SliceReadError, decode_slice, read_mask, read_slice

REAL_PATIENT = "TCGA_CS_4942_19970222"
REAL_SLICE = 10  # has tumour pixels in its mask


def _tiff_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    photometric = "rgb" if array.ndim == 3 and array.shape[2] in (3, 4) else "minisblack"
    tifffile.imwrite(buffer, array, photometric=photometric)
    return buffer.getvalue()


def _random_slice(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)


@pytest.fixture
def real_pair(lgg_root):
    folder = lgg_root / REAL_PATIENT
    return folder / f"{REAL_PATIENT}_{REAL_SLICE}.tif", folder / f"{REAL_PATIENT}_{REAL_SLICE}_mask.tif"


# Real files, compressed and uncompressed.


def test_real_slice_shape_and_dtype(real_pair):
    image = read_slice(real_pair[0])

    assert image.shape == (256, 256, 3)
    assert image.dtype == np.uint8


def test_real_mask_bool_with_tumour(real_pair):
    mask = read_mask(real_pair[1])

    assert mask.shape == (256, 256)
    assert mask.dtype == bool
    assert mask.any()


def test_real_files_are_compressed(real_pair):
    # The other tests on real files rely on the shared copies being WebP (images) and deflate (masks).
    with tifffile.TiffFile(real_pair[0]) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.WEBP
    with tifffile.TiffFile(real_pair[1]) as tif:
        assert tif.pages[0].compression != tifffile.COMPRESSION.NONE


def test_uncompressed_copy_reads_identically(real_pair, tmp_path):
    image_path, mask_path = real_pair
    image = read_slice(image_path)
    mask = read_mask(mask_path)
    image_copy = tmp_path / "copy.tif"
    mask_copy = tmp_path / "copy_mask.tif"
    tifffile.imwrite(image_copy, tifffile.imread(image_path), photometric="rgb", compression=None)
    tifffile.imwrite(mask_copy, tifffile.imread(mask_path), compression=None)

    with tifffile.TiffFile(image_copy) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.NONE
    np.testing.assert_array_equal(read_slice(image_copy), image)
    np.testing.assert_array_equal(read_mask(mask_copy), mask)


def test_decode_slice_matches_read_slice(real_pair):
    image_path = real_pair[0]

    decoded = decode_slice(image_path.read_bytes(), image_path.name)

    np.testing.assert_array_equal(decoded, read_slice(image_path))


def test_decode_slice_tiff_without_suffix():
    # The TIFF magic bytes pick the decoder when the name has no known suffix.
    image = _random_slice()

    np.testing.assert_array_equal(decode_slice(_tiff_bytes(image), "upload"), image)


# PNG and JPEG.


def test_png_slice_read_as_rgb(tmp_path):
    image = _random_slice()
    path = tmp_path / "slice.png"
    # OpenCV writes BGR, so the file's red channel is image[..., 0].
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    np.testing.assert_array_equal(read_slice(path), image)


def test_jpeg_slice_read_as_rgb(tmp_path):
    # Flat channels survive JPEG's lossy coding within a few grey levels.
    image = np.empty((256, 256, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 200, 100, 30
    path = tmp_path / "slice.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])

    decoded = read_slice(path)

    assert decoded.shape == (256, 256, 3)
    assert abs(int(decoded[..., 0].mean()) - 200) <= 2
    assert abs(int(decoded[..., 1].mean()) - 100) <= 2
    assert abs(int(decoded[..., 2].mean()) - 30) <= 2


def test_decode_slice_png_bytes():
    image = _random_slice()
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok

    np.testing.assert_array_equal(decode_slice(encoded.tobytes(), "upload.png"), image)


def test_png_mask(tmp_path):
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[10:20, 30:40] = 255
    path = tmp_path / "mask.png"
    assert cv2.imwrite(str(path), mask)

    np.testing.assert_array_equal(read_mask(path), mask == 255)


def test_mask_three_equal_channels_accepted(tmp_path):
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[0:5, 0:5] = 255
    path = tmp_path / "mask_rgb.tif"
    tifffile.imwrite(path, np.repeat(mask[..., None], 3, axis=2), photometric="rgb")

    np.testing.assert_array_equal(read_mask(path), mask == 255)


# Files that are rejected, each with its reason.


def test_file_not_found(tmp_path):
    path = tmp_path / "missing.tif"

    with pytest.raises(SliceReadError, match="missing.tif: file not found"):
        read_slice(path)
    with pytest.raises(SliceReadError, match="file not found"):
        read_mask(path)


def test_error_carries_path_and_reason(tmp_path):
    path = tmp_path / "missing.tif"

    with pytest.raises(SliceReadError) as caught:
        read_slice(path)

    assert caught.value.path == str(path)
    assert caught.value.reason == "file not found"


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.tif"
    path.write_bytes(b"")

    with pytest.raises(SliceReadError, match=r"file is empty \(0 bytes\)"):
        read_slice(path)


def test_decode_slice_empty_bytes():
    with pytest.raises(SliceReadError, match=r"upload.tif: file is empty \(0 bytes\)"):
        decode_slice(b"", "upload.tif")


def test_truncated_compressed_tiff(real_pair, tmp_path):
    data = real_pair[0].read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(SliceReadError, match="truncated.tif: cannot decode TIFF"):
        read_slice(path)


def test_truncated_uncompressed_tiff(tmp_path):
    data = _tiff_bytes(_random_slice())
    path = tmp_path / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(SliceReadError, match="cannot decode TIFF"):
        read_slice(path)


def test_text_file_named_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("patient notes, not an image\n")

    with pytest.raises(SliceReadError, match=r"notes.tif: cannot decode TIFF \(TiffFileError"):
        read_slice(path)


def test_tiff_header_without_image(tmp_path):
    path = tmp_path / "header_only.tif"
    path.write_bytes(b"II*\x00" + b"\x00" * 12)

    with pytest.raises(SliceReadError, match="header_only.tif: TIFF contains no image"):
        read_slice(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "slice.bmp"
    path.write_bytes(b"BM not really a bitmap")

    with pytest.raises(SliceReadError, match="unsupported file type '.bmp'"):
        read_slice(path)


def test_garbage_png(tmp_path):
    path = tmp_path / "slice.png"
    path.write_bytes(b"\x89PNG but nothing after it")

    with pytest.raises(SliceReadError, match="not a readable PNG or JPEG image"):
        read_slice(path)


def test_wrong_size(tmp_path):
    path = tmp_path / "small.tif"
    path.write_bytes(_tiff_bytes(np.zeros((128, 128, 3), dtype=np.uint8)))

    with pytest.raises(SliceReadError, match=r"expected shape \(256, 256, 3\), got \(128, 128, 3\)"):
        read_slice(path)


def test_one_channel_slice(tmp_path):
    path = tmp_path / "grey.tif"
    path.write_bytes(_tiff_bytes(np.zeros((256, 256), dtype=np.uint8)))

    with pytest.raises(SliceReadError, match=r"expected 3 channels \(H, W, 3\), got shape \(256, 256\)"):
        read_slice(path)


def test_four_channel_slice(tmp_path):
    path = tmp_path / "rgba.tif"
    path.write_bytes(_tiff_bytes(np.zeros((256, 256, 4), dtype=np.uint8)))

    with pytest.raises(SliceReadError, match=r"expected 3 channels \(H, W, 3\), got shape \(256, 256, 4\)"):
        read_slice(path)


def test_four_channel_png(tmp_path):
    path = tmp_path / "rgba.png"
    assert cv2.imwrite(str(path), np.zeros((256, 256, 4), dtype=np.uint8))

    with pytest.raises(SliceReadError, match=r"got shape \(256, 256, 4\)"):
        read_slice(path)


def test_sixteen_bit_slice(tmp_path):
    path = tmp_path / "deep.tif"
    path.write_bytes(_tiff_bytes(np.zeros((256, 256, 3), dtype=np.uint16)))

    with pytest.raises(SliceReadError, match=r"expected 8-bit unsigned pixels \(uint8\), got uint16"):
        read_slice(path)


def test_float_slice(tmp_path):
    path = tmp_path / "float.tif"
    path.write_bytes(_tiff_bytes(np.zeros((256, 256, 3), dtype=np.float32)))

    with pytest.raises(SliceReadError, match=r"expected 8-bit unsigned pixels \(uint8\), got float32"):
        read_slice(path)


def test_mask_values_other_than_0_255(tmp_path):
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[0, 0] = 1
    path = tmp_path / "ones_mask.tif"
    path.write_bytes(_tiff_bytes(mask))

    with pytest.raises(SliceReadError, match="expected mask values 0 and 255, found 0, 1"):
        read_mask(path)


def test_mask_wrong_size(tmp_path):
    path = tmp_path / "small_mask.tif"
    path.write_bytes(_tiff_bytes(np.zeros((128, 128), dtype=np.uint8)))

    with pytest.raises(SliceReadError, match=r"expected mask shape \(256, 256\), got \(128, 128\)"):
        read_mask(path)


def test_mask_with_different_channels(tmp_path):
    mask = np.zeros((256, 256, 3), dtype=np.uint8)
    mask[0, 0, 1] = 255
    path = tmp_path / "colour_mask.tif"
    path.write_bytes(_tiff_bytes(mask))

    with pytest.raises(SliceReadError, match=r"expected a single-channel mask \(H, W\), got shape \(256, 256, 3\)"):
        read_mask(path)


def test_huge_tiff_header_rejected_before_decoding(tmp_path, monkeypatch):
    # A 4x4 TIFF whose ImageWidth and ImageLength tags are patched to 100000: the file is tiny,
    # but decoding what it declares would allocate 30 GB.
    data = bytearray(_tiff_bytes(np.zeros((4, 4, 3), dtype=np.uint8)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        byteorder = tif.byteorder
        for code in (256, 257):  # ImageWidth, ImageLength
            tag = tif.pages[0].tags[code]
            assert tag.dtype == 4  # LONG, stored in the tag itself
            data[tag.valueoffset : tag.valueoffset + 4] = struct.pack(byteorder + "I", 100000)
    path = tmp_path / "huge.tif"
    path.write_bytes(bytes(data))

    def fail_asarray(*args, **kwargs):
        raise AssertionError("the huge TIFF was decoded")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", fail_asarray)

    with pytest.raises(SliceReadError, match=rf"TIFF declares shape \(100000, 100000, 3\), over the limit of {MAX_PIXELS} pixels"):
        read_slice(path)
    with pytest.raises(SliceReadError, match="over the limit"):
        decode_slice(bytes(data), "huge.tif")
