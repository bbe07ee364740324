"""cluster.yaml checked by Ray's own cluster-config code, offline (no AWS call), and against pyproject.toml."""

import copy
import re
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONFIG = REPO_ROOT / "cluster.yaml"


def _load_config() -> dict:
    return yaml.safe_load(CLUSTER_CONFIG.read_text())


def _prepare_and_validate(config: dict) -> dict:
    """Fill in Ray's AWS defaults and run its schema and consistency checks, as `ray up` does first."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    # validate_config alone rejects a config that lacks the fields prepare_config fills in.
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _ray_requirement() -> Requirement:
    requirements = [Requirement(line) for line in _pyproject()["project"]["dependencies"]]
    return next(requirement for requirement in requirements if requirement.name == "ray")


def _all_setup_commands(config: dict) -> list[str]:
    return [
        command
        for key in ("setup_commands", "head_setup_commands", "worker_setup_commands")
        for command in config.get(key, [])
    ]


def test_cluster_config_valid():
    prepared = _prepare_and_validate(_load_config())

    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_cluster_config_node_types():
    config = _load_config()
    head = config["available_node_types"][config["head_node_type"]]
    workers = {name: node for name, node in config["available_node_types"].items() if name != config["head_node_type"]}

    assert head["resources"].get("GPU", 0) == 0
    assert len(workers) == 1
    (worker,) = workers.values()
    assert worker["resources"]["GPU"] == 1
    assert worker["min_workers"] == 0
    assert 1 <= worker["max_workers"] <= config["max_workers"]
    assert worker["node_config"]["InstanceType"].startswith("g")


def test_cluster_config_idle_timeout():
    # Long enough to survive the gap between two jobs, short enough that idle GPUs stop billing.
    assert 5 <= _load_config()["idle_timeout_minutes"] <= 30


def test_cluster_checker_rejects_bad_head_type():
    config = _load_config()
    config["head_node_type"] = "no_such_type"

    with pytest.raises(ValueError, match="`head_node_type` must be one of `available_node_types`"):
        _prepare_and_validate(config)


def test_cluster_checker_rejects_unknown_field():
    config = _load_config()
    config["gpu_workers"] = 2

    with pytest.raises(jsonschema.ValidationError, match="gpu_workers"):
        _prepare_and_validate(config)


def test_cluster_ray_version_matches_pin():
    pinned = _ray_requirement().specifier
    commands = " ".join(_all_setup_commands(_load_config()))

    versions = re.findall(r"ray\[[a-z,]+\]==([0-9][0-9a-z.]*)", commands)

    assert versions, "no ray[...]==VERSION found in the setup commands"
    for version in versions:
        assert version in pinned, f"cluster.yaml installs ray {version}, pyproject.toml pins {pinned}"
        # `ray up` and the cluster must run the same Ray version.
        assert version == ray.__version__


def test_cluster_python_version_allowed():
    required = _pyproject()["project"]["requires-python"]
    commands = " ".join(_all_setup_commands(_load_config()))

    versions = re.findall(r"--python ([0-9]+\.[0-9]+)\b", commands)

    assert versions, "no --python VERSION found in the setup commands"
    for version in versions:
        assert Version(version) in Requirement(f"python{required}").specifier, f"Python {version} vs requires-python {required}"


def test_cluster_installs_this_repository():
    config = _load_config()

    assert config["file_mounts"]["~/braintumor"] == "."
    # The upload leaves out what .gitignore lists (.venv, outputs/) and the git history.
    assert ".gitignore" in config["rsync_filter"]
    assert "**/.git" in config["rsync_exclude"]
    assert any("-e ~/braintumor" in command for command in config["head_setup_commands"])
    assert any("braintumor[gpu]" in command for command in config["worker_setup_commands"])
