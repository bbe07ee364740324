"""The function every Ray Train worker runs: data-parallel Keras training under MultiWorkerMirroredStrategy.

Each worker reads its shard of the Parquet splits through Ray Data, builds (or restores) the model
inside the strategy's scope, and trains with Adam, EarlyStopping and ReduceLROnPlateau on
the validation metric in `MONITORS`. After every epoch each worker reports its metrics to Ray Train, and rank 0 attaches a
checkpoint folder with the model and the training state. Ray Train keeps the best checkpoint by
that metric and always the latest, so a run can continue where it stopped.
"""

import json
import logging
import queue
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import tensorflow as tf

from braintumor import locations
from braintumor.training.config import TrainConfig

logger = logging.getLogger("braintumor.training")

CHECKPOINT_MODEL = "model.keras"
CHECKPOINT_STATE = "state.json"
CHECKPOINT_CONFIG = "config.json"
# The validation metric that picks the best epoch, drives early stopping and cuts the learning
# rate. For segmentation it is the pooled validation Dice, not val_loss: the loss's soft-Dice term is
# a mean over batches, and validation batches of empty slices make it noisy.
MONITORS = {"segment": ("val_dice", "max"), "classify": ("val_loss", "min")}
PROGRESS_INTERVAL_S = 60.0
# How long the training dataset waits at the end of a pass for the epoch's stop decision.
PASS_DECISION_TIMEOUT_S = 1800.0


@dataclass
class TrainingState:
    """Training state a checkpoint stores besides the weights, so a run can continue where it stopped."""

    epochs_done: int = 0
    learning_rate: float | None = None
    best_score: float | None = None
    best_epoch: int | None = None
    early_stopping_wait: int = 0
    lr_plateau_wait: int = 0
    stopped_early: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path) -> "TrainingState":
        return cls(**json.loads((Path(folder) / CHECKPOINT_STATE).read_text()))


def build_model(config: TrainConfig):
    """Build the untrained network that `config` names."""
    if config.task == "segment":
        from braintumor.models.segmentation import build_segmenter

        return build_segmenter(config.architecture, input_size=config.input_size, base_filters=config.base_filters)
    from braintumor.models.classification import build_classifier

    return build_classifier(
        config.architecture,
        input_size=config.input_size,
        base_filters=config.base_filters,
        weights=config.weights,
        dropout=config.dropout,
    )


def float32_copy(model, config: TrainConfig):
    """Return `model` rebuilt under the float32 policy with the same weights.

    A model trained under mixed_bfloat16 stores that policy in every layer, so it would also
    compute in bfloat16 when scoring, and its results would depend on how it was trained.
    """
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        # The backbone's ImageNet weights are not loaded again: every weight is replaced below.
        copy = build_model(replace(config, weights=None))
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def compile_model(model, config: TrainConfig, learning_rate: float) -> None:
    """Attach Adam, the task's loss and the metrics that are logged each epoch."""
    from braintumor.models.losses import PooledDice, bce_dice_loss

    optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate)
    if config.task == "segment":
        model.compile(optimizer=optimizer, loss=bce_dice_loss, metrics=[PooledDice()])
    else:
        model.compile(
            optimizer=optimizer,
            loss=tf.keras.losses.BinaryCrossentropy(),
            metrics=[tf.keras.metrics.BinaryAccuracy(name="accuracy"), tf.keras.metrics.AUC(name="auc")],
        )


def to_tf_dataset(shard, config: TrainConfig, training: bool, steps_per_epoch: int | None = None, gate: "PassGate | None" = None):
    """Turn a Ray Data shard into a tf.data.Dataset of (slices, targets) batches.

    Targets are (B, 256, 256, 1) float32 masks for segmentation and (B, 1) float32 labels for
    classification. Training batches are shuffled through a local buffer and the last partial batch
    is dropped, so every worker runs the same number of steps.

    With `steps_per_epoch`, the training dataset is endless (see `_endless_batches`), and Keras
    must be given that step count.
    """
    import ray.train

    # MultiWorkerMirroredStrategy treats each batch of a worker's dataset as a global batch and
    # splits it across all replicas. Each replica gets batch_size slices per step only if the
    # worker's dataset yields batch_size * world_size; each worker still consumes all its rows.
    world_size = ray.train.get_context().get_world_size()
    global_batch = config.batch_size * world_size
    target_column = "mask" if config.task == "segment" else "label"
    dataset = shard.to_tf(
        feature_columns="image",
        label_columns=target_column,
        batch_size=global_batch,
        drop_last=training,
        local_shuffle_buffer_size=config.shuffle_buffer if training else None,
        prefetch_batches=2,
    )
    if training and steps_per_epoch is not None:
        # Only the element spec of the finite dataset above is kept.
        dataset = _endless_batches(shard, dataset.element_spec, target_column, global_batch, config.shuffle_buffer, gate)
    if config.task == "segment":
        dataset = dataset.map(lambda x, y: (x, tf.cast(y, tf.float32)))
    else:
        dataset = dataset.map(lambda x, y: (x, tf.reshape(tf.cast(y, tf.float32), (-1, 1))))
    if training and config.missing_sequence_rate > 0:
        rate = config.missing_sequence_rate
        dataset = dataset.map(lambda x, y: (simulate_missing_sequences(x, rate), y))
    if training and config.augment:
        from braintumor.training.augmentation import augment

        if config.task == "segment":
            dataset = dataset.map(lambda x, y: augment(x, y))
        else:
            dataset = dataset.map(lambda x, y: (augment(x), y))
    return dataset


