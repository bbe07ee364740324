"""Command-line options of a training run, shared by jobs/train.py and jobs/crossvalidate.py."""

import argparse

from braintumor.training.config import AUTO_PRECISION, PRECISIONS


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose the network and how it is trained (not the data or output locations)."""
    parser.add_argument("--task", choices=("segment", "classify"), required=True)
    parser.add_argument("--architecture", default="", help="segment: unet or resunet (default unet); classify: smallcnn, densenet121 or resnet50 (default smallcnn)")
    parser.add_argument("--epochs", type=int, default=30, help="maximum number of epochs")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per worker per step")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="initial Adam learning rate")
    parser.add_argument(
        "--patience", type=int, default=6,
        help="epochs without a better validation score (val_dice to segment, val_loss to classify) before "
        "early stopping; rerunning a run that stopped early with a larger value continues it",
    )
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
    parser.add_argument("--precision", choices=(AUTO_PRECISION, *PRECISIONS), default=AUTO_PRECISION,
                        help="Keras dtype policy while training: mixed_bfloat16 computes in bfloat16 with float32 weights. "
                        "auto (default) picks it for CPU workers when the CPU has AVX-512 BF16 or AMX, else float32. "
                        "The saved model computes in float32 either way")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-train", type=int, help="train on the first N training slices only (smoke tests)")
    parser.add_argument("--limit-validation", type=int, help="validate on the first N validation slices only")


def training_options(args: argparse.Namespace) -> dict:
    """Return the TrainConfig fields that `add_training_arguments` options set."""
    return {
        "task": args.task,
        "architecture": args.architecture,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "early_stopping_patience": args.patience,
        "input_size": args.input_size,
        "base_filters": args.base_filters,
        "weights": args.weights,
        "missing_sequence_rate": args.missing_sequence_rate,
        "augment": not args.no_augment,
        "tumour_copies": args.tumour_copies,
        "num_workers": args.gpus or args.workers,
        "use_gpu": args.gpus > 0,
        "cpus_per_worker": args.cpus_per_worker,
        "seed": args.seed,
        "precision": args.precision,
        "limit_train": args.limit_train,
        "limit_validation": args.limit_validation,
    }
