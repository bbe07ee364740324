"""Measure batch scoring against bare `model.predict`, and its peak memory, in one run.

    python jobs/benchmark_scoring.py --data ../shared/data/lgg/kaggle_3m --work /tmp/scoring-benchmark

Builds archives of N slices (the dataset's slices, repeated under new patient names when N is
larger than the dataset) and then, one after the other on the same machine:

- bare: the segmenter (with its stored mask settings) and the classifier on the first
  `--throughput-slices` slices, decoded and normalised in memory beforehand, in batches of
  `--batch-size` (only the model calls and mask making are timed), once before the jobs and once
  after them, because the speed of a shared machine can drift during a 40-minute run;
- job: `jobs/score.py` on a zip archive of the same slices, timed from process start to exit,
  with no memory sampling, and on zip archives of each larger `--throughput-slices` size, since
  the job's fixed start-up weighs less on a larger archive;
- with `--running-cluster`, the same timed jobs again against a Ray head on 127.0.0.1 that this
  script starts beforehand, as `ray job submit` runs a job: the job then starts no Ray instance
  of its own and stops none;
- job on a zip and on a gzip-compressed tar archive of each of `--memory-slices`, for the peak
  memory of the job's process tree. A compressed tar archive can only be read as one stream
  (one reader actor hands each read task its group of members), so it is the case where
  reading could run ahead of the actors and pile up slices in memory;
- with `--formats`, job on the whole dataset as it is (each slice once) as the folder itself, as
  a zip and as a plain tar archive, comparing the three labels tables.

Memory is the resident set size (RSS) of the `jobs/score.py` process and all its descendants (the
Ray processes it starts and their workers), sampled every 0.25 s from /proc, so Linux only. Pages
that processes share, such as Ray's object store, count once per process that maps them, so the
sum overstates the real use. The sum of the proportional set sizes (PSS), which splits each shared
page among the processes that map it, does not. The largest single process is reported too.
Sampling costs CPU: reading smaps_rollup of about 15 processes took 37 ms of CPU per sample on a
2-core machine, about 15% of one core at 4 samples per second. So the job timed against the bare
path, and the jobs of `--formats`, run without it.

Prints a Markdown table for docs/BENCHMARKS.md and writes it, with the raw figures, to the work folder.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

from braintumor.cli import run_job

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_S = 0.25
WORK_MARKER = ".scoring-benchmark"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINTUMOR_DATA, else ../shared/data/lgg/kaggle_3m)")
    parser.add_argument("--work", default="/tmp/scoring-benchmark", help="folder for the archives, outputs and results; emptied first if an earlier benchmark made it")
    parser.add_argument("--segmenter", help="segmenter model folder (default: the trained default run if present, else an untrained one of the same size)")
    parser.add_argument("--classifier", help="classifier model folder (default: as for --segmenter)")
    parser.add_argument("--throughput-slices", type=int, nargs="+", default=[2000],
                        help="archive sizes of the bare-versus-job comparison; the bare path runs on the smallest")
    parser.add_argument("--running-cluster", action="store_true",
                        help="also time those jobs against a Ray head started beforehand, as `ray job submit` runs them")
    parser.add_argument("--memory-slices", type=int, nargs="*", default=[1000, 4000],
                        help="archive sizes whose peak memory is measured; none for a speed comparison only")
    parser.add_argument("--batch-size", type=int, default=32, help="slices per model call, in both paths")
    parser.add_argument("--actors", type=int, default=1, help="model actors of the job")
    parser.add_argument("--formats", action="store_true", help="also score the whole dataset as a folder, a zip and a tar and compare the labels tables")
    parser.add_argument("--compare-only", action="store_true",
                        help="run nothing: compare the labels tables a finished benchmark left in --work again, and rewrite its table")
    args = parser.parse_args()
    if args.compare_only:
        return compare_again(Path(args.work))

    from braintumor.paths import data_root
    from braintumor.runtime import setup_logging

    setup_logging()
    work = prepare_work_folder(Path(args.work))
    data = data_root(args.data)
    segmenter, classifier, models_used = resolve_models(args.segmenter, args.classifier, work / "models")
    slices = sorted(path for path in data.glob("*/*.tif") if not path.stem.endswith("_mask"))

    results = {"machine": describe_machine(), "models": models_used, "batch_size": args.batch_size, "actors": args.actors, "runs": []}
    # The bare path runs first and last, so that a machine whose speed drifts during the run
    # shows it, and the ratios use the mean of the two.
    run_bare(results, "first", slices, args, segmenter, classifier)
    # The job timed against the bare path runs without the sampler. The memory jobs run with it.
    jobs = [("zip", size, False) for size in sorted(args.throughput_slices)]
    jobs += [("zip", size, True) for size in sorted(args.memory_slices)]
    jobs += [("tar.gz", size, True) for size in sorted(args.memory_slices)]
    for archive_format, size, sampled in jobs:
        archive = archive_of(slices, size, archive_format, work)
        output = work / f"scored-{archive_format}-{size}{'' if sampled else '-timed'}"
        run = time_scoring_job(archive, output, segmenter, classifier, args.batch_size, args.actors, sample_memory=sampled)
        results["runs"].append({"path": "job", "format": archive_format, "slices": size, "memory_sampled": sampled, **run})
        print(f"job, {archive_format}, {size} slices{'' if sampled else ', not sampled'}: {json.dumps(run)}", file=sys.stderr)
    if args.running_cluster:
        with RayHead(work / "ray-head") as head:
            for size in sorted(args.throughput_slices):
                output = work / f"scored-zip-{size}-running-cluster"
                run = time_scoring_job(
                    archive_of(slices, size, "zip", work), output, segmenter, classifier, args.batch_size, args.actors,
                    sample_memory=False, env=head.env,
                )
                results["runs"].append({"path": "job", "format": "zip", "slices": size, "memory_sampled": False, "running_cluster": True, **run})
                print(f"job, zip, {size} slices, running cluster: {json.dumps(run)}", file=sys.stderr)

    results["same_labels"] = compare_labels(work, args.memory_slices)
    if args.formats:
        results["formats"] = compare_formats(data, slices, work, segmenter, classifier, args.batch_size, args.actors)

    run_bare(results, "last", slices, args, segmenter, classifier)

    table = format_table(results)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (work / "table.md").write_text(table)
    print(table)
    return 0


def run_bare(results: dict, when: str, slices: list[Path], args, segmenter: Path, classifier: Path) -> None:
    """Measure the bare path and add it to `results["runs"]`."""
    count = min(args.throughput_slices)
    bare = measure_bare_predict(slices, count, segmenter, classifier, args.batch_size)
    results["runs"].append({"path": "bare model.predict", "when": when, "slices": count, **bare})
    print(f"bare ({when}), {count} slices: {json.dumps(bare)}", file=sys.stderr)


def compare_again(work: Path) -> int:
    """Recompute the comparisons of the labels tables in a finished benchmark's work folder and rewrite its table."""
    results = json.loads((work / "results.json").read_text())
    sizes = [int(size) for size in results["same_labels"]]
    results["same_labels"] = compare_labels(work, sizes)
    if results.get("formats"):
        results["formats"] = {key: value for key, value in results["formats"].items() if key in ("slices", "runs")}
        results["formats"].update(compare_dataset_runs(work))
    table = format_table(results)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (work / "table.md").write_text(table)
    print(table)
    return 0


