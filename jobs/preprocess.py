"""Index a dataset, split its patients and write normalised Parquet shards with Ray Data.

    python jobs/preprocess.py --data /path/to/kaggle_3m --output outputs
    python jobs/preprocess.py --data s3://bucket/kaggle_3m --output s3://bucket/outputs
"""

import argparse

from braintumor.cli import run_job
from braintumor.paths import data_root, output_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="kaggle_3m-style folder or index CSV, local or an s3://bucket/key URI "
                        "(default: $BRAINTUMOR_DATA, else ../shared/data/lgg/kaggle_3m)")
    parser.add_argument("--output", help="folder or s3://bucket/prefix for index.csv, split.json and parquet/ "
                        "(default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a new patient split (an existing split.json is reused)")
    parser.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VALIDATION", "TEST"),
                        help="shares of patients per split for a new split.json")
    args = parser.parse_args()

    from braintumor.preprocessing.pipeline import preprocess

    result = preprocess(data_root(args.data), output_root(args.output), tuple(args.fractions), args.seed)
    return 0 if all(result.rows.values()) else 1


if __name__ == "__main__":
    run_job(main)
