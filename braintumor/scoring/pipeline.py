"""The Ray Data stages of batch scoring: read and decode, then score on a pool of model actors.

The read stage reads each slice's encoded bytes, so zip and tar members are read there and actors
never open the archive. A compressed tar archive can only be read from start to end, so one
`TarStreamReader` actor reads it and hands each read task its group of members in turn. It does
the same for an uncompressed tar whose members cannot be read at their offsets.

Each `SliceScorer` actor loads the models once, decodes a batch with the checks of
`braintumor.data.io`, normalises it with the training normalisation, predicts, and writes one mask
PNG per slice and then the batch's part file, in that order.

Decoding happens in the actor, between two model calls, rather than in the read stage. A read task
that decodes while TensorFlow runs takes a core from one of its threads, and every operation of the
model then waits for that thread.
"""

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from braintumor import locations
from braintumor.data.io import SLICE_SHAPE, SliceReadError, decode_slice
from braintumor.inference import SlicePredictions
from braintumor.scoring.sources import TAR, SliceEntry, SourceListing, iter_slice_bytes, predicted_mask_name
from braintumor.scoring.storage import OutputStorage
from braintumor.scoring.tables import FAILED, SCORED, write_part

logger = logging.getLogger(__name__)

# CPUs each read task reserves. Reading and decoding are light next to the models. Actors holding
# every CPU of the cluster would leave none for the read stage, which then never runs, and the job
# hangs without an error.
READ_CPUS = 0.5
# Read tasks each read this many blocks. Ray Data holds back tasks it has not started yet but not a
# running one, so the size of one task's group, not of the input, bounds how far reading gets ahead.
BLOCKS_PER_READ_TASK = 4
MIN_BLOCK_BYTES = 2**20
# Batches the object store may hold at once: enough for each actor to have its next batch
# ready while it works, and few enough that the memory stays the same for any input size.
BATCHES_IN_FLIGHT_PER_ACTOR = 4
MIN_BATCHES_IN_FLIGHT = 8
# `data` contains the slice file's encoded bytes, or null with the reason in `read_error`.
BLOCK_SCHEMA = pa.schema([("member", pa.string()), ("data", pa.binary()), ("read_error", pa.string())])
SLICE_BYTES = int(np.prod(SLICE_SHAPE))


def score_pending(
    listing: SourceListing,
    pending: list[SliceEntry],
    storage: OutputStorage,
    segmenter_dir: str | Path,
    classifier_dir: str | Path | None,
    run_id: str,
    batch_size: int,
    actors: int,
    cpus_per_actor: float,
) -> Counter:
    """Score `pending` on a pool of actors and return how many rows ended SCORED and FAILED.

    Starts or joins Ray first.

    Raises:
        ValueError: the actors and the read stage need more CPUs than the cluster has.
    """
    from braintumor.runtime import init_ray

    init_ray()
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    if actors * cpus_per_actor + READ_CPUS > cluster_cpus:
        raise ValueError(
            f"{actors} actor(s) x {cpus_per_actor} CPU plus {READ_CPUS} CPU for reading need more than the "
            f"cluster's {cluster_cpus} CPUs. Lower --actors or --cpus-per-actor."
        )

    datasource = SliceBytesDatasource(listing.kind, str(listing.path), pending, batch_size)
    if listing.kind == TAR and any(entry.span is None for entry in pending):
        reader_class = ray.remote(num_cpus=0)(TarStreamReader)
        datasource.stream_reader = reader_class.remote(str(listing.path), datasource.groups())
    try:
        return _score_dataset(datasource, storage, segmenter_dir, classifier_dir, run_id, actors, cpus_per_actor)
    finally:
        if datasource.stream_reader is not None:
            ray.kill(datasource.stream_reader)


