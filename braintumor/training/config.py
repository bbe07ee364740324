"""Configuration of one training run, written as `config.json` beside its results."""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from braintumor import locations
from braintumor.models.classification import CLASSIFIERS
from braintumor.models.segmentation import SEGMENTERS

TASKS = ("segment", "classify")
# Keras dtype policies for training. Under mixed_bfloat16 the layers compute in bfloat16 and keep
# float32 weights. Saved models compute in float32 either way.
PRECISIONS = ("float32", "mixed_bfloat16")
# "auto" picks mixed_bfloat16 for CPU workers on a CPU with bfloat16 instructions, else float32.
AUTO_PRECISION = "auto"
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_INFO = Path("/proc/cpuinfo")
DEFAULT_ARCHITECTURE = {"segment": "unet", "classify": "smallcnn"}


@dataclass
class TrainConfig:
    """Everything that decides what a training run does.

    Paths are stored as strings so the config travels to Ray workers and into JSON unchanged.
    `data`, `output` and `resume` may be local paths or `s3://` URIs.
    """

    task: str = "segment"
    architecture: str = ""
    data: str = "outputs"  # folder or S3 prefix written by preprocessing, with parquet/<split>/
    output: str = "outputs/runs"  # runs are written to <output>/<name>/, a folder or an S3 prefix
    name: str = ""
    epochs: int = 30
    batch_size: int = 16  # slices per worker per step
    learning_rate: float = 1e-3
    early_stopping_patience: int = 6  # epochs without a better validation score before stopping
    lr_patience: int = 3  # epochs without a better validation score before the learning rate is cut
    lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    input_size: int = 128
    base_filters: int = 16
    weights: str | None = None
    dropout: float = 0.3
    missing_sequence_rate: float = 0.25  # chance per slice that pre- or post-contrast becomes a FLAIR copy
    augment: bool = True  # random flips, rotations, zoom and intensity changes of training slices
    tumour_copies: int | None = None  # extra copies of each training tumour slice per epoch; None: 1 to segment, 0 to classify
    shuffle_buffer: int = 256  # rows held by each worker's local shuffle buffer
    seed: int = 0
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # None: leave one CPU of the cluster to Ray Data
    intra_op_threads: int | None = None  # TensorFlow threads per worker; None: CPUs per worker
    resume: str | None = None  # a checkpoint folder to continue from
    limit_train: int | None = None  # use only the first N training slices (tests, smoke runs)
    limit_validation: int | None = None
    precision: str = "float32"  # one of PRECISIONS, or AUTO_PRECISION (resolved when the config is made)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got '{self.task}'")
        if not self.architecture:
            self.architecture = DEFAULT_ARCHITECTURE[self.task]
        allowed = SEGMENTERS if self.task == "segment" else CLASSIFIERS
        if self.architecture not in allowed:
            raise ValueError(f"architecture for task '{self.task}' must be one of {allowed}, got '{self.architecture}'")
        if self.tumour_copies is None:
            self.tumour_copies = 1 if self.task == "segment" else 0
        if self.tumour_copies < 0:
            raise ValueError(f"tumour_copies must be at least 0, got {self.tumour_copies}")
        if not self.name:
            self.name = f"{self.task}-{self.architecture}"
        for name in ("epochs", "batch_size", "num_workers", "input_size", "base_filters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.missing_sequence_rate <= 1:
            raise ValueError(f"missing_sequence_rate must be in [0, 1], got {self.missing_sequence_rate}")
        if self.precision == AUTO_PRECISION:
            self.precision = automatic_precision(self.use_gpu)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} or '{AUTO_PRECISION}', got '{self.precision}'")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")

    @property
    def run_dir(self) -> str | Path:
        """Folder of the run: a Path locally, or an `s3://` URI string for S3."""
        return locations.join(self.output, self.name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def save(self, path: str | Path) -> str | Path:
        """Write the configuration as JSON to a local file or an S3 object, replacing it whole."""
        path = locations.as_location(path)
        locations.write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def cpu_has_bfloat16(cpu_info: Path = CPU_INFO) -> bool:
    """Return whether /proc/cpuinfo lists a bfloat16 instruction set. Off Linux the file is missing, so False."""
    try:
        text = cpu_info.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)
    return False


def automatic_precision(use_gpu: bool, cpu_info: Path = CPU_INFO) -> str:
    """Return the precision "auto" stands for on this machine.

    bfloat16 was measured only on CPUs with AVX-512 BF16 (1.42 to 1.55 times faster on an Intel
    Xeon and an AMD EPYC, equal Dice at 20 epochs), so GPU runs stay float32. Without the
    instructions bfloat16 is emulated and slower.
    NOTE: the machine that makes the config decides, so set the precision explicitly on a cluster
    whose workers have other CPUs than the driver.
    """
    if not use_gpu and cpu_has_bfloat16(cpu_info):
        return "mixed_bfloat16"
    return "float32"
