"""Compare tumour detection by the classifier, by the segmenter's predicted area, and by both.

    python jobs/compare_detection.py --segmenter outputs/runs/segment-unet/model \
        --classifier outputs/runs/classify-smallcnn/model --data outputs

"Both" is the two rules joined by AND or OR, and the mean of the classifier's probability and the
segmenter's highest pixel probability. The segmenter's minimum area, the join and the mean's
threshold are chosen on the validation patients; every rule is then scored on the test patients.
Writes detection.json to --output.
"""

import argparse

from braintumor.cli import run_job
from braintumor.paths import output_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segmenter", required=True, help="segmenter model folder")
    parser.add_argument("--classifier", required=True, help="classifier model folder")
    parser.add_argument("--data", help="preprocessing output folder (default: $BRAINTUMOR_OUTPUT, else outputs)")
    parser.add_argument("--output", help="folder for detection.json (default: <data>/detection)")
    args = parser.parse_args()

    from braintumor.evaluation.detection import compare_detection

    data = output_root(args.data)
    compare_detection(args.segmenter, args.classifier, data, args.output or data / "detection")
    return 0


if __name__ == "__main__":
    run_job(main)
