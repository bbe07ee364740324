"""Default locations of the dataset and of everything the jobs write."""

import os
from pathlib import Path

from braintumor import locations, s3

DATA_ENV = "BRAINTUMOR_DATA"
OUTPUT_ENV = "BRAINTUMOR_OUTPUT"

# Relative to the working directory: a `kaggle_3m` folder two levels up from a clone, as laid out
# in the README. Any other place is chosen with BRAINTUMOR_DATA or the jobs' --data option.
DEFAULT_DATA = Path("../shared/data/lgg/kaggle_3m")
DEFAULT_OUTPUT = Path("outputs")


def data_root(path: str | os.PathLike | None = None) -> str | Path:
    """Return the dataset folder or index CSV: `path`, else $BRAINTUMOR_DATA, else the default.

    An `s3://` URI is returned as a string after its bucket is checked. Whether the prefix or the
    CSV exists is checked by the indexing, whose error names what it expected.

    Raises:
        FileNotFoundError: if the chosen local location does not exist, with what to do about it.
        s3.S3Error: the bucket is missing, access is denied or there are no credentials.
    """
    chosen = locations.as_location(path or os.environ.get(DATA_ENV) or DEFAULT_DATA)
    if s3.is_s3(chosen):
        s3.check_bucket(chosen)
        return chosen
    if not chosen.exists():
        raise FileNotFoundError(
            f"dataset not found at '{chosen}'. Download the LGG segmentation dataset "
            f"(kaggle_3m folder), then pass --data PATH or set {DATA_ENV}=PATH."
        )
    return chosen


def output_root(path: str | os.PathLike | None = None) -> str | Path:
    """Return the folder for preprocessed data and runs: `path`, else $BRAINTUMOR_OUTPUT, else ./outputs.

    A local folder is returned as a `Path`, an `s3://` prefix as a string.
    """
    return locations.as_location(path or os.environ.get(OUTPUT_ENV) or DEFAULT_OUTPUT)
