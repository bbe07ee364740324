"""The HTTP service end to end: Ray Serve on 127.0.0.1 with tiny models, called over HTTP."""

import base64
import io

import cv2
import numpy as np
import pytest
import requests
import tifffile

from braintumor.data.io import read_slice
from braintumor.preprocessing.normalization import NORMALIZATION
from braintumor.serving.loadtest import Payload, run_load_test

from .conftest import REAL_EMPTY_SLICE, REAL_PATIENT, TEST_MAX_BODY_BYTES

TIMEOUT = 60


@pytest.fixture(scope="module")
def local_predictor(tiny_models):
    """The same models loaded in the test process, to check that the service returns what the library computes."""
    from braintumor.inference import SlicePredictor

    return SlicePredictor(*tiny_models)


@pytest.fixture(scope="module")
def real_slice(real_slice_path) -> np.ndarray:
    return read_slice(real_slice_path)


def _png_bytes(image: np.ndarray) -> bytes:
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def _jpeg_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return encoded.tobytes()


def _tiff_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    photometric = "rgb" if image.ndim == 3 and image.shape[2] == 3 else "minisblack"
    tifffile.imwrite(buffer, image, photometric=photometric)
    return buffer.getvalue()


def _decode_png(encoded: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(base64.b64decode(encoded), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "the response's PNG does not decode"
    return image


def _post_raw(url: str, body: bytes, content_type: str = "application/octet-stream", params=None) -> requests.Response:
    return requests.post(f"{url}/predict", data=body, headers={"Content-Type": content_type}, params=params, timeout=TIMEOUT)


def _post_file(url: str, filename: str, body: bytes, params=None) -> requests.Response:
    return requests.post(f"{url}/predict", files={"file": (filename, body)}, params=params, timeout=TIMEOUT)


# Predictions.


def test_predict_raw_tiff_body(service_url, real_slice_path, real_slice, local_predictor):
    response = _post_raw(service_url, real_slice_path.read_bytes(), "image/tiff", params={"filename": real_slice_path.name})

    assert response.status_code == 200, response.text
    body = response.json()
    expected = local_predictor.predict(real_slice[None])
    assert body["filename"] == real_slice_path.name
    assert body["format"] == "tiff"
    assert body["probability"] == pytest.approx(float(expected.probability[0]), abs=1e-5)
    assert body["label"] == int(expected.label[0])
    assert body["label_name"] == ("tumour" if expected.label[0] else "no tumour")
    assert body["probability_from"] == "classifier"
    assert body["tumour_area_pixels"] == int(expected.area[0])
    assert body["tumour_area_fraction"] == pytest.approx(expected.area[0] / 65536, abs=1e-6)


def test_predict_mask_png_matches_area(service_url, real_slice_path, real_slice, local_predictor):
    body = _post_raw(service_url, real_slice_path.read_bytes(), "image/tiff").json()

    mask = _decode_png(body["mask_png"])
    assert mask.shape == (256, 256)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert int((mask == 255).sum()) == body["tumour_area_pixels"]
    np.testing.assert_array_equal(mask == 255, local_predictor.predict(real_slice[None]).masks[0])
    assert "overlay_png" not in body


def test_predict_reports_models_normalisation_timings(service_url, real_slice_path):
    body = _post_raw(service_url, real_slice_path.read_bytes(), "image/tiff").json()

    assert body["models"]["segmenter"]["version"] == "tiny-segmenter-1"
    assert body["models"]["classifier"]["version"] == "tiny-classifier-1"
    assert body["models"]["segmenter"]["architecture"] == "unet"
    assert body["normalization"]["scheme"] == NORMALIZATION
    assert body["normalization"]["same_as_training"] is True
    assert body["normalization"]["statistics_from"] == "this slice alone"
    assert set(body["timings_ms"]) == {"read_and_decode", "queue", "model", "encode", "total"}
    assert all(value >= 0 for value in body["timings_ms"].values())
    assert body["timings_ms"]["total"] >= body["timings_ms"]["model"]
    assert 1 <= body["batch_size"] <= 4


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_predict_multipart_each_format(service_url, real_slice, local_predictor, suffix):
    encoders = {".tif": _tiff_bytes, ".png": _png_bytes, ".jpg": _jpeg_bytes}
    data = encoders[suffix](real_slice)

    response = _post_file(service_url, f"slice{suffix}", data)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == f"slice{suffix}"
    assert body["format"] == {".tif": "tiff", ".png": "png", ".jpg": "jpeg"}[suffix]
    assert 0.0 <= body["probability"] <= 1.0
    if suffix != ".jpg":  # TIFF and PNG are lossless, so the slice and its scores are the same
        expected = local_predictor.predict(real_slice[None])
        assert body["probability"] == pytest.approx(float(expected.probability[0]), abs=1e-5)
        assert body["tumour_area_pixels"] == int(expected.area[0])


def test_predict_raw_png_named_by_query(service_url, real_slice):
    response = _post_raw(service_url, _png_bytes(real_slice), "image/png", params={"filename": "from-viewer.png"})

    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "from-viewer.png"
    assert response.json()["format"] == "png"


def test_predict_format_from_bytes_not_name(service_url, real_slice):
    response = _post_file(service_url, "export.bin", _png_bytes(real_slice))

    assert response.status_code == 200, response.text
    assert response.json()["format"] == "png"


def test_predict_overlay_option(service_url, real_slice_path, real_slice):
    response = _post_raw(service_url, real_slice_path.read_bytes(), "image/tiff", params={"overlay": "true"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert "mask_png" not in body
    overlay = cv2.cvtColor(_decode_png(body["overlay_png"]), cv2.COLOR_BGR2RGB)
    assert overlay.shape == (256, 256, 3)
    grey = (overlay[..., 0] == overlay[..., 1]) & (overlay[..., 1] == overlay[..., 2])
    # Grey pixels are the FLAIR channel unchanged; every predicted tumour pixel is tinted or outlined in red.
    np.testing.assert_array_equal(overlay[grey][:, 0], real_slice[..., 1][grey])
    assert int((~grey).sum()) == body["tumour_area_pixels"]
    assert (overlay[~grey][:, 0] >= overlay[~grey][:, 1]).all()


def test_predict_empty_slice_scored(service_url, lgg_root):
    path = lgg_root / REAL_PATIENT / f"{REAL_PATIENT}_{REAL_EMPTY_SLICE}.tif"

    response = _post_file(service_url, path.name, path.read_bytes())

    assert response.status_code == 200, response.text
    assert response.json()["label"] in (0, 1)


# Health, version, page.


def test_health(service_url):
    response = requests.get(f"{service_url}/health", timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["replica"]


def test_version(service_url):
    import ray

    import braintumor

    body = requests.get(f"{service_url}/version", timeout=TIMEOUT).json()

    assert body["version"] == braintumor.__version__
    assert body["ray"] == ray.__version__
    assert body["normalization"] == NORMALIZATION
    assert body["models"]["segmenter"]["version"] == "tiny-segmenter-1"
    assert body["models"]["classifier"]["version"] == "tiny-classifier-1"
    assert body["batching"] == {"enabled": True, "max_batch_size": 4, "batch_wait_ms": 10.0}
    assert body["max_body_bytes"] == TEST_MAX_BODY_BYTES


def test_page_served(service_url):
    response = requests.get(f"{service_url}/", timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="slice-input"' in response.text
    assert "predict?overlay=true" in response.text


# Bad requests: each gets a 4xx JSON error that names the problem.


def _bad_requests(real_slice: np.ndarray) -> list[tuple[str, dict, int, str, str]]:
    """(case, requests.post keyword arguments, status, error code, part of the message)."""
    corrupt_png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    corrupt_tiff = b"II*\x00" + b"\xff" * 64
    sixteen_bit = (real_slice.astype(np.uint16) * 257)
    bomb = np.zeros((4200, 4200), dtype=np.uint8)  # 17.6 million pixels, a few kB as PNG
    octet = {"Content-Type": "application/octet-stream"}
    return [
        ("empty raw body", {"data": b"", "headers": octet}, 400, "empty_body", "is empty (0 bytes)"),
        ("empty file part", {"files": {"file": ("empty.tif", b"")}}, 400, "empty_body", "'empty.tif' is empty"),
        ("form without file", {"files": {"note": (None, "no file")}}, 400, "missing_file", "no file part"),
        ("text body", {"data": b"hello, this is not an image", "headers": octet}, 415, "unsupported_media_type", "not a TIFF, PNG or JPEG image"),
        ("text file part", {"files": {"file": ("notes.tif", b"just text")}}, 415, "unsupported_media_type", "'notes.tif' is not a TIFF, PNG or JPEG"),
        ("corrupt PNG", {"data": corrupt_png, "headers": octet}, 422, "invalid_slice", "cannot read the PNG header"),
        ("corrupt TIFF", {"data": corrupt_tiff, "headers": octet}, 422, "invalid_slice", "TIFF"),
        ("1-channel PNG", {"data": _png_bytes(real_slice[..., 1]), "headers": octet}, 422, "invalid_slice", "expected 3 channels (H, W, 3), got shape (256, 256)"),
        ("4-channel PNG", {"data": _png_bytes(np.dstack([real_slice, real_slice[..., :1]])), "headers": octet}, 422, "invalid_slice", "expected 3 channels (H, W, 3), got shape (256, 256, 4)"),
        ("1-channel TIFF", {"files": {"file": ("flair.tif", _tiff_bytes(real_slice[..., 1]))}}, 422, "invalid_slice", "expected 3 channels"),
        ("16-bit PNG", {"data": _png_bytes(sixteen_bit), "headers": octet}, 422, "invalid_slice", "expected 8-bit unsigned pixels (uint8), got uint16"),
        ("16-bit TIFF", {"files": {"file": ("deep.tif", _tiff_bytes(sixteen_bit))}}, 422, "invalid_slice", "expected 8-bit unsigned pixels (uint8), got uint16"),
        ("512x512 slice", {"data": _png_bytes(cv2.resize(real_slice, (512, 512))), "headers": octet}, 422, "invalid_slice", "expected shape (256, 256, 3), got (512, 512, 3)"),
        ("128x128 TIFF", {"files": {"file": ("small.tif", _tiff_bytes(real_slice[::2, ::2]))}}, 422, "invalid_slice", "expected shape (256, 256, 3), got (128, 128, 3)"),
        ("pixel bomb PNG", {"data": _png_bytes(bomb), "headers": octet}, 422, "invalid_slice", "declares 4200x4200 pixels, over the limit"),
        ("body over the limit", {"data": b"\0" * (TEST_MAX_BODY_BYTES + 1), "headers": octet}, 413, "body_too_large", f"over the limit of {TEST_MAX_BODY_BYTES} bytes"),
        ("chunked body over the limit", {"data": iter([b"\0" * 65536] * 20), "headers": octet}, 413, "body_too_large", f"over the limit of {TEST_MAX_BODY_BYTES} bytes"),
        ("two files", {"files": [("file", ("a.tif", b"II*\x00")), ("file", ("b.tif", b"II*\x00"))]}, 400, "invalid_multipart", "cannot parse the multipart body"),
        ("overlay not a boolean", {"data": b"II*\x00", "headers": octet, "params": {"overlay": "maybe"}}, 422, "invalid_parameter", "query.overlay"),
    ]


BAD_REQUEST_CASES = [case[0] for case in _bad_requests(np.zeros((256, 256, 3), dtype=np.uint8))]


@pytest.mark.parametrize("case", BAD_REQUEST_CASES)
def test_bad_request_rejected(service_url, real_slice, case):
    [(_, arguments, status, code, message)] = [entry for entry in _bad_requests(real_slice) if entry[0] == case]

    response = requests.post(f"{service_url}/predict", timeout=TIMEOUT, **arguments)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code
    assert message in response.json()["message"]


def test_wrong_method_and_path_rejected(service_url):
    wrong_method = requests.get(f"{service_url}/predict", timeout=TIMEOUT)
    wrong_path = requests.post(f"{service_url}/score", data=b"x", timeout=TIMEOUT)

    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    assert wrong_path.status_code == 404
    assert wrong_path.json()["error"] == "not_found"


def test_service_alive_after_bad_requests(service_url, real_slice, real_slice_path):
    replica_before = requests.get(f"{service_url}/health", timeout=TIMEOUT).json()["replica"]

    statuses = [requests.post(f"{service_url}/predict", timeout=TIMEOUT, **arguments).status_code for _, arguments, *_ in _bad_requests(real_slice)]
    health = requests.get(f"{service_url}/health", timeout=TIMEOUT)
    prediction = _post_raw(service_url, real_slice_path.read_bytes(), "image/tiff")

    assert all(400 <= status < 500 for status in statuses), statuses
    assert health.status_code == 200
    assert health.json()["replica"] == replica_before, "the replica was restarted"
    assert prediction.status_code == 200, prediction.text


# Load.


def test_small_load_test_without_errors(service_url, real_slice_paths):
    payloads = [Payload(path.read_bytes(), "image/tiff") for path in real_slice_paths]

    result = run_load_test(f"{service_url}/predict", payloads, requests=100, concurrency=8, deadline_seconds=120)

    assert result.errors == []
    assert result.completed == 100
    assert not result.stopped_by_deadline
    assert max(result.batch_sizes) > 1, "no two concurrent requests shared a model call"
    assert max(result.batch_sizes) <= 4


# Batching off.


@pytest.fixture(scope="module")
def unbatched_url(service_url, tiny_models):
    """A second application with batching off, beside the first, under /unbatched."""
    from ray import serve

    from braintumor.serving.app import build_app
    from braintumor.serving.config import ServiceConfig

    segmenter, classifier = tiny_models
    config = ServiceConfig(segmenter=str(segmenter), classifier=str(classifier), batching=False, cpus_per_replica=0.5)
    serve.run(build_app(config), name="braintumor-unbatched", route_prefix="/unbatched")
    yield f"{service_url}/unbatched"
    serve.delete("braintumor-unbatched")


def test_unbatched_scores_one_slice_per_call(unbatched_url, real_slice_paths, real_slice, local_predictor):
    payloads = [Payload(path.read_bytes(), "image/tiff") for path in real_slice_paths]

    result = run_load_test(f"{unbatched_url}/predict", payloads, requests=16, concurrency=4, deadline_seconds=60)
    single = _post_raw(unbatched_url, _png_bytes(real_slice), "image/png").json()
    version = requests.get(f"{unbatched_url}/version", timeout=TIMEOUT).json()

    assert result.errors == []
    assert set(result.batch_sizes) == {1}
    assert single["probability"] == pytest.approx(float(local_predictor.predict(real_slice[None]).probability[0]), abs=1e-5)
    assert version["batching"]["enabled"] is False
