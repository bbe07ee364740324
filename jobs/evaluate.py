"""Evaluate a trained model on the test patients (or another split) and write metrics and plots.

    python jobs/evaluate.py --model outputs/runs/segment-unet/model --data outputs
    python jobs/evaluate.py --model s3://bucket/runs/segment-unet/model --data s3://bucket/preprocessed

The model, the data and the report folder may each be local or an s3:// prefix.
"""

import argparse
import json

from braintumor import locations
from braintumor.cli import run_job
from braintumor.paths import output_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder or s3:// prefix written by training (contains model.keras)")
    parser.add_argument("--data", help="preprocessing output folder or s3:// prefix (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"), help="split to evaluate on")
    parser.add_argument("--output", help="report folder or s3:// prefix (default: evaluation-<split> beside the model folder)")
    args = parser.parse_args()

    from braintumor.evaluation.report import evaluate

    model_dir = locations.as_location(args.model)
    run_dir = locations.parent(model_dir)
    history_file = locations.join(run_dir, "history.json")
    history = json.loads(locations.read_text(history_file)) if locations.is_file(history_file) else None
    output = args.output or locations.join(run_dir, f"evaluation-{args.split}")
    evaluate(model_dir, output_root(args.data), output, split=args.split, history=history)
    return 0


if __name__ == "__main__":
    run_job(main)
