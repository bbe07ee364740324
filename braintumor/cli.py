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
    except Exception as error:
        # Ray wraps an error raised in a worker (an S3 object that went missing, for one) in its
        # own exception types, so the user error is found down the chain of causes.
        cause = user_error_in(error)
        if cause is None:
            raise
        logger.debug("the error came from a Ray worker", exc_info=error)
        logger.error("%s", cause)
        status = 2
    except KeyboardInterrupt:
        logger.error("interrupted; rerun the same command to continue where it stopped")
        status = 130
    sys.exit(status)


def user_error_in(error: BaseException, max_depth: int = 20) -> BaseException | None:
    """Return the first user error in the chain of `error`'s causes, including Ray's `cause` attribute, or None."""
    seen = set()
    pending = [error]
    while pending and len(seen) < max_depth:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if current is not error and isinstance(current, USER_ERRORS):
            return current
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__]
    return None
