"""Copy trained model folders into the package's release folders, checked and size-limited."""

import json
import logging
import shutil
from pathlib import Path

from braintumor.models.io import (
    ARCHITECTURE_FILE,
    INFO_FILE,
    MODEL_FILE,
    ModelLoadError,
    load_model,
    parse_model_info,
    architecture_summary,
    store_weights_as_float16,
)

logger = logging.getLogger(__name__)

MAX_RELEASE_BYTES = 30 * 1024 * 1024
COPIED_FILES = (MODEL_FILE, INFO_FILE, "tuning.json")
ROLES = {"segmenter": "segment", "classifier": "classify"}


def release_models(sources: dict[str, Path], root: Path, float16_roles: tuple[str, ...] = ()) -> dict[str, Path]:
    """Copy each model folder of `sources` (role -> folder) to `root/<role>`.

    Each source must be a local folder with `model.keras` and `model_info.json`, for the task of its
    role (see ROLES). The copies are made in staging folders first. Roles in `float16_roles` get
    their weights stored as float16 (see `store_weights_as_float16`), which `model_info.json`
    records under `extra.stored_weights`. Each copy must load in Keras safe mode, and all of them
    together must stay under MAX_RELEASE_BYTES. Only then do they replace the release folders, and
    if one of them cannot be moved into place, the previous release folders are restored.

    Returns:
        role -> release folder.

    Raises:
        ValueError: an unknown role, a float16 role without a model folder, an s3:// source, or the
            copies together over the size limit.
        ModelLoadError: a source folder is missing model.keras or model_info.json, is for another
            task, or does not load. The error names the source folder, and nothing is replaced.
    """
    _check_roles(sources, float16_roles)
    checked = {role: _check_source(source, role) for role, source in sources.items()}

    staged = _stage_copies(checked, root, float16_roles)
    return _replace_release_folders(staged, root)


def local_source(location: str | Path, role: str) -> Path:
    """Return `location` as a local Path, raising ValueError for an S3 URI, which release cannot copy.

    A URI that went through Path() has lost a slash (`s3:/bucket/key`), so any location that starts
    with `s3:` is taken as S3.
    """
    if str(location).lower().startswith("s3:"):
        raise ValueError(
            f"{role} model folder {location}: release copies local folders only, "
            f"so download the model folder from S3 first and pass the local copy"
        )
    return Path(location)


def _check_source(source: str | Path, role: str) -> Path:
    """Check that `source` is a local model folder for `role`, before anything is copied.

    Raises:
        ValueError: `source` is an S3 URI.
        ModelLoadError: `model.keras` or `model_info.json` is missing, or the model is for
            another task than the role's.
    """
    source = local_source(source, role)
    if not (source / MODEL_FILE).is_file():
        raise ModelLoadError(f"{source}: {MODEL_FILE} not found. Pass the {role} model folder that training wrote.")
    info_path = source / INFO_FILE
    if not info_path.is_file():
        raise ModelLoadError(f"{source}: {INFO_FILE} is missing beside {MODEL_FILE}")

    task = parse_model_info(info_path.read_text(), info_path).task
    expected = ROLES[role]
    if task != expected:
        raise ModelLoadError(
            f"{source}: expected a {role} model (task '{expected}'), found task '{task}'. "
            f"Check that the segmenter and classifier folders are not swapped."
        )
    return source


def _check_roles(sources: dict[str, Path], float16_roles: tuple[str, ...]) -> None:
    unknown = sorted((set(sources) | set(float16_roles)) - set(ROLES))
    if unknown:
        raise ValueError(f"invalid model role(s) {unknown}: expected {sorted(ROLES)}")

    without_folder = sorted(set(float16_roles) - set(sources))
    if without_folder:
        options = " ".join(f"--{role} PATH" for role in without_folder)
        raise ValueError(
            f"float16 weights requested for {without_folder}, but no model folder was given for them. "
            f"Add the folder to `sources` ({options} in jobs/release.py) or remove the role from float16_roles."
        )


