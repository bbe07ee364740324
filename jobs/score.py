"""Score the MRI slices of a folder tree, a zip or tar archive, or an index CSV with Ray Data.

    python jobs/score.py --input scans.zip --output scored/
    python jobs/score.py --input s3://bucket/scans/ --output s3://bucket/scored/

Writes a predicted mask per slice (`<name>_pred_mask.png`), labels.parquet and labels.csv,
errors.csv, patients.csv and summary.json to the output folder or S3 prefix. Input and output may
each be local or in S3. Running the same command again skips the slices already scored and
finishes the rest. Exit status: 0 when every slice was scored, 1 when some files are in errors.csv,
2 on a usage error such as a missing model, input or S3 bucket, or missing S3 credentials.
"""

import argparse

from braintumor.cli import run_job
from braintumor.scoring.job import DEFAULT_BATCH_SIZE


def main() -> int:
    from braintumor.inference import default_model_dirs

    default_segmenter, default_classifier = default_model_dirs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True,
                        help="folder tree, .zip or .tar(.gz) archive, or index CSV with patient_id and image_path columns; "
                             "a local path, or an s3://bucket/key object or s3://bucket/prefix")
    parser.add_argument("--output", required=True, help="output folder (created if missing) or s3://bucket/prefix (the bucket must exist)")
    parser.add_argument("--segmenter", default=str(default_segmenter), help=f"segmenter model folder or s3:// prefix (default: {default_segmenter})")
    classifier = parser.add_mutually_exclusive_group()
    classifier.add_argument("--classifier", default=str(default_classifier), help=f"classifier model folder or s3:// prefix (default: {default_classifier})")
    classifier.add_argument("--no-classifier", action="store_true",
                            help="score without a classifier: a slice's tumour probability is the segmenter's highest pixel probability")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="slices per model call and per part file")
    parser.add_argument("--actors", type=int, default=1, help="model actors, each loading the models once")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0,
                        help="CPUs Ray reserves for each actor (TensorFlow in an actor still uses every core it finds)")
    parser.add_argument("--limit", type=int, help="score only the first N slices, in member name order")
    args = parser.parse_args()

    from braintumor.scoring.job import run_scoring

    summary = run_scoring(
        args.input,
        args.output,
        segmenter_dir=args.segmenter,
        classifier_dir=None if args.no_classifier else args.classifier,
        batch_size=args.batch_size,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        limit=args.limit,
    )
    return summary.exit_status


if __name__ == "__main__":
    run_job(main)
