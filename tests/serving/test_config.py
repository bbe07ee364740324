import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from braintumor.models.io import ModelLoadError
from braintumor.serving.app import deployment_options
from braintumor.serving.config import ServiceConfig, check_model_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def _fake_model_dir(folder: Path, task: str = "segment", normalization: str = "slice-zscore-v1") -> Path:
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"not read by check_model_dir")
    (folder / "model_info.json").write_text(json.dumps({"task": task, "architecture": "unet", "normalization": normalization}))
    return folder


def test_check_model_dir_returns_absolute_path(tmp_path, monkeypatch):
    _fake_model_dir(tmp_path / "segmenter")
    monkeypatch.chdir(tmp_path)

    assert check_model_dir("segmenter", "segment", "segmenter") == tmp_path / "segmenter"


def test_check_model_dir_missing_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"segmenter model not found: .*model.keras does not exist; train one with `python jobs/train.py --task segment`"):
        check_model_dir(tmp_path / "nothing", "segment", "segmenter")


def test_check_model_dir_missing_info(tmp_path):
    folder = _fake_model_dir(tmp_path / "model")
    (folder / "model_info.json").unlink()

    with pytest.raises(FileNotFoundError, match="model_info.json does not exist"):
        check_model_dir(folder, "segment", "segmenter")


def test_check_model_dir_wrong_task(tmp_path):
    folder = _fake_model_dir(tmp_path / "model", task="classify")

    with pytest.raises(ModelLoadError, match="expected a segmenter .task 'segment'., found task 'classify'"):
        check_model_dir(folder, "segment", "segmenter")


def test_check_model_dir_other_normalisation(tmp_path):
    folder = _fake_model_dir(tmp_path / "model", normalization="volume-zscore")

    with pytest.raises(ModelLoadError, match="expects normalisation 'volume-zscore', but this service applies 'slice-zscore-v1'"):
        check_model_dir(folder, "segment", "segmenter")


def test_resolved_fills_defaults_from_output_root(tmp_path, monkeypatch):
    monkeypatch.setattr("braintumor.inference.RELEASE_ROOT", tmp_path / "no-release")
    _fake_model_dir(tmp_path / "runs/segment-unet/model")
    _fake_model_dir(tmp_path / "runs/classify-smallcnn/model", task="classify")
    monkeypatch.setenv("BRAINTUMOR_OUTPUT", str(tmp_path))

    resolved = ServiceConfig().resolved()

    assert resolved.segmenter == str(tmp_path / "runs/segment-unet/model")
    assert resolved.classifier == str(tmp_path / "runs/classify-smallcnn/model")


def test_resolved_prefers_release_models(tmp_path, monkeypatch):
    monkeypatch.setattr("braintumor.inference.RELEASE_ROOT", tmp_path / "release")
    _fake_model_dir(tmp_path / "release/segmenter")
    _fake_model_dir(tmp_path / "release/classifier", task="classify")
    _fake_model_dir(tmp_path / "runs/segment-unet/model")
    monkeypatch.setenv("BRAINTUMOR_OUTPUT", str(tmp_path))

    resolved = ServiceConfig().resolved()

    assert resolved.segmenter == str(tmp_path / "release/segmenter")
    assert resolved.classifier == str(tmp_path / "release/classifier")


def test_resolved_without_classifier(tmp_path, monkeypatch):
    monkeypatch.setattr("braintumor.inference.RELEASE_ROOT", tmp_path / "no-release")
    _fake_model_dir(tmp_path / "runs/segment-unet/model")
    monkeypatch.setenv("BRAINTUMOR_OUTPUT", str(tmp_path))

    assert ServiceConfig(no_classifier=True).resolved().classifier is None


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"batching": True, "max_batch_size": 16, "max_ongoing_requests": 8}, "below max_batch_size"),
        ({"classifier": "x", "no_classifier": True}, "both classifier and no_classifier"),
        ({"replicas": 3, "max_replicas": 2}, "max_replicas .2. is below replicas .3."),
        ({"max_batch_size": 0}, "greater than or equal to 1"),
        ({"max_body_bytes": 10}, "greater than or equal to 1024"),
    ],
)
def test_config_rejects_inconsistent_settings(settings, message):
    with pytest.raises(ValidationError, match=message):
        ServiceConfig(**settings)


def test_config_parses_serve_run_strings():
    config = ServiceConfig.model_validate({"replicas": "2", "batching": "false", "batch_wait_ms": "5"})

    assert config.replicas == 2
    assert config.batching is False
    assert config.batch_wait_ms == 5.0


def test_deployment_options_fixed_replicas():
    options = deployment_options(ServiceConfig(replicas=2, cpus_per_replica=0.5))

    assert options["num_replicas"] == 2
    assert options["ray_actor_options"] == {"num_cpus": 0.5}
    assert options["max_ongoing_requests"] == 32
    assert "autoscaling_config" not in options


def test_deployment_options_autoscaling():
    batched = deployment_options(ServiceConfig(replicas=1, max_replicas=4, batching=True, max_batch_size=8))
    unbatched = deployment_options(ServiceConfig(replicas=1, max_replicas=4))

    assert "num_replicas" not in batched
    assert batched["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}
    assert unbatched["autoscaling_config"]["target_ongoing_requests"] == 2


def test_serve_job_missing_model_exits_2(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "jobs/serve.py"), "--segmenter", str(tmp_path / "missing"), "--no-classifier"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )

    assert completed.returncode == 2
    assert "segmenter model not found" in completed.stderr
    assert "jobs/train.py --task segment" in completed.stderr


def test_serve_config_validates():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    document = yaml.safe_load((REPO_ROOT / "braintumor/serving/serve_config.yaml").read_text())

    schema = ServeDeploySchema.model_validate(document)
    [application] = schema.applications
    config = ServiceConfig.model_validate(application.args)
    assert application.import_path == "braintumor.serving.app:build_app"
    assert deployment_options(config)["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 2}
    assert application.deployments[0].name == "SliceService"
    assert application.deployments[0].autoscaling_config["max_replicas"] == 8
