"""Train a tumour segmenter or classifier with Ray Train on preprocessed Parquet, then evaluate it.

    python jobs/train.py --task segment --data outputs
    python jobs/train.py --task classify --architecture densenet121 --weights densenet121_notop.h5
    python jobs/train.py --task segment --data s3://bucket/preprocessed --output s3://bucket/runs

Run jobs/preprocess.py first. Running the same command again continues the run from its latest
checkpoint (the run is named by --name, by default <task>-<architecture>).
"""

import argparse
import json

from braintumor import locations
from braintumor.cli import run_job
from braintumor.paths import output_root
from braintumor.training.arguments import add_training_arguments, training_options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser)
    parser.add_argument("--data", help="preprocessing output folder or s3:// prefix (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--output", help="folder or s3:// prefix of runs (default: <data>/runs)")
    parser.add_argument("--name", default="", help="run name; a run of the same name continues from its checkpoint")
    parser.add_argument("--resume", help="checkpoint folder or s3:// prefix to continue from")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluation on the test patients")
    args = parser.parse_args()

    from braintumor.evaluation.report import evaluate
    from braintumor.training.config import TrainConfig
    from braintumor.training.trainer import train

    data = output_root(args.data)
    config = TrainConfig(
        data=str(data),
        output=str(args.output or locations.join(data, "runs")),
        name=args.name,
        resume=args.resume,
        **training_options(args),
    )
    result = train(config)
    if not args.no_evaluate:
        history = json.loads(locations.read_text(locations.join(result.run_dir, "history.json")))
        evaluate(result.model_dir, data, locations.join(result.run_dir, "evaluation"), split="test", history=history)
    return 0


if __name__ == "__main__":
    run_job(main)
