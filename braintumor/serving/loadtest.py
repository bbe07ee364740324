"""A bounded HTTP load test: a fixed number of requests from N concurrent clients, with a deadline.

Each client is a thread with its own keep-alive connection that sends raw-body POSTs, cycling
through the given payloads. Only the standard library is used, so the client needs nothing the
service does not already install.
"""

import http.client
import json
import itertools
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

CONTENT_TYPES = {".tif": "image/tiff", ".tiff": "image/tiff", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass
class Payload:
    """One request body and its Content-Type."""

    body: bytes
    content_type: str = "image/tiff"


@dataclass
class LoadResult:
    """Measurements of one load test. Latencies are in seconds, one per completed request."""

    requests: int
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0
    stopped_by_deadline: bool = False

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Successful requests per second over the whole run."""
        return self.completed / self.wall_seconds if self.wall_seconds else 0.0

    def latency_percentile(self, percent: float) -> float:
        return float(np.percentile(self.latencies, percent)) if self.latencies else float("nan")

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "errors": len(self.errors),
            "concurrency": self.concurrency,
            "median_ms": 1000 * self.latency_percentile(50),
            "p99_ms": 1000 * self.latency_percentile(99),
            "throughput_per_s": self.throughput,
            "mean_batch_size": float(np.mean(self.batch_sizes)) if self.batch_sizes else float("nan"),
            "wall_seconds": self.wall_seconds,
            "stopped_by_deadline": self.stopped_by_deadline,
        }


def run_load_test(
    url: str,
    payloads: list[Payload],
    requests: int = 1000,
    concurrency: int = 16,
    deadline_seconds: float = 600.0,
    request_timeout_seconds: float = 60.0,
) -> LoadResult:
    """POST `requests` payloads to `url` from `concurrency` clients; stop starting new ones at the deadline.

    A request counts as an error when it fails to connect, times out, or gets a status other than
    200; the first line of each error is kept. Latency runs from sending the request to reading the
    whole response.
    """
    if not payloads:
        raise ValueError("run_load_test needs at least one payload")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got '{url}'")
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"

    result = LoadResult(requests=requests, concurrency=concurrency)
    counter = itertools.count()
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = started + deadline_seconds

    def client() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=request_timeout_seconds)
        try:
            while True:
                number = next(counter)
                if number >= requests:
                    return
                if time.perf_counter() > deadline:
                    result.stopped_by_deadline = True
                    return
                payload = payloads[number % len(payloads)]
                outcome = _send(connection, path, payload)
                with lock:
                    if isinstance(outcome, str):
                        result.errors.append(outcome)
                    else:
                        latency, batch_size = outcome
                        result.latencies.append(latency)
                        if batch_size is not None:
                            result.batch_sizes.append(batch_size)
                if isinstance(outcome, str):
                    connection.close()  # a failed connection is reopened by the next request
        finally:
            connection.close()

    threads = [threading.Thread(target=client, name=f"load-client-{i}", daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall_seconds = time.perf_counter() - started
    return result


def _send(connection: http.client.HTTPConnection, path: str, payload: Payload) -> tuple[float, int | None] | str:
    """Send one POST; return (latency in seconds, the batch size the server reported) or an error line."""
    sent = time.perf_counter()
    try:
        connection.request("POST", path, body=payload.body, headers={"Content-Type": payload.content_type})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        return f"{type(error).__name__}: {error}"
    latency = time.perf_counter() - sent
    if response.status != 200:
        return f"HTTP {response.status}: {body[:200].decode('utf-8', 'replace')}"
    try:
        batch_size = json.loads(body).get("batch_size")
    except ValueError:
        return f"HTTP 200 with a body that is not JSON: {body[:200]!r}"
    return latency, batch_size
