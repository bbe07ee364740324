"""Evaluate a trained model on the test patients (or another split) and write metrics and plots.

    python jobs/evaluate.py --model outputs/runs/segment-unet/model --data outputs
"""

import argparse
import json
from pathlib import Path

from braintumor.cli import run_job
from braintumor.paths import output_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder written by training (contains model.keras)")
    parser.add_argument("--data", help="preprocessing output folder (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"), help="split to evaluate on")
    parser.add_argument("--output", help="report folder (default: evaluation-<split> beside the model folder)")
    args = parser.parse_args()

    from braintumor.evaluation.report import evaluate

    model_dir = Path(args.model)
    history_file = model_dir.parent / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else None
    output = Path(args.output) if args.output else model_dir.parent / f"evaluation-{args.split}"
    evaluate(model_dir, output_root(args.data), output, split=args.split, history=history)
    return 0


if __name__ == "__main__":
    run_job(main)
