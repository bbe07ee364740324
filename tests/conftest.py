"""Fixtures shared by the test suite: the shared LGG data, one local Ray instance and tiny fake datasets."""

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import braintumor  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LGG_ROOT = REPO_ROOT / "../shared/data/lgg/kaggle_3m"

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
