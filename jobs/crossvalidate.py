"""Cross-validate a model by patient: train, tune and evaluate it on k folds, then pool the test figures.

    python jobs/crossvalidate.py --task segment --folds 5 --epochs 20
    python jobs/crossvalidate.py --task classify --data ../shared/data/lgg/kaggle_3m --output outputs/crossvalidation

Every patient is a test patient in exactly one fold. Each fold preprocesses the dataset into its
own folder (about 660 MB for the 3,250 slices), trains a model from scratch, chooses its decision
settings on the fold's validation patients and evaluates it on the fold's test patients. The
pooled figures go to <output>/crossvalidation.md and .json. Running the same command again skips
finished folds and continues an unfinished fold's training from its checkpoint; other settings
need another --output folder.
"""

import argparse

from braintumor.cli import run_job
from braintumor.paths import data_root, output_root
from braintumor.training.arguments import add_training_arguments, training_options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser)
    parser.add_argument("--data", help="kaggle_3m-style folder or index CSV (default: $BRAINTUMOR_DATA, else ../shared/data/lgg/kaggle_3m)")
    parser.add_argument("--output", help="folder of the folds and the summary (default: <$BRAINTUMOR_OUTPUT or outputs>/crossvalidation-<task>)")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (test groups of patients)")
    parser.add_argument("--validation-fraction", type=float, default=0.125,
                        help="share of each fold's non-test patients used for validation (0.125 with 5 folds gives 70/10/20)")
    args = parser.parse_args()

    from braintumor import locations
    from braintumor.evaluation.crossval import CrossValidationConfig, cross_validate

    options = training_options(args)
    task = options.pop("task")
    config = CrossValidationConfig(
        data=str(data_root(args.data)),
        output=str(args.output or locations.join(output_root(None), f"crossvalidation-{task}")),
        task=task,
        folds=args.folds,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        train_options=options,
    )
    cross_validate(config)
    return 0


if __name__ == "__main__":
    run_job(main)