def prepare_work_folder(work: Path) -> Path:
    """Empty and return the work folder, refusing to delete a non-empty folder this script did not make."""
    marker = work / WORK_MARKER
    if work.exists() and any(work.iterdir()) and not marker.exists():
        raise ValueError(f"{work} is not empty and was not made by this benchmark. Pass an empty or new --work folder.")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    marker.write_text("made by jobs/benchmark_scoring.py; emptied by its next run\n")
    return work


def resolve_models(segmenter: str | None, classifier: str | None, folder: Path) -> tuple[Path, Path, str]:
    """Return the segmenter and classifier folders to use and a sentence saying which they are.

    Each model is the one given, else the default training run's if it exists, else an untrained
    one of the default training size saved to `folder`. An untrained model costs the same to run as
    a trained one, which is all a speed benchmark needs.
    """
    from braintumor.inference import default_model_dirs
    from braintumor.models.classification import build_classifier
    from braintumor.models.io import ModelInfo, save_model
    from braintumor.models.segmentation import build_segmenter
    from braintumor.preprocessing.normalization import NORMALIZATION

    builders = {"segment": (build_segmenter, "unet"), "classify": (build_classifier, "smallcnn")}
    chosen, described = [], []
    for task, given, trained in zip(("segment", "classify"), (segmenter, classifier), default_model_dirs()):
        if given:
            chosen.append(Path(given).resolve())
            described.append(f"{task}: given, {given}")
        elif (trained / "model.keras").is_file():
            chosen.append(trained.resolve())
            described.append(f"{task}: trained, {trained}")
        else:
            build, architecture = builders[task]
            info = ModelInfo(task=task, architecture=architecture, normalization=NORMALIZATION, input_size=128, version="untrained-benchmark")
            chosen.append(save_model(build(), info, folder / task))
            described.append(f"{task}: untrained {architecture} of the default training size (128x128 inside, 16 base filters)")
    return chosen[0], chosen[1], "; ".join(described)


