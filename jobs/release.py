"""Copy a trained segmenter and classifier into the package as its release models.

    python jobs/release.py --segmenter outputs/runs/segment-unet/model --classifier outputs/runs/classify-smallcnn/model

Batch scoring and serving load the release models when no model folder is given. Each model folder
is checked (task, normalisation, loadable in Keras safe mode) and copied with its model_info.json
and tuning.json. The two models together must stay under 30 MiB, so the package stays small.
Write braintumor/release/MODEL_CARD.md by hand from the evaluation reports afterwards.
"""

import argparse
import shutil
from pathlib import Path

from braintumor.cli import run_job

MAX_RELEASE_BYTES = 30 * 1024 * 1024
COPIED_FILES = ("model.keras", "model_info.json", "tuning.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segmenter", required=True, help="segmenter model folder written by training")
    parser.add_argument("--classifier", required=True, help="classifier model folder written by training")
    args = parser.parse_args()

    from braintumor.inference import RELEASE_ROOT
    from braintumor.models.io import load_model
    from braintumor.serving.config import check_model_dir

    sources = {
        "segmenter": check_model_dir(args.segmenter, "segment", "segmenter"),
        "classifier": check_model_dir(args.classifier, "classify", "classifier"),
    }
    total = sum((folder / name).stat().st_size for folder in sources.values() for name in COPIED_FILES if (folder / name).is_file())
    if total > MAX_RELEASE_BYTES:
        raise ValueError(f"the two models take {total / 2**20:.1f} MiB, more than the {MAX_RELEASE_BYTES / 2**20:.0f} MiB release limit")
    for role, source in sources.items():
        load_model(source)  # fails with ModelLoadError before anything is replaced
        target = RELEASE_ROOT / role
        staging = RELEASE_ROOT / f".{role}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in COPIED_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, staging / name)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        print(f"{role}: {source} -> {target}")
    return 0


if __name__ == "__main__":
    run_job(main)
