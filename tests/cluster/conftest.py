"""Fixtures for running the project the way a cluster or a notebook user does: a tiny real dataset, free ports."""

import shutil
import socket
from pathlib import Path

import pytest

# Four real patients, so that train, validation and test get 2, 1 and 1 of them, and five slices of
# each. Slices 1 and 2 are empty in all four. Each patient has a tumour on at least two of 10, 11, 13.
TINY_PATIENTS = (
    "TCGA_CS_4942_19970222",
    "TCGA_CS_4943_20000902",
    "TCGA_CS_4944_20010208",
    "TCGA_CS_5393_19990606",
)
TINY_SLICE_NUMBERS = (1, 2, 10, 11, 13)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_lgg(lgg_root, tmp_path_factory) -> Path:
    """A kaggle_3m-style folder of 20 real slices with their masks, copied from the shared dataset."""
    root = tmp_path_factory.mktemp("tiny_lgg") / "kaggle_3m"
    for patient in TINY_PATIENTS:
        source = lgg_root / patient
        if not source.is_dir():
            pytest.skip(f"patient folder {source} not found in the LGG dataset")
        (root / patient).mkdir(parents=True)
        for number in TINY_SLICE_NUMBERS:
            for suffix in (".tif", "_mask.tif"):
                name = f"{patient}_{number}{suffix}"
                shutil.copyfile(source / name, root / patient / name)
    return root