def write_archive(slices: list[Path], count: int, target: Path) -> Path:
    """Write a zip, .tar or .tar.gz of `count` slices. Repeats go under patient folders named `<patient>-copy<k>`."""
    members = []
    for index in range(count):
        image = slices[index % len(slices)]
        copy = index // len(slices)
        patient = image.parent.name if copy == 0 else f"{image.parent.name}-copy{copy}"
        members.append((image, f"{patient}/{image.name}"))

    if target.name.endswith((".tar.gz", ".tar")):
        with tarfile.open(target, "w:gz" if target.name.endswith(".gz") else "w") as archive:
            for image, name in members:
                archive.add(image, name)
    else:
        # Stored, not deflated: the slices are compressed TIFFs already.
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
            for image, name in members:
                archive.write(image, name)
    return target


def archive_of(slices: list[Path], count: int, archive_format: str, work: Path) -> Path:
    """Return the work folder's archive of `count` slices in `archive_format`, writing it the first time."""
    archive = work / f"slices-{count}.{archive_format}"
    if not archive.exists():
        write_archive(slices, count, archive)
    return archive


class RayHead:
    """A Ray head on 127.0.0.1 with 2 CPUs, run by `ray start --block` in its own process group.

    `env` is what a job needs to join it: RAY_ADDRESS and the head's authentication token. The head
    has its own temporary folder, so a plain `ray.init()` elsewhere on the machine does not join it,
    and leaving the `with` block stops only its process group (`ray stop` would stop every Ray
    instance of the user).
    """

    def __init__(self, temp_dir: Path, start_timeout_s: float = 120):
        self.temp_dir = temp_dir
        self.start_timeout_s = start_timeout_s
        self.process = None
        self.env = {}

    def __enter__(self) -> "RayHead":
        from braintumor.runtime import WORKER_ENV

        self.temp_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        env.update(WORKER_ENV)
        # Loopback only, and a token of its own: Ray 2.60's `ray start` turns token authentication on.
        env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(32).hex()})
        ray = str(Path(sys.executable).with_name("ray"))
        command = [
            ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--include-dashboard", "false", "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(self.temp_dir),
            "--disable-usage-stats",
        ]
        log = self.temp_dir.parent / "ray-head.log"
        with log.open("w") as output:
            self.process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.env = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        deadline = time.monotonic() + self.start_timeout_s
        while subprocess.run([ray, "status", "--address", self.env["RAY_ADDRESS"]], env=self.env, capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the Ray head exited or did not start within {self.start_timeout_s:.0f} s. See its output in {log}")
            time.sleep(2)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.process = None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def time_scoring_job(
    archive: Path, output: Path, segmenter: Path, classifier: Path, batch_size: int, actors: int, sample_memory: bool = True,
    env: dict | None = None,
) -> dict:
    """Run jobs/score.py on `archive` and return its wall time, slices per second and, if sampled, peak memory.

    `env` replaces the job's environment (to join a running cluster). The time to the first part
    file, which the actor writes after its first batch, is the job's fixed start-up.
    """
    command = [
        sys.executable, str(REPO_ROOT / "jobs" / "score.py"), "--input", str(archive), "--output", str(output),
        "--segmenter", str(segmenter), "--classifier", str(classifier), "--batch-size", str(batch_size), "--actors", str(actors),
    ]
    log = output.parent / f"{output.name}.log"
    started = time.perf_counter()
    started_at = time.time()
    with log.open("w") as log_file:
        job = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        sampler = MemorySampler(job.pid) if sample_memory else None
        if sampler is not None:
            sampler.start()
        status = job.wait()
        if sampler is not None:
            sampler.stop()
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit status {status}, see {log}")

    summary = json.loads((output / "summary.json").read_text())
    timing = {
        "wall_s": round(wall, 1),
        "slices_per_s": round(summary["scored"] / wall, 2),
        "job_s": round(summary["seconds"], 1),
        "steady_slices_per_s": steady_rate(output),
        "first_part_s": round(min((path.stat().st_mtime for path in (output / ".parts").glob("*.parquet")), default=float("nan")) - started_at, 1),
    }
    if sampler is None:
        return timing
    return {
        **timing,
        "peak_rss_tree_mib": round(sampler.peak_total / 2**20),
        "peak_rss_process_mib": round(sampler.peak_single / 2**20),
        "peak_pss_tree_mib": round(sampler.peak_pss_total / 2**20),
        "peak_pss_largest_processes": sampler.largest_processes(),
    }


def steady_rate(output: Path) -> float:
    """Slices per second between the first and the last part file written, once models are loaded."""
    import pyarrow.parquet as pq

    parts = sorted((path.stat().st_mtime, pq.read_metadata(path).num_rows) for path in (output / ".parts").glob("*.parquet"))
    if len(parts) < 2 or parts[-1][0] == parts[0][0]:
        return float("nan")
    return round(sum(rows for _, rows in parts[1:]) / (parts[-1][0] - parts[0][0]), 2)


def measure_bare_predict(slices: list[Path], count: int, segmenter: Path, classifier: Path, batch_size: int) -> dict:
    """Time the two models' `predict` on `count` slices already decoded and normalised in memory."""
    import numpy as np

    from braintumor.data.io import read_slice
    from braintumor.models.io import load_model
    from braintumor.postprocessing import mask_settings, segment
    from braintumor.preprocessing.normalization import normalize_slices

    segmentation_model, segmentation_info = load_model(segmenter)
    classification_model, _ = load_model(classifier)
    # The job applies the segmenter's stored mask settings, flip averaging included, so this does too.
    settings = mask_settings(segmentation_info)
    inputs = np.empty((count, 256, 256, 3), dtype=np.float32)
    for index in range(count):
        inputs[index] = normalize_slices(read_slice(slices[index % len(slices)]))
    # One warm-up batch, as the job's actor also traces its functions before its first part file.
    segment(segmentation_model, inputs[:batch_size], settings)
    classification_model.predict_on_batch(inputs[:batch_size])

    started = time.perf_counter()
    for start in range(0, count, batch_size):
        batch = inputs[start : start + batch_size]
        segment(segmentation_model, batch, settings)
        classification_model.predict_on_batch(batch)
    seconds = time.perf_counter() - started
    return {"wall_s": round(seconds, 1), "slices_per_s": round(count / seconds, 2)}


def compare_labels(work: Path, sizes: list[int]) -> dict:
    """Compare the labels tables of the zip and the tar.gz run of each size (see `compare_tables`)."""
    import pandas as pd

    comparisons = {}
    for size in sizes:
        tables = [pd.read_csv(work / f"scored-{archive_format}-{size}" / "labels.csv") for archive_format in ("zip", "tar.gz")]
        comparisons[str(size)] = compare_tables(*tables)
        print(f"{size} slices, zip against tar.gz: {json.dumps(comparisons[str(size)])}", file=sys.stderr)
    return comparisons


def compare_tables(first, second) -> dict:
    """Compare two labels tables, row by member, without their `source` column.

    Returns whether the tables are equal, whether every column other than the tumour probability
    is equal (members, patients, labels, areas, mask files, model versions), and the largest
    difference of a tumour probability. TensorFlow's CPU kernels can round a slice's probability
    differently in batches of other slices, and a tar archive is read in its own order, so its
    batches need not be those of a zip.
    """
    tables = [table.drop(columns=["source"]).sort_values("member").reset_index(drop=True) for table in (first, second)]
    others = [table.drop(columns=["tumour_probability"]) for table in tables]
    same_shape = tables[0].shape == tables[1].shape
    difference = (tables[0]["tumour_probability"] - tables[1]["tumour_probability"]).abs().max() if same_shape else float("nan")
    return {
        "rows": len(tables[0]),
        "identical": bool(tables[0].equals(tables[1])),
        "identical_except_probability": bool(others[0].equals(others[1])),
        "max_probability_difference": float(difference),
    }


def compare_formats(data: Path, slices: list[Path], work: Path, segmenter: Path, classifier: Path, batch_size: int, actors: int) -> dict:
    """Score every slice of `data` once as the folder, a zip and a tar; return the runs and how the labels tables compare."""
    inputs = {
        "folder": data,
        "zip": write_archive(slices, len(slices), work / "dataset.zip"),
        "tar": write_archive(slices, len(slices), work / "dataset.tar"),
    }
    runs = {}
    for name, source in inputs.items():
        runs[name] = time_scoring_job(source, work / f"dataset-{name}", segmenter, classifier, batch_size, actors, sample_memory=False)
        print(f"dataset as {name}: {json.dumps(runs[name])}", file=sys.stderr)
    return {"slices": len(slices), "runs": runs, **compare_dataset_runs(work)}


def compare_dataset_runs(work: Path) -> dict:
    """Compare the labels tables of the zip and the tar run of the whole dataset with the folder run's."""
    import pandas as pd

    tables = {name: pd.read_csv(work / f"dataset-{name}" / "labels.csv") for name in ("folder", "zip", "tar")}
    comparisons = {name: compare_tables(tables["folder"], tables[name]) for name in ("zip", "tar")}
    print(f"whole dataset against the folder run: {json.dumps(comparisons)}", file=sys.stderr)
    return {"against_folder": comparisons}


class MemorySampler:
    """Sampler, in a thread, of the summed and the largest RSS of a process and its descendants.

    It also sums their proportional set size (PSS), which divides each shared page among the
    processes that map it, so the object store's pages count once in total.
    """

    def __init__(self, root_pid: int):
        self.root_pid = root_pid
        self.peak_total = 0
        self.peak_single = 0
        self.peak_pss_total = 0
        # pid -> (peak PSS in bytes, process name when it was reached)
        self.peak_pss_by_pid: dict[int, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def largest_processes(self, count: int = 6) -> list[dict]:
        """Return the `count` processes with the highest peak PSS: name, pid and peak in MiB."""
        ranked = sorted(self.peak_pss_by_pid.items(), key=lambda item: item[1][0], reverse=True)[:count]
        return [{"name": name, "pid": pid, "peak_pss_mib": round(pss / 2**20)} for pid, (pss, name) in ranked]

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = descendants(self.root_pid)
            sizes = [rss_bytes(pid) for pid in pids]
            self.peak_total = max(self.peak_total, sum(sizes))
            total_pss = 0
            for pid in pids:
                pss = pss_bytes(pid)
                total_pss += pss
                if pss > self.peak_pss_by_pid.get(pid, (0, ""))[0]:
                    self.peak_pss_by_pid[pid] = (pss, process_name(pid))
            self.peak_pss_total = max(self.peak_pss_total, total_pss)
            self.peak_single = max(self.peak_single, max(sizes, default=0))
            self._stop.wait(SAMPLE_INTERVAL_S)


def descendants(root_pid: int) -> list[int]:
    """Return `root_pid` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name in brackets may contain spaces. The parent pid is the 2nd field after it.
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [root_pid]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def process_name(pid: int) -> str:
    """Return a short name for a process: a Ray worker's title (ray::...), else its program and script."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    if arguments[0].startswith("ray::"):
        return arguments[0].strip()[:60]
    return " ".join(Path(argument).name for argument in arguments[:2] if argument)[:60]


def pss_bytes(pid: int) -> int:
    """Return a process's proportional set size from /proc/<pid>/smaps_rollup, or 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return 0


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def describe_machine() -> str:
    import tensorflow as tf

    import ray

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpus = len(tf.config.list_physical_devices("GPU"))
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), {memory_gib:.0f} GiB RAM, {gpus} GPU(s) visible to TensorFlow; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Ray {ray.__version__}"
    )


def format_table(results: dict) -> str:
    bare_runs = [run for run in results["runs"] if run["path"] == "bare model.predict"]
    bare_rate = sum(run["slices_per_s"] for run in bare_runs) / len(bare_runs)
    lines = [
        f"Machine: {results['machine']}. Models: {results['models']}. Batch size {results['batch_size']}, "
        f"{results['actors']} actor(s).",
        "",
    ]
    if len(bare_runs) > 1:
        rates = [run["slices_per_s"] for run in bare_runs]
        lines += [
            f"The bare path ran first and last: {rates[0]} and {rates[-1]} slices/s. \"of bare\" divides by their mean, {bare_rate:.2f}.",
            "",
        ]
    # Memory columns appear only when some job sampled memory.
    memory_keys = ("peak_rss_tree_mib", "peak_rss_process_mib", "peak_pss_tree_mib")
    sampled = any("peak_rss_tree_mib" in run for run in results["runs"])
    columns = ["path", "slices", "wall s", "slices/s", "of bare", "first part file, s", "steady slices/s", "steady, of bare"]
    if sampled:
        columns += ["peak RSS, process tree", "peak RSS, largest process", "peak PSS, process tree"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for bare in bare_runs:
        label = f"bare model.predict (in memory{', ' + bare['when'] if 'when' in bare else ''})"
        cells = [label, bare["slices"], bare["wall_s"], bare["slices_per_s"], f"{bare['slices_per_s'] / bare_rate:.2f}"]
        lines.append("| " + " | ".join(map(str, cells + [""] * (len(columns) - len(cells)))) + " |")
    for run in results["runs"]:
        if run["path"] != "job":
            continue
        ratio = run["slices_per_s"] / bare_rate
        notes = [run["format"]]
        if "peak_rss_tree_mib" not in run:
            notes.append("memory not sampled")
        if run.get("running_cluster"):
            notes.append("running cluster")
        steady = run["steady_slices_per_s"]
        cells = [
            f"jobs/score.py ({', '.join(notes)})", run["slices"], run["wall_s"], run["slices_per_s"], f"{ratio:.2f}",
            run.get("first_part_s", ""), steady, f"{steady / bare_rate:.2f}",
        ]
        if sampled:
            cells += [f"{run[key]} MiB" if key in run else "" for key in memory_keys]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    measured = [run for run in results["runs"] if run["path"] == "job" and run.get("peak_pss_largest_processes")]
    if measured:
        lines += ["", "Peak PSS of each job's largest processes (each process's own peak, in MiB):", "",
                  "| job | processes |", "|---|---|"]
        for run in measured:
            processes = ", ".join(f"{item['name']}: {item['peak_pss_mib']}" for item in run["peak_pss_largest_processes"])
            lines.append(f"| {run['format']}, {run['slices']} slices | {processes} |")
    if results["same_labels"]:
        lines += ["", "Labels tables of the zip and the tar.gz run of each size:", ""] + comparison_table(
            {f"{size} slices, zip / tar.gz": comparison for size, comparison in results["same_labels"].items()}
        )
    formats = results.get("formats")
    if formats:
        lines += [
            "",
            f"The whole dataset, each of its {formats['slices']} slices once, as the folder, a zip and a plain tar:",
            "",
            "| input | wall s | slices/s | of bare |",
            "|---|---|---|---|",
        ]
        for name, run in formats["runs"].items():
            lines.append(f"| {name} | {run['wall_s']} | {run['slices_per_s']} | {run['slices_per_s'] / bare_rate:.2f} |")
        lines += ["", "Their labels tables against the folder run's:", ""] + comparison_table(
            {f"{name} / folder": comparison for name, comparison in formats["against_folder"].items()}
        )
    return "\n".join(lines) + "\n"


def comparison_table(comparisons: dict[str, dict]) -> list[str]:
    lines = [
        "| runs compared | rows | identical | identical but the probability | max probability difference |",
        "|---|---|---|---|---|",
    ]
    for name, comparison in comparisons.items():
        lines.append(
            f"| {name} | {comparison['rows']} | {comparison['identical']} | {comparison['identical_except_probability']} | "
            f"{comparison['max_probability_difference']:.1e} |"
        )
    return lines


if __name__ == "__main__":
    run_job(main)
