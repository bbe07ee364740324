import os
import subprocess
import sys
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parent.parent / "jobs"


def _run_job(name: str, *args: str, cwd: Path, timeout: float = 280) -> subprocess.CompletedProcess:
    """Run jobs/<name> with this interpreter (the project's venv), outside any Ray cluster."""
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "BRAINTUMOR_DATA", "BRAINTUMOR_OUTPUT")}
    return subprocess.run(
        [sys.executable, str(JOBS / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("job", sorted(path.name for path in JOBS.glob("*.py")))
def test_job_help(job, tmp_path):
    completed = _run_job(job, "--help", cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith("usage:")


@pytest.mark.timeout(300)
def test_preprocess_missing_data(tmp_path):
    completed = _run_job("preprocess.py", "--data", "/nonexistent", "--output", str(tmp_path / "out"), cwd=tmp_path)

    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "ERROR" in lines[0]
    assert "dataset not found at '/nonexistent'" in lines[0]
    assert "--data PATH or set BRAINTUMOR_DATA=PATH" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(300)
def test_preprocess_bad_fractions_usage(tmp_path):
    completed = _run_job("preprocess.py", "--fractions", "0.5", "0.5", cwd=tmp_path)

    assert completed.returncode == 2
    assert "--fractions: expected 3 arguments" in completed.stderr


@pytest.mark.timeout(300)
def test_train_without_preprocessing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()

    completed = _run_job("train.py", "--task", "segment", "--data", str(empty), cwd=tmp_path)

    assert completed.returncode == 2
    errors = _error_lines(completed.stderr)
    assert len(errors) == 1, completed.stderr[-3000:]
    assert "preprocessed train split not found" in errors[0]
    assert f"run jobs/preprocess.py --output {empty} first" in errors[0]


@pytest.mark.timeout(300)
def test_train_unknown_task_usage(tmp_path):
    completed = _run_job("train.py", "--task", "detect", cwd=tmp_path)

    assert completed.returncode == 2
    assert "argument --task: invalid choice: 'detect'" in completed.stderr


@pytest.mark.timeout(300)
def test_benchmark_negative_threads_usage(tmp_path):
    completed = _run_job("benchmark.py", "--threads-per-worker", "1", "-1", cwd=tmp_path)

    assert completed.returncode == 2
    assert "invalid --threads-per-worker value -1: expected 0 or more" in completed.stderr
