"""Driver side of training: set up Ray Train, run it, and keep the best model of the run.

A run writes to `<output>/<name>/`, a local folder or an `s3://` prefix:

    config.json            the resolved configuration
    split.json             the patient split the data was made with
    checkpoints/           Ray Train's checkpoints (the best epoch, and the latest)
    model/                 the best epoch's model: model.keras and model_info.json
    history.json           per-epoch metrics of the whole run
    evaluation/            metrics.json and plots on the test patients (see braintumor.evaluation)

Running the same command again continues from the latest checkpoint of that run name: Ray Train
finds its checkpoint list in `checkpoints/`, locally or in S3, and hands the latest to the workers.
"""

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from braintumor import __version__, locations, s3
from braintumor.models.io import ModelInfo, save_model
from braintumor.preprocessing.normalization import NORMALIZATION
from braintumor.training.config import TrainConfig
from braintumor.training.loop import (
    CHECKPOINT_MODEL,
    CHECKPOINT_STATE,
    MONITORS,
    TrainingState,
    epoch_steps,
    finished_reason,
    float32_copy,
    train_loop_per_worker,
)

logger = logging.getLogger(__name__)

# CPUs a GPU worker reserves by default: input feeding and the training loop's Python need few,
# and GPU nodes of 4 vCPUs (an AWS g5.xlarge) keep the rest for Ray Data.
GPU_WORKER_CPUS = 2.0
# Subfolder of a run folder where Ray Train keeps the run's checkpoints.
RUN_CHECKPOINTS = "checkpoints"


@dataclass
class TrainingResult:
    """Locations and best-epoch metrics of a finished run. Locations are Paths locally and URI strings for S3."""

    run_dir: str | Path
    model_dir: str | Path
    best_epoch: int
    best_metrics: dict
    epochs_done: int
    seconds: float


def _warn_if_precision_changes(run_dir, config: TrainConfig) -> None:
    """Log a warning when a run continues under another precision than its earlier epochs had.

    Training goes on (the weights are float32 under both policies), but the run's epochs then mix
    two precisions, which matters to anyone comparing its history.
    """
    saved = locations.join(run_dir, "config.json")
    if not locations.is_file(saved):
        return
    try:
        earlier = json.loads(locations.read_text(saved)).get("precision", "float32")
    except (ValueError, AttributeError):
        return
    if earlier != config.precision:
        logger.warning(
            "run %s trained its earlier epochs in %s and continues in %s. Pass --precision %s to keep %s",
            config.name, earlier, config.precision, earlier, earlier,
        )


def training_datasets(config: TrainConfig, folders: dict[str, str | Path]) -> dict:
    """Return the Ray datasets of the "train" and "validation" Parquet folders in `folders`.

    Each epoch reads the training slices in a new random order of blocks, and with
    `config.tumour_copies` also that many extra copies of each tumour slice. Without copies or
    `config.limit_train`, that order comes from shuffling the files as they are read. Otherwise
    it comes from randomize_block_order, which reads the whole split before each epoch's first batch.
    """
    import ray.data
    from ray.data import FileShuffleConfig
    from ray.data.expressions import col

    shuffle_files = not config.tumour_copies and not config.limit_train
    datasets = {}
    for split, folder in folders.items():
        filesystem, path = locations.arrow_filesystem(folder)
        # Without repeats, the files (a block or a few each) are read in a new random order every
        # epoch. randomize_block_order does about the same, but it holds back the first batch until
        # the whole split is read, each epoch.
        shuffle = FileShuffleConfig(seed=None) if split == "train" and shuffle_files else None
        datasets[split] = ray.data.read_parquet(path, filesystem=filesystem, shuffle=shuffle)
    if shuffle_files:
        return _limit_validation(datasets, config)

    if config.limit_train:
        datasets["train"] = datasets["train"].limit(config.limit_train)
    if config.tumour_copies:
        # Tumour slices are about a third of the training slices; repeating them gives the
        # segmenter more tumour pixels per epoch without changing the validation data.
        # NOTE: a union delivered its inputs one after the other in a test with Ray 2.60, so the
        # repeats would all come last without the block shuffle below.
        tumour = datasets["train"].filter(expr=col("label") == 1)
        datasets["train"] = datasets["train"].union(*[tumour] * config.tumour_copies)
    datasets["train"] = datasets["train"].randomize_block_order(seed=None)
    return _limit_validation(datasets, config)


