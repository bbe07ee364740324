"""Bad slice files at every entry point: the readers, the index, preprocessing and an upload."""

import asyncio
import tracemalloc

import cv2
import pytest
import tifffile
from bad_inputs import raw_request, slice_kinds, write_files, write_index_csv

from braintumor.data.index import load_index, read_index
from braintumor.data.io import SliceReadError, decode_slice, read_slice
from braintumor.preprocessing.pipeline import decode_batch
from braintumor.serving.uploads import UploadError, decode_upload, read_upload, sniff_format

KINDS = {kind.kind: kind for kind in slice_kinds()}
HUGE_KINDS = [name for name in KINDS if "declaring" in name]
# The service reads PNG and JPEG headers itself before decode_slice, with its own wording.
UPLOAD_REASONS = {
    "PNG declaring 100000x100000 pixels": "cannot read the PNG header (Image size (10000000000 pixels) exceeds limit",
    "JPEG declaring 5000x5000 pixels": "the image declares 5000x5000 pixels, over the limit",
    "PNG signature then garbage": "cannot read the PNG header",
}


@pytest.mark.parametrize("kind", KINDS)
def test_read_slice_rejects(tmp_path, kind):
    bad = KINDS[kind]
    path = tmp_path / bad.name
    path.write_bytes(bad.data)

    with pytest.raises(SliceReadError) as caught:
        read_slice(path)

    assert caught.value.path == str(path)
    assert bad.reason in caught.value.reason


@pytest.mark.parametrize("kind", KINDS)
def test_decode_slice_rejects(kind):
    bad = KINDS[kind]

    with pytest.raises(SliceReadError) as caught:
        decode_slice(bad.data, f"scans.zip!/{bad.name}")

    assert caught.value.path == f"scans.zip!/{bad.name}"
    assert bad.reason in caught.value.reason


@pytest.mark.parametrize("kind", HUGE_KINDS)
def test_huge_header_rejected_before_decoding(kind, monkeypatch):
    def fail_decoding(*args, **kwargs):
        raise AssertionError(f"the {kind} was decoded")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", fail_decoding)
    monkeypatch.setattr(cv2, "imdecode", fail_decoding)
    tracemalloc.start()

    with pytest.raises(SliceReadError, match="over the limit|declares more than"):
        decode_slice(KINDS[kind].data, KINDS[kind].name)

    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak} bytes allocated while rejecting the {kind}"


def test_index_csv_skips_each_bad_slice(tmp_path, good_pair):
    image, mask = good_pair
    bad_paths = write_files(tmp_path / "bad", {bad.name: bad.data for bad in KINDS.values()})
    rows = [("GOOD", str(image), str(mask), 1)]
    rows += [("BAD", str(path), str(mask), 1) for path in bad_paths.values()]
    csv_path = write_index_csv(tmp_path / "index.csv", rows)

    result = load_index(csv_path)

    assert result.frame["image_path"].tolist() == [str(image)]
    reasons = {item.path: item.reason for item in result.skipped}
    assert len(reasons) == len(KINDS)
    for bad in KINDS.values():
        assert bad.reason in reasons[str(bad_paths[bad.name])], bad.kind


def test_preprocessing_drops_each_bad_slice(tmp_path, good_pair):
    image, mask = good_pair
    bad_paths = write_files(tmp_path / "bad", {bad.name: bad.data for bad in KINDS.values()})
    rows = [("GOOD", str(image), str(mask), 1)] + [("BAD", str(path), str(mask), 1) for path in bad_paths.values()]
    # read_index opens no file, so every bad row reaches the Ray Data batch function.
    frame = read_index(write_index_csv(tmp_path / "index.csv", rows))

    batch = decode_batch(frame)

    assert batch["image_path"].tolist() == [str(image)]
    assert batch["image"].shape == (1, 256, 256, 3)


def _expected_upload_status(data: bytes) -> int:
    if not data:
        return 400
    try:
        sniff_format(data, "probe")
    except UploadError:
        return 415
    return 422


@pytest.mark.parametrize("kind", KINDS)
def test_upload_rejects(kind):
    bad = KINDS[kind]
    expected_status = _expected_upload_status(bad.data)

    async def upload():
        return decode_upload(await read_upload(raw_request(bad.data), max_bytes=2**20, filename=bad.name))

    with pytest.raises(UploadError) as caught:
        asyncio.run(upload())

    assert caught.value.status == expected_status
    assert bad.name in caught.value.message
    if expected_status == 422:
        assert caught.value.code == "invalid_slice"
        assert UPLOAD_REASONS.get(kind, bad.reason) in caught.value.message
