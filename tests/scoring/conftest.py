"""Fixtures for batch scoring: tiny untrained models, an input folder of real and bad slices, archives of it."""

import shutil
from pathlib import Path

import pytest
from scoring_inputs import BAD_PATIENT, REAL_PATIENTS, REAL_SLICE_NUMBERS, write_bad_members


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    """A saved untrained segmenter and classifier working at 32x32: (segmenter dir, classifier dir)."""
    from braintumor.models.classification import build_classifier
    from braintumor.models.io import ModelInfo, save_model
    from braintumor.models.segmentation import build_segmenter
    from braintumor.preprocessing.normalization import NORMALIZATION

    root = tmp_path_factory.mktemp("models")
    segmenter = build_segmenter(input_size=32, base_filters=4, depth=2)
    classifier = build_classifier("smallcnn", input_size=32, base_filters=4)
    save_model(
        segmenter,
        ModelInfo(task="segment", architecture="unet", normalization=NORMALIZATION, input_size=32, version="test-seg-1"),
        root / "segmenter",
    )
    save_model(
        classifier,
        ModelInfo(task="classify", architecture="smallcnn", normalization=NORMALIZATION, input_size=32, version="test-cls-1"),
        root / "classifier",
    )
    return root / "segmenter", root / "classifier"


@pytest.fixture(scope="session")
def scoring_folder(lgg_root, tmp_path_factory) -> Path:
    """An input folder: 12 real slices with their masks, the bad members of BAD_MEMBERS and ignored files."""
    root = tmp_path_factory.mktemp("scoring_input") / "scans"
    for patient in REAL_PATIENTS:
        (root / patient).mkdir(parents=True)
        for number in REAL_SLICE_NUMBERS:
            for suffix in (".tif", "_mask.tif"):
                name = f"{patient}_{number}{suffix}"
                shutil.copyfile(lgg_root / patient / name, root / patient / name)
    write_bad_members(root, lgg_root / REAL_PATIENTS[0] / f"{REAL_PATIENTS[0]}_10.tif")
    (root / "notes.txt").write_text("scanned in 2024\n")
    (root / BAD_PATIENT / ".DS_Store").write_bytes(b"\x00\x01")
    return root
