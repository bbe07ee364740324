"""The serving benchmark: bare predict latency and HTTP load with batching on and off, in one run.

Run by `jobs/benchmark_serving.py`. Everything stays on 127.0.0.1: Ray, Serve and the load-test
clients share one machine, so the clients' own CPU use is part of the measured latency.
"""

import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from braintumor.data.io import SLICE_SHAPE, read_slice
from braintumor.models.io import INFO_FILE
from braintumor.serving.config import ServiceConfig
from braintumor.serving.loadtest import LoadResult, Payload, run_load_test

logger = logging.getLogger(__name__)

SECTION_HEADING = "## Serving"
WARM_UP_REQUESTS = 32
# Batching counts as paying for itself when it raises throughput by more than this fraction.
BATCHING_MIN_GAIN = 0.10


@dataclass
class BareLatency:
    """Latency of `SlicePredictor.predict` called in-process on one slice, without HTTP or Serve."""

    calls: int
    median_seconds: float
    p99_seconds: float
    batch_size: int
    batch_median_seconds: float  # one call on `batch_size` slices


@dataclass
class BenchmarkResult:
    bare: BareLatency
    loads: dict[str, LoadResult]  # by mode name: "batching on", "batching off"
    config: ServiceConfig
    payload_count: int
    patients: int
    machine: str
    load_at_start: str
    command: str
    started: str


def collect_payloads(data_root: Path, patients: int) -> tuple[list[Payload], list[Path]]:
    """Read every slice file of the first `patients` patient folders (by name) as raw TIFF bodies."""
    folders = sorted(path for path in Path(data_root).iterdir() if path.is_dir())[:patients]
    paths = [path for folder in folders for path in sorted(folder.glob("*.tif")) if not path.stem.endswith("_mask")]
    if not paths:
        raise FileNotFoundError(f"no slice files (*.tif without _mask) in the first {patients} patient folders of {data_root}")
    return [Payload(path.read_bytes(), "image/tiff") for path in paths], paths


