"""`ray job submit` to a Ray head started with `ray start` on 127.0.0.1: preprocess, train, then score.

The head runs in its own process group with its own temporary folder and token, and the finalizer
stops only that group. `ray stop` would also stop every other Ray instance of this user on the machine.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port

from braintumor.runtime import WORKER_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
PYTHON_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class RayHead:
    """A Ray head on 127.0.0.1 and the environment that `ray` commands need to reach it."""

    dashboard: str  # http://127.0.0.1:PORT, where `ray job submit` sends jobs
    gcs_address: str  # 127.0.0.1:PORT, the address jobs get in RAY_ADDRESS
    temp_dir: Path
    env: dict[str, str]

    def submit(self, submission_id: str, *entrypoint: str, timeout: float = 240) -> subprocess.CompletedProcess:
        """Submit `entrypoint` with this repository as working dir and wait for the job to end."""
        command = [
            str(RAY), "job", "submit", "--address", self.dashboard, "--submission-id", submission_id,
            "--working-dir", ".", "--", *entrypoint,
        ]
        return subprocess.run(command, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def job_info(self, submission_id: str) -> dict:
        """Return the job's record from the dashboard's job API (status, entrypoint, runtime_env, ...)."""
        request = urllib.request.Request(
            f"{self.dashboard}/api/jobs/{submission_id}",
            headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def _wait_for_job_api(head: RayHead, process: subprocess.Popen, log: Path, timeout: float = 150) -> None:
    """Wait until the dashboard's job API responds, else fail the test with the head's log."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        f"{head.dashboard}/api/jobs/", headers={"Authorization": f"Bearer {head.env['RAY_AUTH_TOKEN']}"}
    )
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`ray start` exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(2)
    pytest.fail(f"the job API at {head.dashboard} did not respond within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop_head(process: subprocess.Popen) -> None:
    """Stop `ray start --block` and then anything left in its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with 2 CPUs and the dashboard on 127.0.0.1, stopped when the module's tests end."""
    # A short folder of its own: Ray's socket paths must stay under 108 bytes, and the default
    # /tmp/ray would make this head the cluster that a plain ray.init() on the machine joins.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayjob", dir="/tmp"))
    gcs_port, dashboard_port = free_port(), free_port()

    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(WORKER_ENV)
    env.update(
        {
            # The node, its workers and TF_CONFIG use 127.0.0.1 only with this set before Ray starts.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            # Ray 2.60's `ray start` turns token authentication on. A token of this test's own
            # keeps ~/.ray/auth_token out of it, and the job client sends the same token.
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # Jobs run `python` from the PATH of the head, so it must be this interpreter.
            "PATH": f"{PYTHON_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )

    command = [
        str(RAY), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--port", str(gcs_port),
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard_port),
        "--dashboard-agent-listen-port", str(free_port()),
        "--ray-client-server-port", str(free_port()),
        "--include-dashboard", "true",
        "--num-cpus", "2",
        "--num-gpus", "0",
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
    ]

    log = temp_dir / "ray_start.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{dashboard_port}", f"127.0.0.1:{gcs_port}", temp_dir, env)
    try:
        _wait_for_job_api(head, process, log)
        yield head
    finally:
        _stop_head(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _job_output(completed: subprocess.CompletedProcess) -> str:
    return f"exit status {completed.returncode}\n{completed.stdout[-4000:]}\n{completed.stderr[-2000:]}"


@pytest.fixture(scope="module")
def preprocess_job(ray_head, tiny_lgg, tmp_path_factory):
    """Preprocess the tiny dataset as a job; returns (completed `ray job submit`, output folder)."""
    output = tmp_path_factory.mktemp("job_outputs")
    completed = ray_head.submit("preprocess-1", "python", "jobs/preprocess.py", "--data", str(tiny_lgg), "--output", str(output))
    return completed, output


@pytest.fixture(scope="module")
def train_job(ray_head, preprocess_job):
    """Train a tiny classifier for one epoch as a job; returns (completed `ray job submit`, run folder)."""
    _, data = preprocess_job
    completed = ray_head.submit(
        "train-1", "python", "jobs/train.py", "--task", "classify", "--data", str(data), "--name", "tiny",
        "--epochs", "1", "--batch-size", "4", "--input-size", "32", "--base-filters", "4",
        "--limit-train", "8", "--limit-validation", "4", "--workers", "1", "--no-evaluate",
    )
    return completed, data / "runs" / "tiny"


@pytest.fixture(scope="module")
def tiny_segmenter(tmp_path_factory) -> Path:
    """An untrained segmenter working at 32x32, saved as a model folder (the score job needs one)."""
    from braintumor.models.io import ModelInfo, save_model
    from braintumor.models.segmentation import build_segmenter
    from braintumor.preprocessing.normalization import NORMALIZATION

    folder = tmp_path_factory.mktemp("segmenter") / "model"
    info = ModelInfo(task="segment", architecture="unet", normalization=NORMALIZATION, input_size=32, version="test-seg-1")
    save_model(build_segmenter(input_size=32, base_filters=4, depth=2), info, folder)
    return folder


@pytest.fixture(scope="module")
def score_job(ray_head, train_job, tiny_segmenter, lgg_root, tmp_path_factory):
    """Score four real slices of one patient as a job; returns (completed `ray job submit`, output folder)."""
    _, run_dir = train_job
    output = tmp_path_factory.mktemp("scored")
    completed = ray_head.submit(
        "score-1", "python", "jobs/score.py", "--input", str(lgg_root / "TCGA_CS_4942_19970222"), "--output", str(output),
        "--segmenter", str(tiny_segmenter), "--classifier", str(run_dir / "model"), "--batch-size", "2", "--limit", "4",
    )
    return completed, output


def test_preprocess_job_succeeds(ray_head, preprocess_job):
    completed, output = preprocess_job

    assert completed.returncode == 0, _job_output(completed)
    assert ray_head.job_info("preprocess-1")["status"] == "SUCCEEDED"
    for split in ("train", "validation", "test"):
        assert any((output / "parquet" / split).glob("*.parquet")), split
    assert (output / "split.json").is_file()


def test_jobs_join_running_cluster(ray_head, preprocess_job):
    completed, _ = preprocess_job

    assert f"connecting to the Ray cluster at {ray_head.gcs_address}" in completed.stdout, _job_output(completed)
    assert "started a local Ray instance" not in completed.stdout


def test_train_job_writes_model(ray_head, train_job):
    completed, run_dir = train_job

    assert completed.returncode == 0, _job_output(completed)
    assert ray_head.job_info("train-1")["status"] == "SUCCEEDED"
    assert list((run_dir / "checkpoints").glob("checkpoint_*")), sorted(run_dir.rglob("*"))
    assert (run_dir / "model" / "model.keras").is_file()
    assert json.loads((run_dir / "model" / "model_info.json").read_text())["task"] == "classify"
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == 1


def test_score_job_scores_slices(ray_head, score_job):
    completed, output = score_job

    assert completed.returncode == 0, _job_output(completed)
    assert ray_head.job_info("score-1")["status"] == "SUCCEEDED"
    labels = pd.read_csv(output / "labels.csv")
    assert len(labels) == 4
    assert labels["tumour_probability"].between(0, 1).all()
    assert len(list(output.rglob("*_pred_mask.png"))) == 4


def test_upload_leaves_out_ignored_folders(ray_head, preprocess_job):
    # Ray packs the working dir without what .gitignore lists. The package must stay far below
    # Ray's upload limit, so the virtual environment and outputs/ must not be in it.
    _ = preprocess_job
    packages = [path for path in (ray_head.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files").glob("*") if path.is_dir()]

    assert packages, "no unpacked working dir found"
    for package in packages:
        assert (package / "jobs" / "train.py").is_file()
        assert not (package / ".venv").exists()
        assert not (package / "outputs").exists()
