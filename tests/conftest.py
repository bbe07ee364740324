"""Fixtures shared by the test suite: the shared LGG data, one local Ray instance and tiny fake datasets."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import braintumor  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LGG_ROOT = REPO_ROOT / "../shared/data/lgg/kaggle_3m"

def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The S3 tests talk to a moto server on 127.0.0.1. Its endpoint and fake credentials are set before
# any test starts Ray, so that Ray workers inherit them. Instance metadata lookups are turned off:
# boto3 would otherwise try 169.254.169.254 when it looks for credentials.
S3_PORT = _free_loopback_port()
os.environ.update(
    AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{S3_PORT}",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
)
for _variable in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
    os.environ.pop(_variable, None)

# Five real patients of 20 slices each, every one with tumour slices, so a 70/10/20 split of them
# gives 3 / 1 / 1 patients and each split contains tumour slices.
PREPROCESSED_PATIENTS = (
    "TCGA_CS_4942_19970222",
    "TCGA_CS_4943_20000902",
    "TCGA_CS_4944_20010208",
    "TCGA_CS_5393_19990606",
    "TCGA_CS_6290_20000917",
)


@pytest.fixture(scope="session")
def load_job():
    """Return a function that imports jobs/<name>.py as a module, for tests of its helpers."""
    import importlib.util

    jobs = Path(__file__).resolve().parent.parent / "jobs"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"job_{name}", jobs / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def lgg_root() -> Path:
    """The shared kaggle_3m folder: $BRAINTUMOR_DATA, else ../shared/data/lgg/kaggle_3m beside the repository."""
    root = Path(os.environ.get("BRAINTUMOR_DATA") or DEFAULT_LGG_ROOT).resolve()
    if not root.is_dir():
        pytest.skip(f"LGG dataset not found at {root}; set BRAINTUMOR_DATA to its kaggle_3m folder")
    return root


@pytest.fixture(scope="session")
def real_index(lgg_root):
    """The IndexResult of the whole shared dataset, built once per session (it reads 6,500 files)."""
    from braintumor.data.index import build_index

    return build_index(lgg_root)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance on 127.0.0.1 with 2 CPUs for the whole test session."""
    import ray

    from braintumor.runtime import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def start_moto_server(port: int, extra_env: dict | None = None) -> subprocess.Popen:
    """Start moto's S3-compatible server on 127.0.0.1:`port` and wait until it accepts connections."""
    env = dict(os.environ, **(extra_env or {}))
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"moto server did not listen on 127.0.0.1:{port} within 60 s")


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 for the session; returns its endpoint URL."""
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (pip install -e '.[test]')")
    process = start_moto_server(S3_PORT)
    yield os.environ["AWS_ENDPOINT_URL_S3"]
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server, request):
    """A new empty bucket on the test S3 server; returns its s3:// URI."""
    from braintumor import s3

    name = "test-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{name}-{os.urandom(3).hex()}"
    s3.client().create_bucket(Bucket=name)
    return f"s3://{name}"


def write_fake_patient(
    root: Path,
    patient_id: str,
    tumour_slices: tuple[int, ...] = (2,),
    n_slices: int = 3,
    seed: int = 0,
) -> list[Path]:
    """Write one kaggle_3m-style patient folder of uncompressed 256x256 slices and masks.

    Slice n's mask has a 10x10 tumour square when n is in `tumour_slices`, else it is empty.
    Returns the image paths, slice 1 first.
    """
    rng = np.random.default_rng(seed)
    folder = root / patient_id
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for number in range(1, n_slices + 1):
        image = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
        mask = np.zeros((256, 256), dtype=np.uint8)
        if number in tumour_slices:
            mask[100:110, 120:130] = 255
        image_path = folder / f"{patient_id}_{number}.tif"
        tifffile.imwrite(image_path, image, photometric="rgb")
        tifffile.imwrite(folder / f"{patient_id}_{number}_mask.tif", mask)
        images.append(image_path)
    return images


@pytest.fixture
def make_fake_dataset(tmp_path):
    """Return a function that writes a fake kaggle_3m folder and returns its path.

    `make_fake_dataset(n_patients=3, n_slices=3)` writes patients FAKE_0 ... FAKE_<n-1>, each with
    a tumour on slice 2 only.
    """

    def make(n_patients: int = 3, n_slices: int = 3, name: str = "kaggle_fake") -> Path:
        root = tmp_path / name
        for number in range(n_patients):
            write_fake_patient(root, f"FAKE_{number}", tumour_slices=(2,), n_slices=n_slices, seed=number)
        return root

    return make


@pytest.fixture(scope="session")
def preprocessed(lgg_root, ray_local, tmp_path_factory):
    """Preprocess five real patients once per session; returns (PreprocessResult, data folder).

    The patient folders are symlinked into a temporary kaggle_3m-style folder, so the shared data is
    only read.
    """
    from braintumor.preprocessing.pipeline import preprocess

    data = tmp_path_factory.mktemp("lgg_subset")
    for patient in PREPROCESSED_PATIENTS:
        source = lgg_root / patient
        if not source.is_dir():
            pytest.skip(f"patient folder {source} not found in the LGG dataset")
        (data / patient).symlink_to(source, target_is_directory=True)
    output = tmp_path_factory.mktemp("preprocessed")
    return preprocess(data, output), data
