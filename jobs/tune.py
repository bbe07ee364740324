"""Choose a model's decision settings on the validation patients and store them with the model.

    python jobs/tune.py --model outputs/runs/segment-unet/model --data outputs
    python jobs/tune.py --model outputs/runs/classify-smallcnn/model --data outputs
    python jobs/tune.py --model s3://bucket/runs/segment-unet/model --data s3://bucket/preprocessed

A segmenter gets a threshold, flip averaging and a minimum tumour region size (by mean Dice per
patient), a classifier a probability threshold (by F1).

The choice is stored in the model's model_info.json, so evaluation, batch scoring and serving
apply it, and the whole search goes to tuning.json beside it. Only the
validation split is read; evaluate on the test patients afterwards with jobs/evaluate.py.
"""

import argparse

from braintumor.cli import run_job
from braintumor.paths import output_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="segmenter or classifier model folder or s3:// prefix written by training")
    parser.add_argument("--data", help="preprocessing output folder or s3:// prefix (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--dry-run", action="store_true", help="write tuning.json but leave model_info.json unchanged")
    args = parser.parse_args()

    from braintumor.evaluation.tuning import tune

    tune(args.model, output_root(args.data), write=not args.dry_run)
    return 0


if __name__ == "__main__":
    run_job(main)
