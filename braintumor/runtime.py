"""Start or join Ray with the settings every braintumor job needs.

Two settings matter on a single machine (both measured with Ray 2.60 and TensorFlow 2.21):
- Each process must use tf-keras, set through TF_USE_LEGACY_KERAS before TensorFlow is imported.
  The package's `__init__` sets it in the driver; `runtime_env` sets it in every Ray worker.
- A local Ray instance otherwise advertises the machine's network address, and TensorFlow's
  collective ops connect to it. With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 set before Ray starts,
  the node, its workers and TF_CONFIG stay on 127.0.0.1. It is set only for a local instance:
  a real cluster needs its nodes' addresses.
"""

import logging
import os

logger = logging.getLogger(__name__)

WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

# S3 settings that are not secrets, passed from the driver to every worker, so that workers on
# other nodes use the same S3-compatible endpoint. Credentials are not passed: each node finds
# its own through the AWS credential chain (an instance role on a cluster).
FORWARDED_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")


def worker_env() -> dict[str, str]:
    """Return the environment variables every Ray worker of a braintumor job gets."""
    forwarded = {name: os.environ[name] for name in FORWARDED_VARIABLES if os.environ.get(name)}
    return dict(WORKER_ENV, **forwarded)


# A Ray Train actor logs a warning about once a second when it cannot reach the State API, which
# runs in the dashboard. Local instances start without a dashboard, so it would flood the job log.
REPEATED_WARNING_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_ray_worker() -> None:
    """Raise the level of loggers that repeat one warning many times a minute, in a Ray worker.

    Ray runs it in every worker process of a job started by `init_ray`.
    """
    for name in REPEATED_WARNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join a running Ray cluster, or start a local one on 127.0.0.1.

    The cluster is found in this order: `address`, then $RAY_ADDRESS (which `ray job submit` sets
    for the jobs it runs), then the cluster that `ray start` last started on this machine. Only a
    new local instance uses `num_cpus`. Does nothing if Ray is already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or _started_cluster_address()
    runtime_env = {"env_vars": worker_env(), "worker_process_setup_hook": "braintumor.runtime.quiet_ray_worker"}
    if address:
        logger.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
        return

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Ray reads the variable into a constant when it is first imported, which has already happened
    # here, so the driver's copy is set too. Without it, the node advertises the network address.
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        num_cpus=num_cpus,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        runtime_env=runtime_env,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    logger.info("started a local Ray instance on 127.0.0.1 with %s CPUs", ray.cluster_resources().get("CPU"))


def _started_cluster_address() -> str | None:
    """Return the GCS address of the cluster `ray start` last started on this machine, if any."""
    # NOTE: a private Ray helper (ray 2.60). `ray.init()` without an address reads the same file
    # and joins that cluster, but then rejects the local-only arguments that init_ray passes.
    from ray._private.utils import read_ray_address

    return read_ray_address()


def setup_logging(verbose: bool = False) -> None:
    """Log braintumor's job stages to stderr, one line each with a timestamp.

    Only the `braintumor` logger is configured, so this also works inside Ray workers, whose root
    logger Ray has already set up.
    """
    package_logger = logging.getLogger("braintumor")
    package_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        package_logger.addHandler(handler)
        package_logger.propagate = False
