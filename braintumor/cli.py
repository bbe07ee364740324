"""Shared set-up of the jobs in `jobs/`: logging, and expected errors turned into a message and an exit status."""

import logging
import sys
from collections.abc import Callable

from braintumor.data.io import SliceReadError
from braintumor.models.io import ModelLoadError
from braintumor.s3 import S3Error

logger = logging.getLogger("braintumor")

# Errors a user can fix (a wrong path, a bad CSV, a missing step, an S3 object or permission): shown as
# one line, exit status 2.
USER_ERRORS = (FileNotFoundError, ValueError, SliceReadError, ModelLoadError, S3Error)


def run_job(main: Callable[[], int | None]) -> None:
    """Run a job's main function and exit with its status; user errors become one logged line."""
    from braintumor.runtime import setup_logging

    setup_logging()
    try:
        status = main() or 0
    except USER_ERRORS as error:
        logger.error("%s", error)
        status = 2
    except KeyboardInterrupt:
        logger.error("interrupted; rerun the same command to continue where it stopped")
        status = 130
    sys.exit(status)