def _score_dataset(
    datasource: "SliceBytesDatasource",
    storage: OutputStorage,
    segmenter_dir: str | Path,
    classifier_dir: str | Path | None,
    run_id: str,
    actors: int,
    cpus_per_actor: float,
) -> Counter:
    batch_size = datasource.rows_per_block
    # One read task per group, because a larger count would make Ray Data split the blocks.
    dataset = ray.data.read_datasource(datasource, num_cpus=READ_CPUS, override_num_blocks=len(datasource.groups()))
    scored = dataset.map_batches(
        SliceScorer,
        # Absolute paths, because the actors' working folder need not be this process's.
        fn_constructor_kwargs={
            "segmenter_dir": locations.absolute(segmenter_dir),
            "classifier_dir": locations.absolute(classifier_dir) if classifier_dir is not None else None,
            "storage": storage,
            "run_id": run_id,
            "batch_size": batch_size,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
    )
    _bound_memory(scored.context, batch_size, actors)
    logger.info("scoring %d slices with %d actor(s), %d slices per batch", len(datasource.entries), actors, batch_size)
    counts = Counter()
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        counts.update(batch["status"].tolist())
    return counts


def _bound_memory(context: ray.data.DataContext, batch_size: int, actors: int) -> None:
    """Set a dataset's own context so that its memory does not grow with the size of the input.

    With Ray 2.60's defaults, a read task's tables are joined into blocks of up to 128 MiB
    (`target_max_block_size`), more than a read task's whole group. The read stage also runs ahead of the
    actors until an object store budget taken from the cluster's memory is used: 750 MB of decoded
    slices on a 24 GiB machine, filled by an archive of 4,000 slices but not by one of 1,000.
    Blocks of about one batch and a few batches in flight per actor keep the memory flat.
    """
    batch_bytes = batch_size * SLICE_BYTES
    context.target_max_block_size = max(2 * batch_bytes, MIN_BLOCK_BYTES)
    limits = context.execution_options.resource_limits
    context.execution_options.resource_limits = limits.copy(
        object_store_memory=max(MIN_BATCHES_IN_FLIGHT, BATCHES_IN_FLIGHT_PER_ACTOR * actors) * batch_bytes
    )


class SliceBytesDatasource(Datasource):
    """Ray Data source of (member, data, read_error) rows for the slices still to score.

    `stream_reader` is the `TarStreamReader` actor of a tar archive read as a stream, None otherwise.
    """

    def __init__(
        self,
        kind: str,
        container: str,
        entries: list[SliceEntry],
        rows_per_block: int,
        stream_reader: "ray.actor.ActorHandle | None" = None,
    ):
        self.kind = kind
        self.container = container
        self.entries = entries
        self.rows_per_block = rows_per_block
        self.stream_reader = stream_reader

    def estimate_inmemory_data_size(self) -> int:
        return len(self.entries) * SLICE_BYTES

    def groups(self) -> list[list[SliceEntry]]:
        """Split the entries into the groups that each read task reads."""
        size = self.rows_per_block * BLOCKS_PER_READ_TASK
        if self.kind == TAR:
            # In archive order also when read at offsets, so a task's reads move forward through
            # the file, which keeps S3's ranged GETs few.
            return group_in_archive_order(self.entries, size)
        return [self.entries[start : start + size] for start in range(0, len(self.entries), size)]

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        # `parallelism` is ignored: the groups follow the batch size instead.
        return [
            ReadTask(
                _read_function(self.kind, self.container, group, self.rows_per_block)
                if self.stream_reader is None
                else _stream_read_function(self.stream_reader, index, self.rows_per_block),
                BlockMetadata(
                    num_rows=len(group),
                    size_bytes=len(group) * SLICE_BYTES,
                    exec_stats=None,
                    input_files=None,
                ),
                schema=BLOCK_SCHEMA,
            )
            for index, group in enumerate(self.groups())
        ]


def _read_function(kind: str, container: str, entries: list[SliceEntry], rows_per_block: int):
    """Return the function a Ray Data read task calls to read `entries`.

    Ray Data 2.60 names this function in its warning about read tasks over 1 MiB, so it needs a
    `__name__`, which `functools.partial` lacks. The entries of an 8,000-member tar exceed 1 MiB.
    """

    def read_slices():
        return _read_blocks(kind, container, entries, rows_per_block)

    return read_slices


def _stream_read_function(stream_reader: "ray.actor.ActorHandle", group_index: int, rows_per_block: int):
    """Return the function a read task calls to fetch group `group_index` from a `TarStreamReader`."""

    def read_streamed_slices():
        members = ray.get(stream_reader.read_group.remote(group_index))
        return _blocks_of(members, rows_per_block)

    return read_streamed_slices


def _read_blocks(kind: str, container: str, entries: list[SliceEntry], rows_per_block: int):
    """Yield Arrow blocks of `rows_per_block` rows with each slice's bytes or the reason it could not be read."""
    members = ((entry.member, data, read_error) for entry, data, read_error in iter_slice_bytes(kind, container, entries))
    yield from _blocks_of(members, rows_per_block)


def _blocks_of(members, rows_per_block: int):
    """Yield Arrow blocks of `rows_per_block` (member, data, read_error) rows."""
    rows = {"member": [], "data": [], "read_error": []}
    for member, data, read_error in members:
        rows["member"].append(member)
        rows["data"].append(data if read_error is None else None)
        rows["read_error"].append(read_error)
        if len(rows["member"]) == rows_per_block:
            yield pa.table(rows, schema=BLOCK_SCHEMA)
            rows = {"member": [], "data": [], "read_error": []}
    if rows["member"]:
        yield pa.table(rows, schema=BLOCK_SCHEMA)


def group_in_archive_order(entries: list[SliceEntry], size: int) -> list[list[SliceEntry]]:
    """Split tar entries into groups of `size` in the order a stream of the archive reaches them."""
    ordered = sorted(entries, key=lambda entry: int(entry.location))
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


class TarStreamReader:
    """Ray actor that reads a tar archive once, from start to end, for the read tasks.

    Read task i calls `read_group(i)` and gets the (member, data, read_error) rows of group i. Ray
    Data starts read tasks in list order, only a few at a time as its memory budget allows, so
    the stream moves on only as fast as the model actors take slices. Requests arrive in about
    that order, and a group read before its task requests it waits in memory. A group requested
    again, by a retried read task, starts a new stream.
    NOTE: nothing caps the waiting groups but that order. test_large_tar_read_in_groups checks
    that at most 4 of 71 groups wait (Ray 2.60, 2 CPUs).
    """

    def __init__(self, container: str, groups: list[list[SliceEntry]]):
        self.container = container
        self.groups = groups
        self._stream = None
        self._stream_position = 0  # index of the next group the stream yields
        self._waiting: dict[int, list] = {}
        self._delivered: set[int] = set()
        self._max_waiting = 0

    def max_groups_waiting(self) -> int:
        """Return the largest number of groups that waited in memory at once."""
        return self._max_waiting

    def read_group(self, index: int) -> list[tuple[str, bytes | None, str | None]]:
        if index in self._waiting:
            return self._deliver(index, self._waiting.pop(index))
        if self._stream is None or index < self._stream_position:
            if self._stream is not None:
                logger.warning("reading %s again from the start for group %d of its members", self.container, index)
            self._stream = self._grouped_rows()
            self._stream_position = 0
        for group_index, rows in self._stream:
            self._stream_position = group_index + 1
            if group_index == index:
                return self._deliver(index, rows)
            if group_index not in self._delivered:
                self._waiting[group_index] = rows
                self._max_waiting = max(self._max_waiting, len(self._waiting))
        raise IndexError(f"{self.container}: no group {index}; the archive has {len(self.groups)} groups of members")

    def _deliver(self, index: int, rows: list) -> list:
        self._delivered.add(index)
        return rows

    def _grouped_rows(self):
        """Yield (group index, rows) in group order while reading the archive once."""
        group_of = {int(entry.location): index for index, group in enumerate(self.groups) for entry in group}
        collected: dict[int, list] = {}
        next_index = 0
        entries = [entry for group in self.groups for entry in group]
        # Entries come in archive order, and those the stream could not reach come last, in the same
        # order, so the groups fill up one after the other.
        for entry, data, read_error in iter_slice_bytes(TAR, self.container, entries):
            collected.setdefault(group_of[int(entry.location)], []).append((entry.member, data, read_error))
            while next_index < len(self.groups) and len(collected.get(next_index, ())) == len(self.groups[next_index]):
                yield next_index, collected.pop(next_index)
                next_index += 1


class SliceScorer:
    """Ray Data actor: decodes and scores a batch of slices, writes their masks, then the batch's part file."""

    def __init__(
        self, segmenter_dir: str, classifier_dir: str | None, storage: OutputStorage, run_id: str, batch_size: int
    ):
        from braintumor.inference import SlicePredictor

        self.predictor = SlicePredictor(segmenter_dir, classifier_dir)
        self.storage = storage
        self.run_id = run_id
        self.batch_size = batch_size
        versions = self.predictor.versions
        self.versions = {"segmenter_version": versions["segmenter"], "classifier_version": versions.get("classifier", "")}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        members, images, failures = [], [], []
        for member, data, read_error in zip(batch["member"], batch["data"], batch["read_error"]):
            if read_error is not None:
                failures.append((member, read_error))
                continue
            try:
                images.append(decode_slice(data, member))
            except SliceReadError as error:
                failures.append((member, error.reason))
                continue
            members.append(member)

        rows = {column: [] for column in ("member", "status", "tumour_probability", "label", "tumour_area_pixels", "reason")}
        if images:
            predictions = self._predict_padded(np.stack(images))
            for index, member in enumerate(members):
                try:
                    self.storage.write_bytes(predicted_mask_name(member), _encode_mask(predictions.masks[index]))
                except OSError as error:
                    # A name the file system rejects, or a full disk: the slice fails, the job goes on.
                    logger.warning("cannot write the predicted mask of %s: %s", member, error)
                    failures.append((member, f"cannot write the predicted mask ({error})"))
                    continue
                rows["member"].append(member)
                rows["status"].append(SCORED)
                rows["tumour_probability"].append(float(predictions.probability[index]))
                rows["label"].append(int(predictions.label[index]))
                rows["tumour_area_pixels"].append(int(predictions.area[index]))
                rows["reason"].append(None)
        for member, reason in failures:
            rows["member"].append(member)
            rows["status"].append(FAILED)
            rows["tumour_probability"].append(None)
            rows["label"].append(None)
            rows["tumour_area_pixels"].append(None)
            rows["reason"].append(reason)

        count = len(rows["member"])
        write_part(self.storage, {**rows, **{key: [value] * count for key, value in self.versions.items()}}, self.run_id)
        return {"member": np.array(rows["member"], dtype=object), "status": np.array(rows["status"], dtype=object)}

    def _predict_padded(self, images: np.ndarray):
        """Predict with the batch padded by blank slices to a multiple of the batch size.

        TensorFlow's CPU kernels round differently for different batch sizes: the classifier's
        probability moved by 1e-7 between batches of 20 and of 7 slices. Without the padding, a
        slice's result would depend on how many slices shared its batch, and a resumed run would
        not reproduce an uninterrupted one bit for bit.
        """
        count = len(images)
        padded_count = -(-count // self.batch_size) * self.batch_size
        if padded_count > count:
            blank = np.zeros((padded_count - count, *images.shape[1:]), dtype=images.dtype)
            images = np.concatenate([images, blank])
        predictions = self.predictor.predict(images)
        return SlicePredictions(
            probability=predictions.probability[:count],
            label=predictions.label[:count],
            masks=predictions.masks[:count],
            area=predictions.area[:count],
        )


def _encode_mask(mask: np.ndarray) -> bytes:
    """Encode a (256, 256) bool mask as an 8-bit PNG with 0 for background and 255 for tumour."""
    import cv2

    ok, encoded = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise RuntimeError("OpenCV failed to encode a predicted mask as PNG")
    return encoded.tobytes()
