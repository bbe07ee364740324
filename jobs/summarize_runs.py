"""Print one Markdown table row per training run, segmenters and classifiers apart.

    python jobs/summarize_runs.py outputs/runs/*
    python jobs/summarize_runs.py outputs/runs/segment-unet --evaluation evaluation-tuned --output table.md

Each row has the architecture, parameter count, input size, training precision, epochs run
(best epoch), the sum and the median of the epoch times, and the test metrics of the run's
evaluation folder. A folder that is not a finished run is reported and left out; the exit
status is then 1.
"""

import argparse
import logging
from pathlib import Path

from braintumor.cli import run_job

logger = logging.getLogger("braintumor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders or s3:// prefixes written by jobs/train.py")
    parser.add_argument("--evaluation", default="evaluation",
                        help="evaluation subfolder of each run whose metrics.json to read (default: evaluation)")
    parser.add_argument("--output", help="also write the tables to this Markdown file")
    args = parser.parse_args()

    from braintumor.evaluation.runs import format_runs_table, summarize_run
    from braintumor.models.io import ModelLoadError

    summaries, skipped = [], 0
    for run in args.runs:
        try:
            summaries.append(summarize_run(run, args.evaluation))
        except (FileNotFoundError, ValueError, ModelLoadError) as error:
            logger.error("skipped: %s", error)
            skipped += 1
    if not summaries:
        raise ValueError(f"none of the {len(args.runs)} folders is a finished training run")

    table = format_runs_table(summaries)
    print(table, end="")
    if args.output:
        Path(args.output).write_text(table)
    if skipped:
        logger.error("%d of %d folders skipped", skipped, len(args.runs))
        return 1
    return 0


if __name__ == "__main__":
    run_job(main)
