"""Benchmark the HTTP service on 127.0.0.1 and write the table into the "## Serving" section of docs/BENCHMARKS.md.

    python jobs/benchmark_serving.py                                  # 1,000 requests, 16 clients, default models
    python jobs/benchmark_serving.py --segmenter DIR --classifier DIR --requests 200 --no-doc

In one run it times bare single-slice `SlicePredictor.predict` in-process, then load-tests Serve with
batching on and with batching off, each with the same requests. Start it on an otherwise idle machine.
"""

import argparse
import json
import logging
from pathlib import Path

from braintumor.cli import run_job

logger = logging.getLogger("braintumor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segmenter", help="segmenter model folder (default: the release model in the package, else $BRAINTUMOR_OUTPUT/runs/segment-unet/model)")
    parser.add_argument("--classifier", help="classifier model folder (default: the release model in the package, else $BRAINTUMOR_OUTPUT/runs/classify-smallcnn/model)")
    parser.add_argument("--no-classifier", action="store_true", help="benchmark the segmenter alone")
    parser.add_argument("--data", help="kaggle_3m dataset folder the request bodies come from (default: $BRAINTUMOR_DATA)")
    parser.add_argument("--patients", type=int, default=4, help="patients whose slices are cycled through as request bodies (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=1000, help="counted requests per mode (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="batch size limit with batching on (default: %(default)s)")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="batch wait with batching on, in milliseconds (default: %(default)s)")
    parser.add_argument("--bare-calls", type=int, default=100, help="in-process single-slice predict calls timed (default: %(default)s)")
    parser.add_argument("--deadline-s", type=float, default=900.0, help="stop starting requests of a mode after this many seconds (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8011, help="port on 127.0.0.1 for the service under test (default: %(default)s)")
    parser.add_argument("--doc", default="docs/BENCHMARKS.md", help="document whose '## Serving' section is replaced (default: %(default)s)")
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--json", help="also write the raw figures to this JSON file")
    args = parser.parse_args()

    from braintumor.paths import data_root
    from braintumor.serving.benchmark import render_section, run_benchmark, write_section
    from braintumor.serving.config import ServiceConfig

    config = ServiceConfig(
        segmenter=args.segmenter,
        classifier=args.classifier,
        no_classifier=args.no_classifier,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_ongoing_requests=max(32, args.max_batch_size, args.concurrency),
    )
    result = run_benchmark(
        config,
        data_root(args.data),
        port=args.port,
        requests=args.requests,
        concurrency=args.concurrency,
        patients=args.patients,
        bare_calls=args.bare_calls,
        deadline_seconds=args.deadline_s,
    )
    section = render_section(result)
    if args.no_doc:
        print(section)
    else:
        write_section(Path(args.doc), section)
        logger.info("wrote the serving table into %s", args.doc)
    if args.json:
        figures = {
            "bare": vars(result.bare),
            "loads": {mode: load.summary() for mode, load in result.loads.items()},
            "config": result.config.model_dump(),
            "machine": result.machine,
            "command": result.command,
            "started": result.started,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")

    errors = sum(len(load.errors) for load in result.loads.values())
    incomplete = any(load.completed < args.requests for load in result.loads.values())
    return 1 if errors or incomplete else 0


if __name__ == "__main__":
    run_job(main)
