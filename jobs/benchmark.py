"""Measure training throughput of Ray Train against plain single-process `model.fit`, in one run.

    python jobs/benchmark.py --data outputs --slices 512 --epochs 3
    python jobs/benchmark.py --data outputs --threads-per-worker 1 2    # two Ray Train runs
    python jobs/benchmark.py --data outputs --slices 2206 --ray-precision float32 mixed_bfloat16   # the whole split

Three paths train the same segmenter (U-Net, the training defaults) on the same first `--slices`
training slices with the same global batch, one after the other on this machine:

- plain: one process, `model.fit` on the slices held in memory as a tf.data pipeline, float32;
- plain bf16: the same under the `mixed_bfloat16` Keras policy;
- Ray Train: `jobs/train.py`'s path, `TensorflowTrainer` with `--workers` workers fed by Ray Data
  from the Parquet shards, with augmentation, tumour repeats and sequence dropping off; one run
  per `--threads-per-worker` value and `--ray-precision` policy (float32 by default). With
  `--slices` at least the training split's size, it reads the whole split, as `jobs/train.py`
  does; fewer slices go through `--limit-train`, which keeps the slower block shuffle.

Each path runs `--epochs` epochs with `--validation-slices` validation slices. The first epoch
(graph tracing, Ray start-up) is left out, and the median of the others is reported as training
images per second. An epoch's time runs from the end of the previous one, so the Ray path's
checkpoint and the restart of its Ray Data iterators count too. Small `--slices` values weigh
those fixed costs more than a real epoch does (2,206 training slices in the default split). Prints a Markdown table and writes it with the raw figures to `--work`.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from braintumor.cli import run_job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="preprocessing output folder (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--work", default="/tmp/training-benchmark", help="folder for the Ray run and the results")
    parser.add_argument("--slices", type=int, default=512, help="training slices per epoch")
    parser.add_argument("--validation-slices", type=int, default=32, help="validation slices per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per path; the first is not counted")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per worker per step (global batch: this times --workers)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    parser.add_argument(
        "--threads-per-worker", type=int, nargs="+", default=[0], metavar="N",
        help="TensorFlow intra-op threads of each Ray Train worker; one Ray Train run per value "
        "(0: jobs/train.py's default, one per CPU the worker reserves)",
    )
    parser.add_argument("--ray-precision", nargs="+", default=["float32"], choices=("float32", "mixed_bfloat16"),
                        help="Keras precision policies of the Ray Train runs; one run per value and thread count")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2, because the first epoch is not counted")
    for threads in args.threads_per_worker:
        if threads < 0:
            parser.error(f"invalid --threads-per-worker value {threads}: expected 0 or more")

    from braintumor.paths import output_root
    from braintumor.runtime import setup_logging

    setup_logging()
    data = output_root(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    global_batch = args.batch_size * args.workers

    results = {"slices": args.slices, "validation_slices": args.validation_slices, "global_batch": global_batch, "runs": []}
    train, validation = load_slices(data, args.slices, args.validation_slices)
    for precision in ("float32", "mixed_bfloat16"):
        seconds = time_plain_fit(train, validation, global_batch, args.epochs, precision)
        results["runs"].append(summarise(f"plain model.fit, {precision}", precision, seconds, args.slices, global_batch))
    for precision in args.ray_precision:
        for threads in args.threads_per_worker:
            seconds = time_ray_train(data, work, args, threads, precision)
            label = f"Ray Train, {args.workers} workers, Ray Data, {precision}"
            if threads:
                label += f", {threads} TensorFlow thread{'s' if threads > 1 else ''} per worker"
            results["runs"].append(summarise(label, precision, seconds, args.slices, global_batch))

    table = format_table(results)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (work / "table.md").write_text(table)
    print(table)
    return 0


def load_slices(data: Path, count: int, validation_count: int):
    """Read the first slices of the train and validation Parquet splits into (images, masks) arrays."""
    import numpy as np
    import pyarrow.parquet as pq

    from braintumor.preprocessing.pipeline import parquet_dir

    arrays = []
    for split, limit in (("train", count), ("validation", validation_count)):
        table = pq.read_table(parquet_dir(data, split), columns=["image", "mask"]).slice(0, limit)
        images = np.stack(table.column("image").to_numpy(zero_copy_only=False)).astype(np.float32)
        masks = np.stack(table.column("mask").to_numpy(zero_copy_only=False)).astype(np.float32)
        if len(images) < limit:
            raise ValueError(f"{parquet_dir(data, split)}: {len(images)} slices, fewer than the {limit} requested")
        arrays.append((images.reshape(-1, 256, 256, 3), masks.reshape(-1, 256, 256, 1)))
    return arrays[0], arrays[1]


def split_rows(data: Path, split: str) -> int:
    """Return the number of slices in a preprocessed split, from its Parquet footers."""
    import pyarrow.parquet as pq

    from braintumor.preprocessing.pipeline import parquet_dir

    return sum(pq.read_metadata(path).num_rows for path in Path(parquet_dir(data, split)).glob("*.parquet"))


def time_plain_fit(train, validation, global_batch: int, epochs: int, precision: str) -> list[float]:
    """Return the seconds of each epoch of `model.fit` on in-memory slices under a Keras precision policy."""
    import tensorflow as tf

    from braintumor.training.config import TrainConfig
    from braintumor.training.loop import build_model, compile_model

    config = TrainConfig(task="segment")
    tf.keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_model(config)
        compile_model(model, config, config.learning_rate)
        batches = tf.data.Dataset.from_tensor_slices(train).batch(global_batch, drop_remainder=True).prefetch(2)
        validation_batches = tf.data.Dataset.from_tensor_slices(validation).batch(global_batch)
        timer = make_epoch_timer()
        model.fit(batches, validation_data=validation_batches, epochs=epochs, callbacks=[timer], verbose=0)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    return timer.seconds


def time_ray_train(data: Path, work: Path, args, threads: int, precision: str) -> list[float]:
    """Return the seconds of each epoch of a Ray Train run, as its workers measured them.

    `threads` sets each worker's TensorFlow intra-op threads; 0 keeps the trainer's default.
    `precision` is the Keras precision policy of the workers.
    """
    import shutil

    from braintumor.training.config import TrainConfig
    from braintumor.training.trainer import train

    config = TrainConfig(
        task="segment",
        data=str(data),
        output=str(work),
        name="ray-train",
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_workers=args.workers,
        augment=False,
        tumour_copies=0,
        missing_sequence_rate=0.0,
        # The whole split when --slices covers it: a limited split keeps the block shuffle that
        # reads the whole split before each epoch's first batch (see training_datasets).
        limit_train=args.slices if args.slices < split_rows(data, "train") else None,
        limit_validation=args.validation_slices,
        intra_op_threads=threads or None,
        precision=precision,
    )
    shutil.rmtree(config.run_dir, ignore_errors=True)
    started = time.perf_counter()
    train(config)
    history = json.loads((config.run_dir / "history.json").read_text())
    print(f"Ray Train run: {time.perf_counter() - started:.0f} s end to end")
    # What a user waits per epoch: from the second epoch on, also the previous epoch's checkpoint
    # and the restart of the Ray Data iterators, which fall between the epochs.
    return [seconds + between for seconds, between in zip(history["seconds"], history["seconds_between_epochs"])]


def make_epoch_timer():
    """Return a Keras callback whose `seconds` lists the wall time of each epoch, validation included.

    From the second epoch on, an epoch's time runs from the end of the previous one, as the Ray
    path's does.
    """
    import tensorflow as tf

    class EpochTimer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.started, self.ended = [], 0.0, None

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter() if self.ended is None else self.ended

        def on_epoch_end(self, epoch, logs=None):
            self.ended = time.perf_counter()
            self.seconds.append(self.ended - self.started)

    return EpochTimer()


def summarise(path: str, precision: str, seconds: list[float], slices: int, global_batch: int) -> dict:
    images = (slices // global_batch) * global_batch
    counted = seconds[1:]
    median = statistics.median(counted)
    return {"path": path, "precision": precision, "epoch_seconds": [round(value, 2) for value in seconds], "median_epoch_s": round(median, 2),
            "images_per_s": round(images / median, 2)}


def format_table(results: dict) -> str:
    baseline = results["runs"][0]["images_per_s"]
    lines = [
        f"{results['slices']} training and {results['validation_slices']} validation slices per epoch, global batch "
        f"{results['global_batch']}; medians over epochs 2 and later. Epoch times include validation and, from the "
        "second epoch on, the time since the previous epoch ended (the Ray path's checkpoint and data start-up).",
        "",
        "| path | epoch seconds | training images/s | ratio to plain float32 | ratio to plain, same precision |",
        "|---|---|---|---|---|",
    ]
    plain = {run["precision"]: run["images_per_s"] for run in results["runs"] if run["path"].startswith("plain")}
    for run in results["runs"]:
        same = f"{run['images_per_s'] / plain[run['precision']]:.2f}" if run["precision"] in plain else ""
        lines.append(
            f"| {run['path']} | {', '.join(str(value) for value in run['epoch_seconds'])} | {run['images_per_s']} | "
            f"{run['images_per_s'] / baseline:.2f} | {same} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_job(main)