class PassGate:
    """Stop decisions, one per epoch, that the endless training dataset waits for between passes.

    A pass over the shard is one epoch. tf.data reads ahead, so without the gate a worker could
    start a pass that Keras never uses and wait there for the other worker, which has stopped.
    """

    def __init__(self):
        self._decisions = queue.Queue()

    def epoch_ended(self, training_continues: bool) -> None:
        """Record whether another epoch follows the one that just ended."""
        self._decisions.put(training_continues)

    def close(self) -> None:
        """Let a waiting pass end the dataset, when training stops or fails."""
        self._decisions.put(False)

    def another_pass(self) -> bool:
        """Return whether another pass follows, waiting for the epoch that ends with this pass.

        Raises:
            RuntimeError: no decision within `PASS_DECISION_TIMEOUT_S`.
        """
        try:
            return self._decisions.get(timeout=PASS_DECISION_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError(
                f"no epoch ended within {PASS_DECISION_TIMEOUT_S:.0f} s of the end of a pass over the training "
                f"shard; the steps per epoch probably do not match the shard's batches"
            ) from None


def _endless_batches(shard, element_spec, target_column: str, batch_size: int, shuffle_buffer: int, gate: PassGate):
    """Return a tf.data.Dataset that reads the shard again each time a pass over it ends.

    Keras keeps one iterator of such a dataset for the whole run. Given a finite dataset, it makes
    a new iterator every epoch, and deleting the old one held both workers 40 to 95 s between
    epochs on a 2-core machine, before the next pass over the data had started. After each pass
    the generator waits for the epoch's decision from `gate` and ends the dataset when no epoch
    follows.

    Raises:
        RuntimeError: from the iterator, when a whole pass gives no batch (it would loop forever).
    """

    def passes():
        while True:
            batches = 0
            for batch in shard.iter_batches(
                batch_size=batch_size,
                drop_last=True,
                local_shuffle_buffer_size=shuffle_buffer,
                prefetch_batches=2,
                batch_format="numpy",
            ):
                batches += 1
                yield batch["image"], batch[target_column]
            if batches == 0:
                raise RuntimeError(f"a pass over this worker's training shard gave no batch of {batch_size} slices")
            if not gate.another_pass():
                return

    dataset = tf.data.Dataset.from_generator(passes, output_signature=element_spec)
    options = tf.data.Options()
    # Each worker reads its own shard, so tf.data must not shard it again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def epoch_steps(rows: int, config: TrainConfig) -> int | None:
    """Return the training steps of one pass over `rows` slices, or None when a worker has less than one batch.

    Ray Data gives each of the `config.num_workers` workers the same number of rows. Each worker
    batches `batch_size * num_workers` of them, drops the last partial batch, and
    MultiWorkerMirroredStrategy splits every such batch into `num_workers` steps of `batch_size`.
    With None, training makes a new finite dataset every epoch instead of one endless dataset.

    Raises:
        ValueError: fewer training slices than workers.
    """
    per_worker = rows // config.num_workers
    if per_worker == 0:
        raise ValueError(f"{rows} training slice(s) cannot feed {config.num_workers} worker(s); use more slices or fewer workers")
    global_batch = config.batch_size * config.num_workers
    if per_worker < global_batch:
        return None
    return per_worker // global_batch * config.num_workers


def simulate_missing_sequences(slices, rate: float):
    """Replace the pre- and post-contrast channels by FLAIR, each with probability `rate` per slice.

    The dataset fills a patient's missing sequence with a copy of FLAIR. Few training patients are
    like that, and a U-Net trained without this found no tumour in patients scanned with FLAIR only.
    Normalisation is per channel, so a copied FLAIR channel normalises to exactly the normalised
    FLAIR channel, and the copy can be made after normalisation.

    Args:
        slices: (B, H, W, 3) float32 normalised slices.
        rate: probability in [0, 1] of replacing each of the two channels.
    """
    batch = tf.shape(slices)[0]
    flair = slices[..., 1:2]
    replace_pre = tf.random.uniform((batch, 1, 1, 1)) < rate
    replace_post = tf.random.uniform((batch, 1, 1, 1)) < rate
    pre = tf.where(replace_pre, flair, slices[..., 0:1])
    post = tf.where(replace_post, flair, slices[..., 2:3])
    return tf.concat([pre, flair, post], axis=-1)


def train_loop_per_worker(config_values: dict) -> None:
    """Train one worker's replica; the Ray Train entry point."""
    import ray.train

    from braintumor.runtime import setup_logging

    setup_logging()
    config = TrainConfig.from_dict(config_values)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    if config.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.intra_op_threads)
    tf.keras.utils.set_random_seed(config.seed)
    # Before any model is built or loaded: layers take the global policy when they are created.
    tf.keras.mixed_precision.set_global_policy(config.precision)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    # The driver counts the training rows, see `epoch_steps`.
    steps_per_epoch = config_values.get("steps_per_epoch")
    gate = PassGate()
    train_data = to_tf_dataset(
        ray.train.get_dataset_shard("train"), config, training=True, steps_per_epoch=steps_per_epoch, gate=gate
    )
    validation_data = to_tf_dataset(ray.train.get_dataset_shard("validation"), config, training=False)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.resume:
        # A local path or an s3:// URI. The driver has already made a local path absolute.
        filesystem, path = locations.arrow_filesystem(config.resume)
        checkpoint = ray.train.Checkpoint(path, filesystem=filesystem)
    with strategy.scope():
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                # NOTE: compile=False restores the weights but not Adam's moment estimates, which
                # start again from zero after a resume.
                model = tf.keras.models.load_model(str(Path(folder) / CHECKPOINT_MODEL), compile=False, safe_mode=True)
                state = TrainingState.load(folder)
            if rank == 0:
                logger.info("resuming from a checkpoint after epoch %d", state.epochs_done)
        else:
            model = build_model(config)
            state = TrainingState()
        compile_model(model, config, state.learning_rate or config.learning_rate)

    finished = finished_reason(state, config)
    if finished:
        if rank == 0:
            logger.info("nothing left to train: %s", finished)
        return
    if state.stopped_early:
        if rank == 0:
            logger.info(
                "continuing a run that stopped early after epoch %d: %d epochs without a better %s, now --patience %d",
                state.epochs_done, state.early_stopping_wait, MONITORS[config.task][0], config.early_stopping_patience,
            )
        state.stopped_early = False

    monitor, mode = MONITORS[config.task]
    early_stopping = tf.keras.callbacks.EarlyStopping(
        monitor=monitor, mode=mode, patience=config.early_stopping_patience
    )
    reduce_lr = tf.keras.callbacks.ReduceLROnPlateau(
        monitor=monitor,
        mode=mode,
        factor=config.lr_factor,
        patience=config.lr_patience,
        min_lr=config.min_learning_rate,
    )
    callbacks = [
        early_stopping,
        reduce_lr,
        _RestoreWaits(early_stopping, reduce_lr, state),
        _ReportEpoch(config, state, early_stopping, reduce_lr, rank, gate),
    ]
    try:
        model.fit(
            train_data,
            validation_data=validation_data,
            epochs=config.epochs,
            initial_epoch=state.epochs_done,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            verbose=0,
        )
    finally:
        # A pass waiting for a decision must end before Keras deletes its iterator.
        gate.close()