def _limit_validation(datasets: dict, config: TrainConfig) -> dict:
    if config.limit_validation:
        datasets["validation"] = datasets["validation"].limit(config.limit_validation)
    return datasets


def epoch_rows(config: TrainConfig, folder: str | Path) -> int:
    """Return how many slices one epoch trains on, tumour copies included.

    That is the split, or its first `config.limit_train` slices, plus `config.tumour_copies`
    copies of each tumour slice among them.
    NOTE: with --limit-train, the slices counted are the first in file name order, and Ray Data's
    limit is assumed to take the same ones.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    filesystem, path = locations.arrow_filesystem(folder)
    labels = pq.read_table(path, columns=["label"], filesystem=filesystem)["label"]
    if config.limit_train:
        labels = labels.slice(0, config.limit_train)
    tumour = pc.sum(pc.equal(labels, 1)).as_py() or 0
    return len(labels) + config.tumour_copies * tumour


def train(config: TrainConfig) -> TrainingResult:
    """Train the model `config` describes with Ray Train's TensorflowTrainer and save its best epoch.

    `config.data`, `config.output` and `config.resume` may each be local or `s3://`.

    Raises:
        FileNotFoundError: the preprocessed Parquet splits or the checkpoint to resume are missing.
        ValueError: the checkpoint to resume has no epoch left to train under these settings.
        s3.S3Error: an S3 location cannot be read or written, naming the bucket and key.
        RuntimeError: training failed on the workers (the message carries their error).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from braintumor.evaluation.report import preprocessed_split
    from braintumor.runtime import init_ray, worker_env

    started = time.perf_counter()
    folders = {split: preprocessed_split(config.data, split) for split in ("train", "validation")}
    run_dir = config.run_dir if s3.is_s3(config.run_dir) else config.run_dir.resolve()
    if config.resume:
        config.resume = _checkpoint_to_resume(config.resume)
        # Workers resume from the run's own checkpoints when it has any, and from --resume only
        # when it has none. Ray Train writes this file in the run's checkpoints folder.
        if not locations.is_file(locations.join(run_dir, RUN_CHECKPOINTS, "checkpoint_manager_snapshot.json")):
            _check_something_to_train(config.resume, config)
    _warn_if_precision_changes(run_dir, config)
    locations.make_folder(run_dir)
    config.save(locations.join(run_dir, "config.json"))
    split_file = locations.join(config.data, "split.json")
    if locations.is_file(split_file):
        locations.write_bytes(locations.join(run_dir, "split.json"), locations.read_bytes(split_file))

    init_ray()
    datasets = training_datasets(config, folders)
    rows = epoch_rows(config, folders["train"])
    steps_per_epoch = epoch_steps(rows, config)

    cpus_per_worker = config.cpus_per_worker or _default_cpus_per_worker(config)
    if not config.intra_op_threads:
        config.intra_op_threads = max(1, int(cpus_per_worker))
    resources = {"CPU": cpus_per_worker}
    if config.use_gpu:
        resources["GPU"] = 1
    logger.info(
        "training %s (%s) in %s on %d worker(s) with %s each; run folder %s",
        config.task, config.architecture, config.precision, config.num_workers, resources, run_dir,
    )
    logger.info(
        "each epoch: %d training slices, %s steps of %d slices per worker", rows, steps_per_epoch or "all", config.batch_size
    )

    monitor, mode = MONITORS[config.task]
    # With a custom filesystem Ray Train takes the storage path without its scheme (bucket/key).
    storage_filesystem, storage_path = locations.arrow_filesystem(run_dir)
    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={**config.to_dict(), "steps_per_epoch": steps_per_epoch},
        scaling_config=ScalingConfig(
            num_workers=config.num_workers, use_gpu=config.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=RUN_CHECKPOINTS,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=monitor, checkpoint_score_order=mode
            ),
            failure_config=FailureConfig(max_failures=2),
            worker_runtime_env={"env_vars": worker_env()},
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error

    if not result.best_checkpoints:
        raise RuntimeError(
            f"no epoch was trained and {locations.join(run_dir, RUN_CHECKPOINTS)} has no checkpoint, so there is no "
            f"model to save; see the workers' log lines above for the reason"
        )
    pick = max if mode == "max" else min
    best_checkpoint, best_metrics = pick(result.best_checkpoints, key=lambda pair: pair[1][monitor])
    with result.checkpoint.as_directory() as latest:
        state = TrainingState.load(latest)
    locations.write_text(locations.join(run_dir, "history.json"), json.dumps(state.history, indent=2) + "\n")

    model_dir = locations.join(run_dir, "model")
    with best_checkpoint.as_directory() as folder:
        import tensorflow as tf

        model = tf.keras.models.load_model(str(Path(folder) / CHECKPOINT_MODEL), compile=False, safe_mode=True)
    if config.precision != "float32":
        model = float32_copy(model, config)
    info = ModelInfo(
        task=config.task,
        architecture=config.architecture,
        normalization=NORMALIZATION,
        input_size=config.input_size,
        version=f"braintumor-{__version__}/{config.name}/epoch-{int(best_metrics['epoch'])}",
        extra={
            "best_epoch": int(best_metrics["epoch"]),
            monitor: float(best_metrics[monitor]),
            "training_precision": config.precision,
        },
    )
    save_model(model, info, model_dir)
    seconds = time.perf_counter() - started
    logger.info(
        "training finished in %.0f s after %d epochs; best epoch %d (%s %.4f) saved to %s",
        seconds, state.epochs_done, int(best_metrics["epoch"]), monitor, best_metrics[monitor], model_dir,
    )
    return TrainingResult(
        run_dir=run_dir,
        model_dir=model_dir,
        best_epoch=int(best_metrics["epoch"]),
        best_metrics={key: float(value) for key, value in best_metrics.items() if isinstance(value, (int, float))},
        epochs_done=state.epochs_done,
        seconds=seconds,
    )


