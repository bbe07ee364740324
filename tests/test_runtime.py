import logging

import pytest

from braintumor.runtime import REPEATED_WARNING_LOGGERS, WORKER_ENV, init_ray, setup_logging


def test_worker_env_selects_tf_keras():
    assert WORKER_ENV["TF_USE_LEGACY_KERAS"] == "1"


@pytest.mark.timeout(300)
def test_local_ray_on_loopback(ray_local):
    # TensorFlow's collective ops connect to the address the node advertises; tests stay on 127.0.0.1.
    assert ray_local.util.get_node_ip_address() == "127.0.0.1"
    assert [node["NodeManagerAddress"] for node in ray_local.nodes()] == ["127.0.0.1"]


@pytest.mark.timeout(300)
def test_init_ray_twice_keeps_instance(ray_local):
    before = ray_local.get_runtime_context().get_node_id()

    init_ray(num_cpus=1)

    assert ray_local.get_runtime_context().get_node_id() == before
    assert ray_local.cluster_resources()["CPU"] == 2


@pytest.fixture
def package_logger():
    """The `braintumor` logger, put back as it was after the test so caplog keeps working elsewhere."""
    logger = logging.getLogger("braintumor")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers = []
    yield logger
    logger.handlers, logger.level, logger.propagate = saved


def test_setup_logging_adds_one_handler(package_logger):
    setup_logging()
    setup_logging(verbose=True)

    assert len(package_logger.handlers) == 1
    assert package_logger.level == logging.DEBUG
    assert package_logger.propagate is False


def test_workers_quiet_repeated_warnings(ray_local):
    # Ray Train's placement group cleaner warns every second without a dashboard; workers raise its level.
    @ray_local.remote
    def levels():
        return [logging.getLogger(name).level for name in REPEATED_WARNING_LOGGERS]

    assert ray_local.get(levels.remote()) == [logging.ERROR] * len(REPEATED_WARNING_LOGGERS)