def finished_reason(state: TrainingState, config: TrainConfig) -> str | None:
    """Return why a run resumed from `state` has nothing left to train, or None if it goes on.

    A run that stopped early goes on when `config` allows more epochs without a better score
    than the run had waited, so a rerun with a larger --patience continues it.
    """
    all_epochs_done = state.epochs_done >= config.epochs
    patience_spent = state.stopped_early and state.early_stopping_wait >= config.early_stopping_patience
    stopped = (
        f"the run stopped early after epoch {state.epochs_done}, {state.early_stopping_wait} epochs without a "
        f"better {MONITORS[config.task][0]}"
    )
    if all_epochs_done and patience_spent:
        return (
            f"{stopped}, at the last of {config.epochs} epochs; raise --epochs above {state.epochs_done} and "
            f"--patience above {state.early_stopping_wait} to train further"
        )
    if all_epochs_done:
        return f"the checkpoint already finished epoch {state.epochs_done} of {config.epochs}; raise --epochs to train further"
    if patience_spent:
        return f"{stopped}; raise --patience above {state.early_stopping_wait} to train further"
    return None


def _learning_rate(model) -> float:
    return float(tf.keras.backend.get_value(model.optimizer.learning_rate))


class _RestoreWaits(tf.keras.callbacks.Callback):
    """Put back the patience counters of a resumed run; Keras resets them in on_train_begin."""

    def __init__(self, early_stopping, reduce_lr, state: TrainingState):
        super().__init__()
        self.early_stopping, self.reduce_lr, self.state = early_stopping, reduce_lr, state

    def on_train_begin(self, logs=None):
        if self.state.best_score is None:
            return
        for callback, wait in ((self.early_stopping, self.state.early_stopping_wait), (self.reduce_lr, self.state.lr_plateau_wait)):
            callback.best = self.state.best_score
            callback.wait = wait


