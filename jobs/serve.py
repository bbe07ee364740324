"""Serve the trained models over HTTP with Ray Serve until interrupted (Ctrl-C).

    python jobs/serve.py                                   # http://127.0.0.1:8000, the default models
    python jobs/serve.py --segmenter outputs/runs/segment-unet/model --port 8080 --batching
    curl -F file=@slice.tif http://127.0.0.1:8000/predict

Without RAY_ADDRESS this starts a local Ray instance on 127.0.0.1; with it, the service is deployed
on that cluster. On a cluster the model folders must exist at the same paths on every node.
"""

import argparse
import logging
import time

from braintumor.cli import run_job
from braintumor.serving.uploads import DEFAULT_MAX_BODY_BYTES

logger = logging.getLogger("braintumor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 exposes the service to the network (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument("--segmenter", help="segmenter model folder (default: the release model in the package, else $BRAINTUMOR_OUTPUT/runs/segment-unet/model)")
    parser.add_argument("--classifier", help="classifier model folder (default: the release model in the package, else $BRAINTUMOR_OUTPUT/runs/classify-smallcnn/model)")
    parser.add_argument("--no-classifier", action="store_true", help="serve the segmenter alone; a slice's probability is its highest pixel probability")
    parser.add_argument("--replicas", type=int, default=1, help="model replicas, each with its own copy of both models (default: %(default)s)")
    parser.add_argument("--max-replicas", type=int, help="autoscale between --replicas and this many replicas with the load")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs Ray reserves for each replica (default: %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="maximum slices scored in one model call (default: %(default)s)")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="maximum wait for a batch to fill, in milliseconds (default: %(default)s)")
    parser.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="group concurrent requests into one model call; pays only where a batch of slices costs less per slice than one slice, which it did not on the 2-core CPUs measured (default: off)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="request body limit in bytes (default: %(default)s)")
    args = parser.parse_args()

    from ray import serve

    from braintumor.serving.app import start_service
    from braintumor.serving.config import ServiceConfig

    config = ServiceConfig(
        segmenter=args.segmenter,
        classifier=args.classifier,
        no_classifier=args.no_classifier,
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        cpus_per_replica=args.cpus_per_replica,
        batching=args.batching,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_body_bytes=args.max_body_bytes,
        max_ongoing_requests=max(32, args.max_batch_size),
    )
    url = start_service(config, host=args.host, port=args.port)
    logger.info("ready: open %s/ in a browser, or: curl -F file=@slice.tif %s/predict; Ctrl-C stops", url, url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        logger.info("stopping the service")
    finally:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    run_job(main)