def _checkpoint_to_resume(location: str) -> str:
    """Check that `location` contains a checkpoint and return it in the form workers can open.

    Workers run in other folders, so a local path becomes absolute. An S3 URI is kept as it is.
    """
    checkpoint = locations.as_location(location)
    if not s3.is_s3(checkpoint):
        checkpoint = checkpoint.resolve()
    if not locations.is_file(locations.join(checkpoint, CHECKPOINT_MODEL)):
        raise FileNotFoundError(f"{checkpoint}: not a checkpoint folder (no {CHECKPOINT_MODEL} inside)")
    return str(checkpoint)


def _check_something_to_train(checkpoint: str, config: TrainConfig) -> None:
    """Raise ValueError when a run started from `checkpoint` would train no epoch.

    Ray Train then reports no checkpoint at all, so the run would end with no model to save.
    """
    state = TrainingState(**json.loads(locations.read_text(locations.join(checkpoint, CHECKPOINT_STATE))))
    reason = finished_reason(state, config)
    if reason:
        raise ValueError(f"nothing to train from --resume {checkpoint}: {reason}")


def _default_cpus_per_worker(config: TrainConfig) -> float:
    """Return the CPUs each worker reserves when --cpus-per-worker is not given.

    CPU workers share the cluster's CPUs but one, which stays free for Ray Data; on two cores that
    is half a CPU per worker. A worker holding a whole CPU on a two-core machine starves the Ray
    Data tasks that feed it, and the run waits forever without an error. A GPU worker reserves
    GPU_WORKER_CPUS, so that it fits on any GPU node whatever the size of the cluster.
    """
    import ray

    if config.use_gpu:
        return GPU_WORKER_CPUS
    total = ray.cluster_resources().get("CPU", 1.0)
    return max(0.25, (total - 1) / config.num_workers)
