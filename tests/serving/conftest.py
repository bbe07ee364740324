"""Fixtures for the HTTP service tests: tiny untrained models, real slices, and one running service.

The service is started once for all tests in this folder and shut down after the last of them, so
the CPU its replica reserves is free again for the test folders that follow.
"""

import socket
from pathlib import Path

import pytest

REAL_PATIENT = "TCGA_CS_4942_19970222"
REAL_TUMOUR_SLICE = 12  # 1,383 tumour pixels in its mask
REAL_EMPTY_SLICE = 3  # an empty mask
TEST_MAX_BODY_BYTES = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="package")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    """An untrained segmenter and classifier at 32x32 inside, saved as training saves them."""
    from braintumor.models.classification import build_classifier
    from braintumor.models.io import ModelInfo, save_model
    from braintumor.models.segmentation import build_segmenter
    from braintumor.preprocessing.normalization import NORMALIZATION

    folder = tmp_path_factory.mktemp("serving_models")
    segmenter = save_model(
        build_segmenter(input_size=32, base_filters=4, depth=2),
        ModelInfo(task="segment", architecture="unet", normalization=NORMALIZATION, input_size=32, version="tiny-segmenter-1"),
        folder / "segmenter",
    )
    classifier = save_model(
        build_classifier("smallcnn", input_size=32, base_filters=4),
        ModelInfo(task="classify", architecture="smallcnn", normalization=NORMALIZATION, input_size=32, version="tiny-classifier-1"),
        folder / "classifier",
    )
    return segmenter, classifier


@pytest.fixture(scope="package")
def real_slice_path(lgg_root) -> Path:
    """A real slice of the shared dataset with a tumour in its mask."""
    path = lgg_root / REAL_PATIENT / f"{REAL_PATIENT}_{REAL_TUMOUR_SLICE}.tif"
    if not path.is_file():
        pytest.skip(f"real slice {path} not found in the LGG dataset")
    return path


@pytest.fixture(scope="package")
def real_slice_paths(lgg_root) -> list[Path]:
    """All 20 slices of one real patient, with and without tumour."""
    paths = sorted((lgg_root / REAL_PATIENT).glob(f"{REAL_PATIENT}_*[0-9].tif"))
    if not paths:
        pytest.skip(f"patient {REAL_PATIENT} not found in the LGG dataset")
    return paths


@pytest.fixture(scope="package")
def service_url(ray_local, tiny_models) -> str:
    """Base URL of the service with batching on (4 slices, 10 ms), on a free port of 127.0.0.1."""
    from ray import serve

    from braintumor.serving.app import start_service
    from braintumor.serving.config import ServiceConfig

    segmenter, classifier = tiny_models
    config = ServiceConfig(
        segmenter=str(segmenter),
        classifier=str(classifier),
        batching=True,
        max_batch_size=4,
        batch_wait_ms=10,
        max_body_bytes=TEST_MAX_BODY_BYTES,
        cpus_per_replica=0.5,
    )
    url = start_service(config, host="127.0.0.1", port=free_port())
    yield url
    serve.shutdown()