def measure_bare_latency(config: ServiceConfig, slice_paths: list[Path], calls: int, batch_size: int) -> BareLatency:
    """Time `SlicePredictor.predict` on single slices (and on one batch) in this process, after a warm-up."""
    from braintumor.inference import SlicePredictor

    predictor = SlicePredictor(config.segmenter, config.classifier)
    slices = np.stack([read_slice(path) for path in slice_paths[: max(calls, batch_size)]])
    for size in (1, batch_size):
        predictor.predict(np.zeros((size, *SLICE_SHAPE), dtype=np.uint8))

    single = []
    for i in range(calls):
        started = time.perf_counter()
        predictor.predict(slices[i % len(slices)][None])
        single.append(time.perf_counter() - started)
    batched = []
    for i in range(max(5, calls // 10)):
        started = time.perf_counter()
        predictor.predict(np.resize(slices, (batch_size, *SLICE_SHAPE)))
        batched.append(time.perf_counter() - started)
    return BareLatency(
        calls=calls,
        median_seconds=statistics.median(single),
        p99_seconds=float(np.percentile(single, 99)),
        batch_size=batch_size,
        batch_median_seconds=statistics.median(batched),
    )


def run_benchmark(
    config: ServiceConfig,
    data_root: Path,
    port: int,
    requests: int = 1000,
    concurrency: int = 16,
    patients: int = 4,
    bare_calls: int = 100,
    deadline_seconds: float = 900.0,
) -> BenchmarkResult:
    """Measure bare latency, then run the load test against Serve with batching on, then off.

    Each mode gets a fresh deployment of the same models and `WARM_UP_REQUESTS` uncounted requests.
    """
    from ray import serve

    from braintumor.serving.app import APP_NAME, build_app, check_port_free
    from braintumor.runtime import init_ray

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_at_start = load_average()
    config = config.resolved()
    payloads, paths = collect_payloads(data_root, patients)
    logger.info("benchmark: %d slices of %d patients as payloads", len(payloads), patients)

    bare = measure_bare_latency(config, paths, bare_calls, config.max_batch_size)
    logger.info("bare predict: median %.1f ms, p99 %.1f ms over %d calls", 1000 * bare.median_seconds, 1000 * bare.p99_seconds, bare.calls)

    check_port_free("127.0.0.1", port)
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/predict"
    loads = {}
    try:
        for mode, batching in (("batching on", True), ("batching off", False)):
            serve.run(build_app(config.model_copy(update={"batching": batching})), name=APP_NAME, route_prefix="/")
            run_load_test(url, payloads, requests=WARM_UP_REQUESTS, concurrency=concurrency, deadline_seconds=120)
            result = run_load_test(url, payloads, requests=requests, concurrency=concurrency, deadline_seconds=deadline_seconds)
            summary = result.summary()
            logger.info(
                "%s: %d/%d requests, %d errors, median %.1f ms, p99 %.1f ms, %.1f requests/s, mean batch %.2f",
                mode,
                summary["completed"],
                requests,
                summary["errors"],
                summary["median_ms"],
                summary["p99_ms"],
                summary["throughput_per_s"],
                summary["mean_batch_size"],
            )
            for error in result.errors[:5]:
                logger.error("%s: request failed: %s", mode, error)
            loads[mode] = result
    finally:
        serve.shutdown()

    return BenchmarkResult(
        bare=bare,
        loads=loads,
        config=config,
        payload_count=len(payloads),
        patients=patients,
        machine=describe_machine(),
        load_at_start=load_at_start,
        command=" ".join(["python", *sys.argv]),
        started=started,
    )


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()} {platform.release()}"


def describe_model(folder: str) -> str:
    """Return a model folder (relative to the working directory when inside it) with its version and architecture."""
    path = Path(folder)
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    info = json.loads((Path(folder) / INFO_FILE).read_text())
    return f"`{path}` ({info.get('architecture')}, version `{info.get('version') or 'unset'}`)"


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages, which show whether other work shared the machine."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def render_section(result: BenchmarkResult) -> str:
    """Write the "## Serving" section of docs/BENCHMARKS.md from one run's results."""
    bare, config = result.bare, result.config
    bare_ms = 1000 * bare.median_seconds
    on, off = result.loads["batching on"], result.loads["batching off"]
    on_ratio = 1000 * on.latency_percentile(50) / bare_ms
    off_ratio = 1000 * off.latency_percentile(50) / bare_ms

    def row(label: str, load: LoadResult) -> str:
        s = load.summary()
        return (
            f"| {label} | {s['completed']} of {s['requests']} | {s['errors']} | {s['median_ms']:.1f} | {s['p99_ms']:.1f} "
            f"| {s['throughput_per_s']:.1f} | {s['mean_batch_size']:.2f} |"
        )

    classifier = describe_model(config.classifier) if config.classifier else "none (probability from the segmenter)"
    lines = [
        SECTION_HEADING,
        "",
        f"Run on {result.started} with `{result.command}`.",
        f"Machine: {result.machine}; load average {result.load_at_start} at the start and {load_average()} at the end.",
        f"Models: segmenter {describe_model(config.segmenter)}, classifier {classifier}.",
        f"Load: {on.requests} `POST /predict` requests per mode from {on.concurrency} concurrent clients (threads with "
        f"keep-alive connections in the benchmark's own process) over 127.0.0.1, cycling through {result.payload_count} "
        f"real slices of {result.patients} patients sent as raw TIFF bodies; one replica; "
        f"{WARM_UP_REQUESTS} uncounted warm-up requests per mode.",
        "",
        "| what | requests | errors | median ms | p99 ms | throughput (requests/s) | mean batch |",
        "|---|---|---|---|---|---|---|",
        f"| bare `SlicePredictor.predict`, 1 slice, in-process | {bare.calls} calls | 0 | {bare_ms:.1f} | "
        f"{1000 * bare.p99_seconds:.1f} | {1 / bare.median_seconds:.1f} (one at a time) | 1 |",
        f"| bare `SlicePredictor.predict`, {bare.batch_size} slices, in-process | - | - | {1000 * bare.batch_median_seconds:.1f} | - | "
        f"{bare.batch_size / bare.batch_median_seconds:.1f} slices/s | {bare.batch_size} |",
        row(f"HTTP, batching on (max {config.max_batch_size}, {config.batch_wait_ms:g} ms wait)", on),
        row("HTTP, batching off", off),
        "",
        f"HTTP median over bare single-slice median: {off_ratio:.1f}x without batching and {on_ratio:.1f}x with it "
        f"(target: at most 2x, {'met' if min(on_ratio, off_ratio) <= 2 else 'not met'}).",
        "",
        queueing_explanation(result),
        "",
        batching_verdict(on, off),
        "",
    ]
    return "\n".join(lines)


def queueing_explanation(result: BenchmarkResult) -> str:
    """Explain the HTTP median by queueing: with every client always waiting, median latency is about clients / throughput."""
    bare = result.bare
    off = result.loads["batching off"]
    needed = off.concurrency / (2 * bare.median_seconds)
    per_slice_batched = 1000 * bare.batch_median_seconds / bare.batch_size
    return (
        f"With {off.concurrency} clients always waiting on one replica, each request queues behind the others, so "
        f"the median is about clients / throughput ({off.concurrency} / {off.throughput:.1f} per s = "
        f"{1000 * off.concurrency / off.throughput:.0f} ms without batching). A median of 2x the bare latency would "
        f"need {needed:.0f} requests/s, {needed * bare.median_seconds:.1f} times what one slice at a time allows; "
        f"in-process, a batch of {bare.batch_size} cost {per_slice_batched:.1f} ms per slice against "
        f"{1000 * bare.median_seconds:.1f} ms for one slice."
    )


def batching_verdict(on: LoadResult, off: LoadResult) -> str:
    """Say whether batching paid in this run (over BATCHING_MIN_GAIN more throughput) and what the service default is."""
    gain = on.throughput / off.throughput - 1 if off.throughput else float("nan")
    pays = gain > BATCHING_MIN_GAIN
    default = "on" if ServiceConfig().batching else "off"
    return (
        f"Batching {'pays' if pays else 'does not pay'} in this run: {on.throughput:.1f} against {off.throughput:.1f} "
        f"requests/s ({100 * gain:+.0f}%), median {1000 * on.latency_percentile(50):.1f} against "
        f"{1000 * off.latency_percentile(50):.1f} ms. The service's default is batching {default} "
        "(`jobs/serve.py --batching` or `--no-batching` chooses)."
    )


def write_section(document: Path, section: str) -> None:
    """Replace the "## Serving" section of `document` (up to the next "## " heading), or append it."""
    text = document.read_text() if document.is_file() else "# Benchmarks\n"
    lines = text.splitlines()
    if SECTION_HEADING in lines:
        start = lines.index(SECTION_HEADING)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section.rstrip("\n").splitlines() + ([""] if end < len(lines) else [])
    else:
        lines += ["", *section.rstrip("\n").splitlines()]
    document.write_text("\n".join(lines).rstrip("\n") + "\n")
