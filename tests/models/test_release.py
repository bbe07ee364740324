"""Release copies of tiny models, into a temporary folder in place of the package's."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import braintumor.models.release as release
from braintumor.models.classification import build_classifier
from braintumor.models.io import INFO_FILE, MODEL_FILE, ModelInfo, ModelLoadError, load_model, save_model
from braintumor.models.release import release_models
from braintumor.models.segmentation import build_segmenter
from braintumor.preprocessing.normalization import NORMALIZATION
from test_model_io import weight_dtypes

RELEASE_JOB = Path(__file__).resolve().parents[2] / "jobs" / "release.py"


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
    assert sorted(path.name for path in (tmp_path / "segmenter").iterdir()) == ["architecture.txt", MODEL_FILE, INFO_FILE, "tuning.json"]
    architecture = (tmp_path / "classifier" / "architecture.txt").read_text()
    assert architecture.startswith("cls: smallcnn classify model")
    assert "Total params" in architecture
    assert (tmp_path / "classifier" / MODEL_FILE).read_bytes() == (sources["classifier"] / MODEL_FILE).read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["classifier", "segmenter"]


def test_release_float16_classifier(sources, tmp_path):
    release_models(sources, tmp_path, float16_roles=("classifier",))

    info = json.loads((tmp_path / "classifier" / INFO_FILE).read_text())
    assert info["extra"] == {"stored_weights": "float16"}
    assert "stored_weights" not in json.loads((tmp_path / "segmenter" / INFO_FILE).read_text())["extra"]
    assert weight_dtypes(tmp_path / "classifier" / MODEL_FILE) == {"float16"}
    assert weight_dtypes(tmp_path / "segmenter" / MODEL_FILE) == {"float32"}
    released_bytes = (tmp_path / "classifier" / MODEL_FILE).stat().st_size
    assert released_bytes < (sources["classifier"] / MODEL_FILE).stat().st_size
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


def _write_old_release(root):
    for role in ("segmenter", "classifier"):
        (root / role).mkdir(parents=True)
        (root / role / "old").write_text(f"previous {role}")


def _copy_source(source, folder, drop=()):
    shutil.copytree(source, folder)
    for name in drop:
        (folder / name).unlink()
    return folder


@pytest.mark.parametrize("error", [OSError("rename failed"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_release_failed_rename_keeps_old_models(sources, tmp_path, monkeypatch, error):
    root = tmp_path / "release"
    _write_old_release(root)
    rename = Path.rename

    def rename_failing_for_classifier(self, target):
        if self.name == ".classifier.partial":
            raise error
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_failing_for_classifier)

    with pytest.raises(type(error)):
        release_models(sources, root)

    assert sorted(path.name for path in root.iterdir()) == ["classifier", "segmenter"]
    assert sorted(path.name for path in (root / "segmenter").iterdir()) == ["old"]
    assert (root / "segmenter" / "old").read_text() == "previous segmenter"
    assert sorted(path.name for path in (root / "classifier").iterdir()) == ["old"]
    assert (root / "classifier" / "old").read_text() == "previous classifier"


def test_release_replaces_old_models(sources, tmp_path):
    root = tmp_path / "release"
    _write_old_release(root)

    release_models(sources, root)

    assert sorted(path.name for path in root.iterdir()) == ["classifier", "segmenter"]
    assert not (root / "segmenter" / "old").exists()
    assert not (root / "classifier" / "old").exists()
    assert (root / "classifier" / MODEL_FILE).read_bytes() == (sources["classifier"] / MODEL_FILE).read_bytes()


def test_release_replaces_symlinked_folder(sources, tmp_path):
    root = tmp_path / "release"
    root.mkdir()
    linked = tmp_path / "elsewhere"
    linked.mkdir()
    (linked / "old").write_text("previous segmenter")
    (root / "segmenter").symlink_to(linked)

    release_models(sources, root)

    assert not (root / "segmenter").is_symlink()
    assert (root / "segmenter" / MODEL_FILE).is_file()
    assert (linked / "old").read_text() == "previous segmenter"
    assert sorted(path.name for path in root.iterdir()) == ["classifier", "segmenter"]


def test_release_missing_source_folder(sources, tmp_path):
    missing = tmp_path / "missing"

    with pytest.raises(ModelLoadError, match="model.keras not found") as raised:
        release_models({**sources, "segmenter": missing}, tmp_path / "release")

    assert str(raised.value).startswith(f"{missing}:")
    assert ".partial" not in str(raised.value)
    assert not (tmp_path / "release").exists()


def test_release_float16_source_without_info(sources, tmp_path):
    source = _copy_source(sources["classifier"], tmp_path / "classifier", drop=(INFO_FILE,))

    with pytest.raises(ModelLoadError, match="model_info.json is missing") as raised:
        release_models({"classifier": source}, tmp_path / "release", float16_roles=("classifier",))

    assert str(raised.value).startswith(f"{source}:")
    assert not (tmp_path / "release").exists()


@pytest.mark.parametrize("float16_roles", [(), ("classifier",)])
def test_release_copy_that_does_not_load(sources, tmp_path, float16_roles):
    source = _copy_source(sources["classifier"], tmp_path / "classifier")
    with zipfile.ZipFile(source / MODEL_FILE, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    root = tmp_path / "release"

    with pytest.raises(ModelLoadError, match="failed to load") as raised:
        release_models({**sources, "classifier": source}, root, float16_roles)

    assert str(raised.value).startswith(f"{source}:")
    assert ".partial" not in str(raised.value)
    assert list(root.iterdir()) == []


def test_release_swapped_roles(sources, tmp_path):
    swapped = {"segmenter": sources["classifier"], "classifier": sources["segmenter"]}

    expected = r"expected a segmenter model \(task 'segment'\), found task 'classify'"
    with pytest.raises(ModelLoadError, match=expected) as raised:
        release_models(swapped, tmp_path / "release")

    assert str(raised.value).startswith(f"{sources['classifier']}:")
    assert not (tmp_path / "release").exists()


def test_release_unknown_source_role(sources, tmp_path):
    with pytest.raises(ValueError, match=r"invalid model role\(s\) \['detector'\]"):
        release_models({**sources, "detector": sources["segmenter"]}, tmp_path)

    assert list(tmp_path.iterdir()) == []


def test_release_float16_role_without_folder(sources, tmp_path):
    with pytest.raises(ValueError, match=r"no model folder was given") as raised:
        release_models({"classifier": sources["classifier"]}, tmp_path, float16_roles=("segmenter",))

    assert "invalid" not in str(raised.value)
    assert "--segmenter PATH" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("location", ["s3://bucket/segmenter", Path("s3://bucket/segmenter")])
def test_release_s3_source(sources, tmp_path, location):
    with pytest.raises(ValueError, match="release copies local folders only"):
        release_models({**sources, "segmenter": location}, tmp_path)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(300)
def test_release_job_rejects_s3_source(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    arguments = ["--segmenter", "s3://bucket/segmenter", "--classifier", "s3://bucket/classifier"]

    completed = subprocess.run(
        [sys.executable, str(RELEASE_JOB), *arguments], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280
    )

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "segmenter model folder s3://bucket/segmenter: release copies local folders only" in completed.stderr
    assert "download the model folder from S3 first" in completed.stderr
    assert list(tmp_path.iterdir()) == []
