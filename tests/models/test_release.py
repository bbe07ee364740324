"""Release copies of tiny models, into a temporary folder in place of the package's."""

import json

import numpy as np
import pytest

import braintumor.models.release as release
from braintumor.models.classification import build_classifier
from braintumor.models.io import INFO_FILE, MODEL_FILE, ModelInfo, load_model, save_model
from braintumor.models.release import release_models
from braintumor.models.segmentation import build_segmenter
from braintumor.preprocessing.normalization import NORMALIZATION


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    segmenter = save_model(
        build_segmenter("unet", input_size=32, base_filters=4, depth=2),
        ModelInfo(task="segment", architecture="unet", normalization=NORMALIZATION, input_size=32, version="seg"),
        root / "segmenter",
    )
    (segmenter / "tuning.json").write_text("{}")
    classifier = save_model(
        build_classifier("smallcnn", input_size=32, base_filters=4),
        ModelInfo(task="classify", architecture="smallcnn", normalization=NORMALIZATION, input_size=32, version="cls"),
        root / "classifier",
    )
    return {"segmenter": segmenter, "classifier": classifier}


def test_release_copies_both_models(sources, tmp_path):
    released = release_models(sources, tmp_path)

    assert released == {"segmenter": tmp_path / "segmenter", "classifier": tmp_path / "classifier"}
    assert sorted(path.name for path in (tmp_path / "segmenter").iterdir()) == [MODEL_FILE, INFO_FILE, "tuning.json"]
    assert (tmp_path / "classifier" / MODEL_FILE).read_bytes() == (sources["classifier"] / MODEL_FILE).read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["classifier", "segmenter"]


def test_release_float16_classifier(sources, tmp_path):
    release_models(sources, tmp_path, float16_roles=("classifier",))

    info = json.loads((tmp_path / "classifier" / INFO_FILE).read_text())
    assert info["extra"] == {"stored_weights": "float16"}
    assert "stored_weights" not in json.loads((tmp_path / "segmenter" / INFO_FILE).read_text())["extra"]
    released, _ = load_model(tmp_path / "classifier")
    trained, _ = load_model(sources["classifier"])
    slices = np.random.default_rng(0).standard_normal((4, 256, 256, 3)).astype(np.float32)
    np.testing.assert_allclose(released.predict(slices, verbose=0), trained.predict(slices, verbose=0), atol=1e-2)


def test_release_over_limit_keeps_old_models(sources, tmp_path, monkeypatch):
    (tmp_path / "segmenter").mkdir()
    (tmp_path / "segmenter" / "old").write_text("previous release")
    monkeypatch.setattr(release, "MAX_RELEASE_BYTES", 1000)

    with pytest.raises(ValueError, match="more than the 0 MiB release limit"):
        release_models(sources, tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["segmenter"]
    assert (tmp_path / "segmenter" / "old").read_text() == "previous release"


def test_release_unknown_role(sources, tmp_path):
    with pytest.raises(ValueError, match=r"invalid model role\(s\) \['detector'\]"):
        release_models(sources, tmp_path, float16_roles=("detector",))

    assert list(tmp_path.iterdir()) == []
