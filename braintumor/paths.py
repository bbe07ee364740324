"""Default locations of the dataset and of everything the jobs write."""

import os
from pathlib import Path

DATA_ENV = "BRAINTUMOR_DATA"
OUTPUT_ENV = "BRAINTUMOR_OUTPUT"

# Relative to the working directory: a `kaggle_3m` folder two levels up from a clone, as laid out
# in the README. Any other place is chosen with BRAINTUMOR_DATA or the jobs' --data option.
DEFAULT_DATA = Path("../shared/data/lgg/kaggle_3m")
DEFAULT_OUTPUT = Path("outputs")


def data_root(path: str | os.PathLike | None = None) -> Path:
    """Return the dataset folder or index CSV: `path`, else $BRAINTUMOR_DATA, else the default.

    Raises:
        FileNotFoundError: if the chosen location does not exist, with what to do about it.
    """
    chosen = Path(path or os.environ.get(DATA_ENV) or DEFAULT_DATA)
    if not chosen.exists():
        raise FileNotFoundError(
            f"dataset not found at '{chosen}'. Download the LGG segmentation dataset "
            f"(kaggle_3m folder), then pass --data PATH or set {DATA_ENV}=PATH."
        )
    return chosen


def output_root(path: str | os.PathLike | None = None) -> Path:
    """Return the folder for preprocessed data and runs: `path`, else $BRAINTUMOR_OUTPUT, else ./outputs."""
    return Path(path or os.environ.get(OUTPUT_ENV) or DEFAULT_OUTPUT)
