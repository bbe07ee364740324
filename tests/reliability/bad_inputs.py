"""The bad-input corpus: every file, member and body is generated here, in memory or under tmp_path.

Each kind has a name, the bytes that make it, and the words its error must contain. The tests feed
the same bytes to every place where such a file enters the system (index, preprocessing, scoring,
serving), so one table states what each entry point must do with it.
"""

import io
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile
from starlette.requests import Request

from braintumor.data.io import MAX_CHANNELS, MAX_PIXELS

SLICE = (256, 256, 3)
HUGE_SIDE = 100_000  # 10^10 pixels: decoding that would need 30 GB


@dataclass(frozen=True)
class BadFile:
    """One kind of bad slice or mask file: its file name, its bytes, and the words its error must contain."""

    kind: str
    name: str
    data: bytes
    reason: str


def random_slice(seed: int = 0, shape: tuple[int, ...] = SLICE, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(dtype)


def tiff_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    photometric = "rgb" if array.ndim == 3 and array.shape[2] in (3, 4) and "planarconfig" not in options else "minisblack"
    tifffile.imwrite(buffer, array, photometric=options.pop("photometric", photometric), **options)
    return buffer.getvalue()


def encoded(array: np.ndarray, suffix: str) -> bytes:
    ok, data = cv2.imencode(suffix, array)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {array.shape} {array.dtype} array as {suffix}")
    return data.tobytes()


def good_slice_tiff(seed: int = 0) -> bytes:
    return tiff_bytes(random_slice(seed))


def good_mask_tiff(tumour: bool = True) -> bytes:
    mask = np.zeros(SLICE[:2], dtype=np.uint8)
    if tumour:
        mask[100:110, 120:130] = 255
    return tiff_bytes(mask)


def tiff_declaring(width: int, height: int, array: np.ndarray, **options) -> bytes:
    """Return a TIFF of `array` whose ImageWidth and ImageLength tags claim `width` x `height`."""
    data = bytearray(tiff_bytes(array, **options))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        byteorder = tif.byteorder
        for code, value in ((256, width), (257, height)):
            tag = tif.pages[0].tags[code]
            if tag.dtype != 4:  # LONG, stored inside the tag entry
                raise RuntimeError(f"tifffile wrote tag {code} as type {tag.dtype}; this helper patches LONG tags only")
            data[tag.valueoffset : tag.valueoffset + 4] = struct.pack(byteorder + "I", value)
    return bytes(data)


def png_declaring(width: int, height: int) -> bytes:
    """Return a small PNG whose IHDR chunk claims `width` x `height`, with a valid chunk CRC."""
    data = bytearray(encoded(np.zeros((4, 4, 3), dtype=np.uint8), ".png"))
    # Signature (8 bytes), then IHDR: length (4), type (4), width (4), height (4), 5 more bytes, CRC (4).
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """Return a small JPEG whose start-of-frame segment claims `width` x `height`."""
    data = bytearray(encoded(np.zeros((8, 8, 3), dtype=np.uint8), ".jpg"))
    frame = data.index(b"\xff\xc0")  # baseline SOF0: marker, length (2), precision (1), height (2), width (2)
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def slice_kinds() -> list[BadFile]:
    """Bad slice files, each rejected by `read_slice`/`decode_slice` with the words in `reason`."""
    uncompressed = good_slice_tiff(seed=1)
    rgb = random_slice(2)
    return [
        BadFile("zero-byte TIFF", "empty_1.tif", b"", "file is empty (0 bytes)"),
        BadFile("truncated TIFF", "truncated_2.tif", uncompressed[: len(uncompressed) // 2], "cannot decode TIFF"),
        BadFile(
            "TIFF declaring 100000x100000 pixels",
            "huge_3.tif",
            tiff_declaring(HUGE_SIDE, HUGE_SIDE, np.zeros((4, 4, 3), dtype=np.uint8)),
            f"over the limit of {MAX_PIXELS} pixels",
        ),
        BadFile(
            "TIFF declaring 4096x4096 pixels of 8 samples",
            "deep_4.tif",
            tiff_declaring(4096, 4096, np.zeros((4, 4, 8), dtype=np.uint8), planarconfig="contig"),
            f"over the limit of {MAX_PIXELS * MAX_CHANNELS} values",
        ),
        BadFile("16-bit TIFF", "uint16_5.tif", tiff_bytes(random_slice(3, dtype=np.uint16) * 257), "expected 8-bit unsigned pixels (uint8), got uint16"),
        BadFile("float TIFF", "float_6.tif", tiff_bytes(random_slice(4, dtype=np.float32) / 255), "expected 8-bit unsigned pixels (uint8), got float32"),
        BadFile("1-channel TIFF", "grey_7.tif", tiff_bytes(rgb[..., 1]), "expected 3 channels (H, W, 3), got shape (256, 256)"),
        BadFile("4-channel TIFF", "rgba_8.tif", tiff_bytes(np.dstack([rgb, rgb[..., :1]])), "expected 3 channels (H, W, 3), got shape (256, 256, 4)"),
        BadFile(
            "channel-first (planar) TIFF",
            "planar_9.tif",
            tiff_bytes(np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"),
            "expected 3 channels (H, W, 3), got shape (3, 256, 256)",
        ),
        BadFile("128x128 TIFF", "small_10.tif", tiff_bytes(rgb[::2, ::2]), "expected shape (256, 256, 3), got (128, 128, 3)"),
        BadFile("text file named .tif", "notes_11.tif", b"patient notes, not an image\n", "cannot decode TIFF (TiffFileError"),
        BadFile("TIFF header without image", "header_12.tif", b"II*\x00" + b"\x00" * 12, "TIFF contains no image"),
        BadFile("512x512 PNG", "large_13.png", encoded(cv2.resize(rgb, (512, 512)), ".png"), "expected shape (256, 256, 3), got (512, 512, 3)"),
        BadFile("128x128 JPEG", "small_14.jpg", encoded(rgb[::2, ::2], ".jpg"), "expected shape (256, 256, 3), got (128, 128, 3)"),
        BadFile("PNG declaring 100000x100000 pixels", "huge_15.png", png_declaring(HUGE_SIDE, HUGE_SIDE), f"the image declares more than {MAX_PIXELS} pixels"),
        BadFile("JPEG declaring 5000x5000 pixels", "huge_16.jpg", jpeg_declaring(5000, 5000), f"declares 5000x5000 pixels, over the limit of {MAX_PIXELS} pixels"),
        BadFile("PNG signature then garbage", "garbage_17.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not a readable PNG or JPEG image"),
        BadFile("16-bit PNG", "uint16_18.png", encoded(random_slice(5, dtype=np.uint16) * 257, ".png"), "expected 8-bit unsigned pixels (uint8), got uint16"),
        BadFile("greyscale JPEG", "grey_19.jpg", encoded(rgb[..., 0], ".jpg"), "expected 3 channels (H, W, 3), got shape (256, 256)"),
        BadFile("text file named .jpg", "notes_20.jpg", b"neither is this\n", "not a readable PNG or JPEG image"),
        BadFile("unsupported file type", "bitmap_21.bmp", encoded(rgb, ".bmp"), "unsupported file type '.bmp'"),
    ]


def mask_kinds() -> list[BadFile]:
    """Bad mask files, each rejected by `read_mask` with the words in `reason`."""
    values_0_1 = np.zeros(SLICE[:2], dtype=np.uint8)
    values_0_1[100:110, 120:130] = 1
    colour = np.zeros(SLICE, dtype=np.uint8)
    colour[100:110, 120:130, 1] = 255
    return [
        BadFile("zero-byte mask", "P_1_mask.tif", b"", "file is empty (0 bytes)"),
        BadFile("128x128 mask", "P_2_mask.tif", tiff_bytes(np.zeros((128, 128), dtype=np.uint8)), "expected mask shape (256, 256), got (128, 128)"),
        BadFile("mask with values 0 and 1", "P_3_mask.tif", tiff_bytes(values_0_1), "expected mask values 0 and 255, found 0, 1"),
        BadFile("16-bit mask", "P_4_mask.tif", tiff_bytes(np.zeros(SLICE[:2], dtype=np.uint16)), "expected 8-bit unsigned pixels (uint8), got uint16"),
        BadFile("colour mask", "P_5_mask.tif", tiff_bytes(colour), "expected a single-channel mask (H, W), got shape (256, 256, 3)"),
    ]


def zip_archive(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    """Write a zip archive of `members`, plus members that Unix unzip tools restore as symbolic links."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix, so the high bits of external_attr are the file mode
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)
    return path


def tar_archive(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    """Write a gzip-compressed tar archive of `members` and of symbolic-link members."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return path


def nested_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inner/inner_1.tif", good_slice_tiff())
    return buffer.getvalue()


# Archive members that listing rejects by name or type, and the words of the reason. Member names
# are as written to the archive.
UNSAFE_MEMBERS = {
    "../../x_1.tif": "unsafe member name: name contains a '..' component",
    "/abs/x_2.tif": "unsafe member name: absolute name",
    "BAD/inner.zip": "nested archive, not opened",
}
SYMLINK_MEMBERS = {"BAD/link_3.tif": "/etc/passwd"}
SYMLINK_REASON = "symbolic link member"


def multipart_body(fields: list[tuple[str, str | None, bytes]], boundary: str = "reliability-boundary") -> tuple[bytes, str]:
    """Return a multipart/form-data body of (field name, file name or None, content) and its Content-Type."""
    parts = []
    for field_name, file_name, content in fields:
        disposition = f'form-data; name="{field_name}"' + (f'; filename="{file_name}"' if file_name else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def raw_request(body: bytes | list[bytes], headers: dict[str, str] | None = None) -> Request:
    """Return a POST request whose body arrives as the given chunks, as the ASGI server would pass it.

    A list of chunks without a Content-Length header is how a chunked upload arrives.
    """
    chunks = list(body) if isinstance(body, list) else [body]
    if headers is None:
        headers = {"content-type": "application/octet-stream", "content-length": str(len(chunks[0]))}

    async def receive():
        data = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": data, "more_body": bool(chunks)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "query_string": b"",
        "headers": [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()],
    }
    return Request(scope, receive)


def write_files(folder: Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Write each named file under `folder` and return their paths by name."""
    paths = {}
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[name] = path
    return paths


def write_index_csv(path: Path, rows: list[tuple[str, str, str, int]]) -> Path:
    """Write an index CSV of (patient_id, image_path, mask_path, mask) rows."""
    pd.DataFrame(rows, columns=["patient_id", "image_path", "mask_path", "mask"]).to_csv(path, index=False)
    return path