class _ReportEpoch(tf.keras.callbacks.Callback):
    """Log one line per epoch on rank 0 and report metrics, with a checkpoint from rank 0, to Ray Train."""

    def __init__(self, config: TrainConfig, state: TrainingState, early_stopping, reduce_lr, rank: int, gate: PassGate):
        super().__init__()
        self.config, self.state, self.rank, self.gate = config, state, rank, gate
        self.early_stopping, self.reduce_lr = early_stopping, reduce_lr
        self.epoch_started = self.last_progress = time.perf_counter()
        self.steps = 0
        self.epoch_ended = None  # when the previous epoch of this process ended, before its checkpoint
        self.checkpoint_seconds = 0.0
        self.between_epochs = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = self.last_progress = time.perf_counter()
        self.steps = 0
        # This covers the previous epoch's checkpoint and the start of this epoch's data. It is zero
        # for the first epoch of a process, whose start-up is not comparable.
        self.between_epochs = 0.0 if self.epoch_ended is None else self.epoch_started - self.epoch_ended
        if self.rank == 0 and self.epoch_ended is not None:
            logger.info(
                "epoch %d starts %.1f s after the previous one ended, %.1f s of it for the checkpoint",
                self.state.epochs_done + 1, self.between_epochs, self.checkpoint_seconds,
            )

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        now = time.perf_counter()
        if self.rank == 0 and now - self.last_progress > PROGRESS_INTERVAL_S:
            self.last_progress = now
            logger.info(
                "epoch %d: step %d, loss %.4f, %.1f s so far",
                self.state.epochs_done + 1, self.steps, float(logs.get("loss", float("nan"))), now - self.epoch_started,
            )

    def on_train_end(self, logs=None):
        # The last epoch has already recorded its decision. This covers a fit that ends otherwise.
        self.gate.close()

    def on_epoch_end(self, epoch, logs=None):
        import ray.train

        self.epoch_ended = time.perf_counter()
        seconds = self.epoch_ended - self.epoch_started
        metrics = {key: float(value) for key, value in (logs or {}).items() if key != "lr"}
        metrics["learning_rate"] = _learning_rate(self.model)
        metrics["seconds"] = seconds
        metrics["seconds_between_epochs"] = self.between_epochs
        metrics["epoch"] = epoch + 1

        state = self.state
        state.epochs_done = epoch + 1
        state.learning_rate = metrics["learning_rate"]
        # A run checkpointed before this entry existed gets zeros for its earlier epochs.
        state.history.setdefault("seconds_between_epochs", [0.0] * len(state.history.get("seconds", [])))
        for key, value in metrics.items():
            if key != "epoch":
                state.history.setdefault(key, []).append(value)
        monitor, mode = MONITORS[self.config.task]
        score = metrics[monitor]
        if state.best_score is None or (score > state.best_score if mode == "max" else score < state.best_score):
            state.best_score, state.best_epoch = score, epoch + 1
        state.early_stopping_wait = int(self.early_stopping.wait)
        state.lr_plateau_wait = int(self.reduce_lr.wait)
        state.stopped_early = bool(self.model.stop_training)
        # Before the checkpoint, so the next pass over the data starts while it is written.
        self.gate.epoch_ended(not state.stopped_early and epoch + 1 < self.config.epochs)

        if self.rank == 0:
            metric_text = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items() if key not in ("epoch", "seconds", "seconds_between_epochs", "learning_rate"))
            logger.info(
                "epoch %d/%d: %s, lr %.2g, %d steps, %.0f s%s",
                epoch + 1, self.config.epochs, metric_text, metrics["learning_rate"], self.steps, seconds,
                " (early stop)" if state.stopped_early else "",
            )

        with tempfile.TemporaryDirectory(prefix="braintumor-checkpoint-") as folder:
            # Every worker saves, so any collective work inside save() runs on all of them;
            # only rank 0's copy becomes the checkpoint.
            self.model.save(str(Path(folder) / CHECKPOINT_MODEL))
            (Path(folder) / CHECKPOINT_STATE).write_text(json.dumps(asdict(state), indent=2))
            (Path(folder) / CHECKPOINT_CONFIG).write_text(json.dumps(self.config.to_dict(), indent=2))
            checkpoint = ray.train.Checkpoint.from_directory(folder) if self.rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)
        self.checkpoint_seconds = time.perf_counter() - self.epoch_ended
