"""A Serve replica killed under load: failed requests are bounded and counted, and the service recovers by itself."""

import os
import signal
import threading
import time

import pytest
import requests

from braintumor.serving.loadtest import Payload, run_load_test
from actor_pids import alive_actor_pids

APP = "braintumor-fault"
REQUESTS = 300
CONCURRENCY = 8
RECOVERY_TIMEOUT_S = 120


def _replica_pids() -> list[int]:
    # Serve names replica actors ServeReplica:<app>:<deployment>.
    return alive_actor_pids(f"ServeReplica:{APP}:")


@pytest.fixture(scope="module")
def fault_url(service_url, tiny_models):
    """An application of its own, so killing its replica leaves the other tests' service alone."""
    from ray import serve

    from braintumor.serving.app import build_app
    from braintumor.serving.config import ServiceConfig

    segmenter, classifier = tiny_models
    config = ServiceConfig(segmenter=str(segmenter), classifier=str(classifier), cpus_per_replica=0.5)
    serve.run(build_app(config), name=APP, route_prefix="/fault")
    yield f"{service_url}/fault"
    serve.delete(APP)


@pytest.mark.timeout(600)
def test_killed_replica_recovers_under_load(fault_url, real_slice_paths):
    payloads = [Payload(path.read_bytes(), "image/tiff") for path in real_slice_paths]
    [pid] = _replica_pids()
    outcome = {}

    def load() -> None:
        outcome["result"] = run_load_test(
            f"{fault_url}/predict", payloads, requests=REQUESTS, concurrency=CONCURRENCY, deadline_seconds=400
        )

    client = threading.Thread(target=load, daemon=True)
    client.start()
    time.sleep(3.0)  # requests are flowing
    os.kill(pid, signal.SIGKILL)
    client.join(timeout=450)
    result = outcome["result"]

    assert result.completed + len(result.errors) == REQUESTS
    assert result.completed > 0
    # Requests in flight on the dead replica fail, and so may those sent before Serve notices and
    # starts another one; the rest succeed.
    assert len(result.errors) < REQUESTS / 2, result.errors[:5]

    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        alive = _replica_pids()
        if alive and pid not in alive:
            try:
                if requests.get(f"{fault_url}/health", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
        time.sleep(1.0)
    else:
        pytest.fail(f"no new replica answered /health within {RECOVERY_TIMEOUT_S} s after the kill")
    after = run_load_test(f"{fault_url}/predict", payloads, requests=20, concurrency=4, deadline_seconds=120)
    assert after.errors == []
