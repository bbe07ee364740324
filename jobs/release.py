"""Copy a trained segmenter and classifier into the package as its release models.

    python jobs/release.py --segmenter outputs/runs/segment-unet/model --classifier outputs/runs/classify-smallcnn/model
    python jobs/release.py --segmenter ... --classifier outputs/runs/classify-densenet121/model --float16-weights classifier

Batch scoring and serving load the release models when no model folder is given. Each model folder
is checked (task, normalisation, loadable in Keras safe mode) and copied with its model_info.json
and tuning.json, and an architecture.txt with its layers is written beside them. The two models together must stay under 30 MiB, so the package stays small.
`--float16-weights` stores a model's weights as float16, about half the size; Keras turns them back
into float32 when it loads the model, so evaluate the release copy again (jobs/evaluate.py --model
braintumor/release/classifier). Write braintumor/release/MODEL_CARD.md by hand from the evaluation
reports afterwards.
"""

import argparse

from braintumor.cli import run_job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segmenter", required=True, help="local segmenter model folder written by training")
    parser.add_argument("--classifier", required=True, help="local classifier model folder written by training")
    parser.add_argument("--float16-weights", nargs="+", default=[], choices=("segmenter", "classifier"), metavar="ROLE",
                        help="store these models' weights as float16: segmenter, classifier or both")
    args = parser.parse_args()

    from braintumor.inference import RELEASE_ROOT
    from braintumor.models.release import local_source, release_models
    from braintumor.serving.config import check_model_dir

    # local_source rejects s3:// URIs, which check_model_dir would take as a local path.
    sources = {
        "segmenter": check_model_dir(local_source(args.segmenter, "segmenter"), "segment", "segmenter"),
        "classifier": check_model_dir(local_source(args.classifier, "classifier"), "classify", "classifier"),
    }
    released = release_models(sources, RELEASE_ROOT, tuple(args.float16_weights))
    for role, target in released.items():
        print(f"{role}: {sources[role]} -> {target}")
    return 0


if __name__ == "__main__":
    run_job(main)
