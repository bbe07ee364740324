"""Draw an overview of a dataset: class balance, slices per patient, tumour areas, example slices.

    python jobs/explore.py --data /path/to/kaggle_3m --output outputs/overview
"""

import argparse
import json

from braintumor.cli import run_job
from braintumor.paths import data_root, output_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="kaggle_3m-style folder or index CSV (default: $BRAINTUMOR_DATA, else ../shared/data/lgg/kaggle_3m)")
    parser.add_argument("--output", help="folder for the PNGs and overview.json (default: <outputs>/overview)")
    args = parser.parse_args()

    from braintumor.data.index import load_index
    from braintumor.data.io import read_mask, read_slice
    from braintumor.evaluation.overview import dataset_overview

    index = load_index(data_root(args.data))
    output = args.output or output_root() / "overview"
    summary = dataset_overview(index.frame, output, read_slice, read_mask)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    run_job(main)
