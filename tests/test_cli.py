import logging

import pytest

from braintumor.cli import run_job, user_error_in
from braintumor.s3 import S3Error


class WorkerError(Exception):
    """Like Ray's RayTaskError: keeps the worker's exception in `cause`, not in __cause__."""

    def __init__(self, cause):
        super().__init__(f"task failed: {type(cause).__name__}")
        self.cause = cause


def test_user_error_in_cause_attribute():
    inner = S3Error("s3://bucket/key", "object not found")

    assert user_error_in(WorkerError(inner)) is inner


def test_user_error_in_exception_chain():
    inner = FileNotFoundError("missing.csv")
    try:
        try:
            raise inner
        except FileNotFoundError as error:
            raise RuntimeError("UDF failed to process a data block") from error
    except RuntimeError as outer:
        assert user_error_in(outer) is inner


def test_user_error_in_none_for_bugs():
    assert user_error_in(RuntimeError("a bug")) is None
    assert user_error_in(WorkerError(KeyError("x"))) is None


@pytest.fixture(autouse=True)
def restore_package_logger():
    """run_job configures the `braintumor` logger; put it back as it was for the tests that follow."""
    logger = logging.getLogger("braintumor")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers, logger.level, logger.propagate = saved


def test_run_job_wrapped_user_error_exits_2():
    def main():
        raise WorkerError(S3Error("s3://bucket/parts/part-1.parquet", "cannot connect to the S3 endpoint"))

    with pytest.raises(SystemExit) as stopped:
        run_job(main)

    assert stopped.value.code == 2


def test_run_job_reraises_bugs():
    def main():
        raise WorkerError(KeyError("x"))

    with pytest.raises(WorkerError):
        run_job(main)
