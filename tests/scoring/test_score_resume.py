"""Kill a scoring job with SIGKILL part way, run it again, and compare with a run never stopped.

The killed job is a `jobs/score.py` process that joins the test session's Ray instance (through
RAY_ADDRESS), as a job on a cluster would; Ray ends the job's actors when its driver dies.
"""

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from braintumor.scoring.job import run_scoring

REPO_ROOT = Path(__file__).resolve().parents[2]
SLICES = 200
BATCH_SIZE = 8
START_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def archive_200(lgg_root, tmp_path_factory) -> Path:
    """A zip archive of the first 200 real slices (in patient folders) and their ground-truth masks."""
    path = tmp_path_factory.mktemp("resume_input") / "scans.zip"
    slices = sorted(p for p in lgg_root.glob("*/*.tif") if not p.stem.endswith("_mask"))[:SLICES]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for image in slices:
            archive.write(image, image.relative_to(lgg_root).as_posix())
            mask = image.with_name(f"{image.stem}_mask.tif")
            archive.write(mask, mask.relative_to(lgg_root).as_posix())
    return path


def start_job(archive: Path, output: Path, models: tuple[Path, Path], log: Path, ray_address: str) -> subprocess.Popen:
    command = [
        sys.executable, "jobs/score.py", "--input", str(archive), "--output", str(output),
        "--segmenter", str(models[0]), "--classifier", str(models[1]), "--batch-size", str(BATCH_SIZE),
    ]
    # A process group of its own, so that one killpg reaches the driver and anything it started.
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=dict(os.environ, RAY_ADDRESS=ray_address),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_when_parts_exist(job: subprocess.Popen, output: Path, minimum_parts: int, log: Path) -> int:
    """SIGKILL the job's process group once `minimum_parts` part files exist; returns their count then."""
    deadline = time.monotonic() + START_TIMEOUT_S
    parts = output / ".parts"
    while time.monotonic() < deadline and job.poll() is None:
        count = len(list(parts.glob("part-*.parquet"))) if parts.is_dir() else 0
        if count >= minimum_parts:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
            return count
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    pytest.fail(f"the job did not write {minimum_parts} part files within {START_TIMEOUT_S} s (exit status {job.returncode}):\n{log.read_text()[-3000:]}")


def assert_process_group_ends(group: int, timeout_s: float = 30) -> None:
    """Wait until no process of the killed job's group is left (they exit once reaped or orphaned)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"processes of the killed job's group {group} still run {timeout_s} s after SIGKILL")


def read_outputs(output: Path) -> dict:
    return {
        "labels": pd.read_parquet(output / "labels.parquet"),
        "labels_csv": (output / "labels.csv").read_text(),
        "errors": (output / "errors.csv").read_text(),
        "patients": (output / "patients.csv").read_text(),
        "masks": {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*_pred_mask.png"))},
    }


@pytest.mark.slow
def test_killed_job_rerun_matches_uninterrupted(ray_local, tiny_models, archive_200, tmp_path):
    uninterrupted = run_scoring(archive_200, tmp_path / "uninterrupted", *tiny_models, batch_size=BATCH_SIZE)
    assert uninterrupted.scored == SLICES

    output = tmp_path / "killed"
    log = tmp_path / "killed.log"
    job = start_job(archive_200, output, tiny_models, log, ray_local.get_runtime_context().gcs_address)
    parts_at_kill = kill_when_parts_exist(job, output, minimum_parts=2, log=log)

    assert job.returncode == -signal.SIGKILL
    assert not (output / "labels.parquet").exists()
    assert parts_at_kill < SLICES // BATCH_SIZE, "the job finished before it was killed"
    assert_process_group_ends(job.pid)

    rerun = run_scoring(archive_200, output, *tiny_models, batch_size=BATCH_SIZE)

    assert rerun.skipped >= parts_at_kill * BATCH_SIZE
    assert rerun.scored + rerun.skipped == SLICES
    assert rerun.failed == 0
    expected, found = read_outputs(tmp_path / "uninterrupted"), read_outputs(output)
    pd.testing.assert_frame_equal(found["labels"], expected["labels"])
    for name in ("labels_csv", "errors", "patients"):
        assert found[name] == expected[name], name
    assert found["masks"].keys() == expected["masks"].keys()
    assert found["masks"] == expected["masks"]
    assert not [path for path in output.rglob("*") if ".partial-" in path.name]
