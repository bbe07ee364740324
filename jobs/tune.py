"""Choose a segmenter's threshold, flip averaging and minimum region size on the validation patients.

    python jobs/tune.py --model outputs/runs/segment-unet/model --data outputs

Stores the choice in the model's model_info.json, so evaluation, batch scoring and serving apply
it, and writes the whole search with the gain of each setting to tuning.json beside it. Only the
validation split is read; evaluate on the test patients afterwards with jobs/evaluate.py.
"""

import argparse

from braintumor.cli import run_job
from braintumor.paths import output_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="segmenter model folder written by training")
    parser.add_argument("--data", help="preprocessing output folder (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--dry-run", action="store_true", help="write tuning.json but leave model_info.json unchanged")
    args = parser.parse_args()

    from braintumor.evaluation.tuning import tune

    tune(args.model, output_root(args.data), write=not args.dry_run)
    return 0


if __name__ == "__main__":
    run_job(main)
