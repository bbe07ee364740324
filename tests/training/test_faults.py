"""A Ray Train worker killed mid-run: training restarts from the last checkpoint and completes every epoch."""

import json
import os
import signal
import threading
import time

import pytest

import braintumor  # noqa: F401  (selects tf-keras before TensorFlow is imported)

from braintumor.training.config import TrainConfig
from actor_pids import alive_actor_pids
from braintumor.training.loop import TrainingState
from braintumor.training.trainer import train

EPOCHS = 4
WAIT_FOR_CHECKPOINT_S = 600


def _alive_worker_pids() -> list[int]:
    return alive_actor_pids("RayTrainWorker")


def _checkpoint_folders(checkpoints) -> list:
    # Ray Train also keeps checkpoint_manager_snapshot.json in this folder.
    return [folder for folder in checkpoints.glob("checkpoint_*") if (folder / "state.json").is_file()]


def _kill_worker_after_first_checkpoint(checkpoints, killed: list, stop: threading.Event) -> None:
    deadline = time.monotonic() + WAIT_FOR_CHECKPOINT_S
    while not stop.is_set() and time.monotonic() < deadline:
        if checkpoints.is_dir() and _checkpoint_folders(checkpoints):
            time.sleep(1.0)  # into the second epoch
            pids = _alive_worker_pids()
            if pids:
                epochs_done = max(TrainingState.load(folder).epochs_done for folder in _checkpoint_folders(checkpoints))
                os.kill(pids[-1], signal.SIGKILL)
                killed.append((pids[-1], epochs_done))
                return
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_worker_run_completes_all_epochs(preprocessed, ray_local, tmp_path):
    result, _ = preprocessed
    config = TrainConfig(
        task="classify",
        data=str(result.output),
        output=str(tmp_path / "runs"),
        epochs=EPOCHS,
        batch_size=4,
        input_size=32,
        base_filters=4,
        limit_train=64,
        limit_validation=8,
        shuffle_buffer=8,
        augment=False,
        early_stopping_patience=EPOCHS,
    )
    killed, stop = [], threading.Event()
    killer = threading.Thread(
        target=_kill_worker_after_first_checkpoint, args=(config.run_dir / "checkpoints", killed, stop), daemon=True
    )
    killer.start()
    try:
        outcome = train(config)
    finally:
        stop.set()
        killer.join(timeout=5)

    assert killed, "no Ray Train worker was found to kill"
    pid, epochs_done_at_kill = killed[0]
    assert epochs_done_at_kill < EPOCHS, "the worker was killed after the last epoch"
    assert outcome.epochs_done == EPOCHS
    history = json.loads((config.run_dir / "history.json").read_text())
    assert len(history["loss"]) == EPOCHS
    assert pid not in _alive_worker_pids()