def _stage_copies(sources: dict[str, Path], root: Path, float16_roles: tuple[str, ...]) -> dict[str, Path]:
    """Copy each source to `root/.<role>.partial` and check the copies. On any error, remove them all and re-raise."""
    staged = {}
    try:
        for role, source in sources.items():
            staging = root / f".{role}.partial"
            _remove(staging)
            staging.mkdir(parents=True)
            staged[role] = staging
            for name in COPIED_FILES:
                if (source / name).is_file():
                    shutil.copy2(source / name, staging / name)
            _check_copy(source, staging, float16=role in float16_roles)

        total = sum(path.stat().st_size for staging in staged.values() for path in staging.iterdir())
        if total > MAX_RELEASE_BYTES:
            raise ValueError(
                f"the models take {total / 2**20:.1f} MiB together, more than the "
                f"{MAX_RELEASE_BYTES / 2**20:.0f} MiB release limit; store large ones as float16 (--float16-weights)"
            )
    except BaseException:
        for staging in staged.values():
            _remove_or_log(staging)
        raise
    return staged


def _check_copy(source: Path, staging: Path, float16: bool) -> None:
    """Store the staged copy's weights as float16 if requested, then load it and write its architecture summary.

    Errors name `source`, because the staging folder is deleted before the user reads them.
    """
    try:
        if float16:
            store_weights_as_float16(staging / MODEL_FILE)
            stored_info = json.loads((staging / INFO_FILE).read_text())
            stored_info.setdefault("extra", {})["stored_weights"] = "float16"
            (staging / INFO_FILE).write_text(json.dumps(stored_info, indent=2) + "\n")
        model, info = load_model(staging)
    except ModelLoadError as error:
        reason = str(error).replace(str(staging), str(source))
        if float16:
            message = f"{source}: the model failed to load after its weights were stored as float16 ({reason})"
        else:
            message = f"{source}: the copied model failed to load ({reason})"
        raise ModelLoadError(message) from error
    (staging / ARCHITECTURE_FILE).write_text(architecture_summary(model, info))


def _replace_release_folders(staged: dict[str, Path], root: Path) -> dict[str, Path]:
    """Move each staging folder to `root/<role>`, keeping the previous folders until all are in place.

    The previous release folders (or symlinks) are first moved to `root/.<role>.old`. If any move
    fails or is interrupted, the new folders are removed, the previous ones are moved back, and the
    error is re-raised. The previous folders are deleted only once every role is in place.
    """
    previous = {}
    placed = []
    try:
        for role in staged:
            target, old = root / role, root / f".{role}.old"
            _remove(old)
            if target.exists() or target.is_symlink():
                target.rename(old)
                previous[role] = old
        for role, staging in staged.items():
            staging.rename(root / role)
            placed.append(role)
    except BaseException:
        _restore_release_folders(staged, previous, placed, root)
        raise

    for old in previous.values():
        _remove_or_log(old)
    return {role: root / role for role in staged}


def _restore_release_folders(staged: dict[str, Path], previous: dict[str, Path], placed: list[str], root: Path) -> None:
    """Undo a partial `_replace_release_folders`, logging each step that fails so the original error is kept."""
    for role in placed:
        _remove_or_log(root / role)
    for role, old in previous.items():
        try:
            old.rename(root / role)
        except OSError as error:
            logger.error("failed to move the previous release folder %s back to %s: %s", old, root / role, error)
    for staging in staged.values():
        _remove_or_log(staging)


def _remove(path: Path) -> None:
    """Delete a folder tree, a file or a symlink (not what it points to). A missing path is not an error."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _remove_or_log(path: Path) -> None:
    """Delete `path` like `_remove`, but log a failure instead of raising, so the error being handled is kept."""
    try:
        _remove(path)
    except OSError as error:
        logger.warning("failed to delete %s: %s", path, error)
