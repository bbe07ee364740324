"""Fixtures for the bad-input tests: a CSV-described dataset of good and bad files, and the scoring tests' tiny models."""

import importlib.util
import sys
from pathlib import Path

import pytest
from bad_inputs import good_mask_tiff, good_slice_tiff, write_files

SCORING_TESTS = Path(__file__).resolve().parent.parent / "scoring"


def _scoring_fixtures():
    # The scoring tests' conftest imports its helper module by bare name, so its folder goes on the path first.
    sys.path.insert(0, str(SCORING_TESTS))
    spec = importlib.util.spec_from_file_location("scoring_fixtures", SCORING_TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The untrained 32x32 segmenter and classifier of the scoring tests, built once per session.
tiny_models = _scoring_fixtures().tiny_models


@pytest.fixture
def good_pair(tmp_path):
    """One readable slice and its tumour mask: (slice path, mask path)."""
    paths = write_files(tmp_path / "good", {"GOOD_1.tif": good_slice_tiff(), "GOOD_1_mask.tif": good_mask_tiff()})
    return paths["GOOD_1.tif"], paths["GOOD_1_mask.tif"]
