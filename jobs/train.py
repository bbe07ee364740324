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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("segment", "classify"), required=True)
    parser.add_argument("--architecture", default="", help="segment: unet or resunet (default unet); classify: smallcnn, densenet121 or resnet50 (default smallcnn)")
    parser.add_argument("--data", help="preprocessing output folder or s3:// prefix (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--output", help="folder or s3:// prefix of runs (default: <data>/runs)")
    parser.add_argument("--name", default="", help="run name; a run of the same name continues from its checkpoint")
    parser.add_argument("--epochs", type=int, default=30, help="maximum number of epochs")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per worker per step")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="initial Adam learning rate")
    parser.add_argument("--patience", type=int, default=6, help="epochs without a better val_loss before early stopping")
    parser.add_argument("--input-size", type=int, default=128, help="side in pixels the network works at; slices are resized to it inside the model")
    parser.add_argument("--base-filters", type=int, default=16, help="filters of the first level of the U-Net or small CNN")
    parser.add_argument("--missing-sequence-rate", type=float, default=0.25,
                        help="training only: chance per slice that the pre- or post-contrast channel is replaced by FLAIR, as the dataset does for missing sequences")
    parser.add_argument("--no-augment", action="store_true", help="train without random flips, rotations, zoom and intensity changes")
    parser.add_argument("--tumour-copies", type=int,
                        help="extra copies of each training tumour slice per epoch (default: 1 to segment, 0 to classify)")
    parser.add_argument("--weights", help="local weights file for a densenet121/resnet50 backbone (nothing is downloaded)")
    parser.add_argument("--workers", type=int, default=2, help="number of Ray Train workers (data-parallel replicas)")
    parser.add_argument("--gpus", type=int, default=0, help="train on N GPU workers, one GPU each (overrides --workers)")
    parser.add_argument("--cpus-per-worker", type=float, help="CPUs reserved per worker (default: CPU workers share all CPUs of the cluster but one, which Ray Data gets; GPU workers 2 each)")
    parser.add_argument("--resume", help="checkpoint folder or s3:// prefix to continue from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-train", type=int, help="train on the first N training slices only (smoke tests)")
    parser.add_argument("--limit-validation", type=int, help="validate on the first N validation slices only")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluation on the test patients")
    args = parser.parse_args()

    from braintumor.evaluation.report import evaluate
    from braintumor.training.config import TrainConfig
    from braintumor.training.trainer import train

    data = output_root(args.data)
    config = TrainConfig(
        task=args.task,
        architecture=args.architecture,
        data=str(data),
        output=str(args.output or locations.join(data, "runs")),
        name=args.name,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        early_stopping_patience=args.patience,
        input_size=args.input_size,
        base_filters=args.base_filters,
        weights=args.weights,
        missing_sequence_rate=args.missing_sequence_rate,
        augment=not args.no_augment,
        tumour_copies=args.tumour_copies,
        num_workers=args.gpus or args.workers,
        use_gpu=args.gpus > 0,
        cpus_per_worker=args.cpus_per_worker,
        resume=args.resume,
        seed=args.seed,
        limit_train=args.limit_train,
        limit_validation=args.limit_validation,
    )
    result = train(config)
    if not args.no_evaluate:
        history = json.loads(locations.read_text(locations.join(result.run_dir, "history.json")))
        evaluate(result.model_dir, data, locations.join(result.run_dir, "evaluation"), split="test", history=history)
    return 0


if __name__ == "__main__":
    run_job(main)
