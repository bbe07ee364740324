"""Copy trained model folders into the package's release folders, checked and size-limited."""

import json
import shutil
from pathlib import Path

from braintumor.models.io import INFO_FILE, MODEL_FILE, load_model, store_weights_as_float16

MAX_RELEASE_BYTES = 30 * 1024 * 1024
COPIED_FILES = (MODEL_FILE, INFO_FILE, "tuning.json")
ROLES = {"segmenter": "segment", "classifier": "classify"}


def release_models(sources: dict[str, Path], root: Path, float16_roles: tuple[str, ...] = ()) -> dict[str, Path]:
    """Copy each model folder of `sources` (role -> folder) to `root/<role>`.

    The copies are made in staging folders first. Roles in `float16_roles` get their weights stored
    as float16 (see `store_weights_as_float16`), which `model_info.json` records under
    `extra.stored_weights`. Each copy must load in Keras safe mode, and all of them together must
    stay under MAX_RELEASE_BYTES. Only then does each replace its release folder.

    Returns:
        role -> release folder.

    Raises:
        ValueError: an unknown role, or the copies together over the size limit.
        ModelLoadError: a model does not load, before anything is replaced.
    """
    unknown = sorted((set(sources) - set(ROLES)) | (set(float16_roles) - set(sources)))
    if unknown:
        raise ValueError(f"invalid model role(s) {unknown}: expected {sorted(ROLES)}, each with a model folder")

    staged = {}
    try:
        for role, source in sources.items():
            staging = root / f".{role}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            staged[role] = staging
            for name in COPIED_FILES:
                if (source / name).is_file():
                    shutil.copy2(source / name, staging / name)
            if role in float16_roles:
                store_weights_as_float16(staging / MODEL_FILE)
                info = json.loads((staging / INFO_FILE).read_text())
                info.setdefault("extra", {})["stored_weights"] = "float16"
                (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
            load_model(staging)

        total = sum(path.stat().st_size for staging in staged.values() for path in staging.iterdir())
        if total > MAX_RELEASE_BYTES:
            raise ValueError(
                f"the models take {total / 2**20:.1f} MiB together, more than the "
                f"{MAX_RELEASE_BYTES / 2**20:.0f} MiB release limit; store large ones as float16 (--float16-weights)"
            )
    except BaseException:
        for staging in staged.values():
            shutil.rmtree(staging, ignore_errors=True)
        raise

    released = {}
    for role, staging in staged.items():
        target = root / role
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        released[role] = target
    return released
