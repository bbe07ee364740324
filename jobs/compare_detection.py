"""Compare tumour detection by the classifier, by the segmenter's predicted area, and by both.

    python jobs/compare_detection.py --segmenter outputs/runs/segment-unet/model \
        --classifier outputs/runs/classify-smallcnn/model --data outputs

"Both" is the two rules joined by AND or OR, and the mean of the classifier's probability and the
segmenter's highest pixel probability. The segmenter's minimum area, the join and the mean's
threshold are chosen on the validation patients; every rule is then scored on the test patients.
Writes detection.json and each slice's scores and decisions (detection_slices.csv) to --output.

Pool the test slices of comparisons made on disjoint test patients, one per cross-validation fold:

    python jobs/compare_detection.py --pool detection/fold-1 detection/fold-2 ... --output detection
"""

import argparse
from pathlib import Path

from braintumor.cli import run_job
from braintumor.paths import output_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segmenter", help="segmenter model folder")
    parser.add_argument("--classifier", help="classifier model folder")
    parser.add_argument("--data", help="preprocessing output folder (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--output", help="folder for detection.json (default: <data>/detection)")
    parser.add_argument("--pool", nargs="+", metavar="FOLDER",
                        help="score no model: pool the test slices of these earlier --output folders into <output>/detection-pooled.json")
    args = parser.parse_args()
    if args.pool:
        if not args.output:
            parser.error("--pool needs --output, the folder for detection-pooled.json")
        return pool(args.pool, Path(args.output))
    if not (args.segmenter and args.classifier):
        parser.error("--segmenter and --classifier are required unless --pool is given")

    from braintumor.evaluation.detection import compare_detection

    data = output_root(args.data)
    compare_detection(args.segmenter, args.classifier, data, args.output or data / "detection")
    return 0


def pool(folders: list[str], output: Path) -> int:
    """Write the pooled figures of `folders` to <output>/detection-pooled.json and print them."""
    from braintumor.evaluation.detection import pool_detection
    from braintumor.evaluation.report import write_json

    summary = pool_detection(folders)
    output.mkdir(parents=True, exist_ok=True)
    write_json(summary, output / "detection-pooled.json")
    print(f"{summary['slices']} test slices of {summary['patients']} patients from {len(folders)} comparisons:")
    for rule, figures in summary["rules"].items():
        auc = "-" if figures["roc_auc"] is None else f"{figures['roc_auc']:.3f}"
        per_fold = ", ".join(f"{value:.3f}" for value in figures["f1_per_comparison"])
        print(f"  {rule}: F1 {figures['f1']:.3f} (per comparison {per_fold}), ROC AUC {auc}")
    return 0


if __name__ == "__main__":
    run_job(main)
