"""Score raw slices with a trained segmenter and classifier: what batch scoring and serving share.

Both apply the training normalisation (`normalize_slices`), and the thresholds and mask settings
stored with each model, so a slice gets the same prediction whichever way it is scored.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintumor.models.io import ModelInfo, load_model
from braintumor.paths import output_root
from braintumor.postprocessing import mask_settings, segment
from braintumor.preprocessing.normalization import normalize_slices

DEFAULT_SEGMENTER_RUN = "segment-unet"
DEFAULT_CLASSIFIER_RUN = "classify-smallcnn"
# Release models ship inside the package, with MODEL_CARD.md, in <RELEASE_ROOT>/{segmenter,classifier}.
RELEASE_ROOT = Path(__file__).resolve().parent / "release"


@dataclass
class SlicePredictions:
    """Predictions for N slices."""

    probability: np.ndarray  # (N,) float32 tumour probability of each slice
    label: np.ndarray  # (N,) int64, 1 where probability >= the classifier's threshold
    masks: np.ndarray  # (N, 256, 256) bool predicted tumour pixels
    area: np.ndarray  # (N,) int64 predicted tumour pixels per slice


def default_model_dirs() -> tuple[Path, Path]:
    """Return the default segmenter and classifier folders.

    Each is the release model shipped in the package when there is one, else the model of the
    default training run under $BRAINTUMOR_OUTPUT (or ./outputs).
    """
    runs = output_root() / "runs"
    defaults = []
    for role, run in (("segmenter", DEFAULT_SEGMENTER_RUN), ("classifier", DEFAULT_CLASSIFIER_RUN)):
        release = RELEASE_ROOT / role
        defaults.append(release if (release / "model.keras").is_file() else runs / run / "model")
    return defaults[0], defaults[1]


class SlicePredictor:
    """A segmenter and, optionally, a classifier loaded once and applied to batches of raw slices.

    Without a classifier, a slice's tumour probability is its segmenter's highest pixel probability.
    """

    def __init__(self, segmenter_dir: str | Path, classifier_dir: str | Path | None = None):
        self.segmenter, self.segmenter_info = load_model(segmenter_dir)
        if self.segmenter_info.task != "segment":
            raise ValueError(f"{segmenter_dir}: expected a segmenter, found a '{self.segmenter_info.task}' model")
        self.mask_settings = mask_settings(self.segmenter_info)
        self.classifier, self.classifier_info = None, None
        if classifier_dir is not None:
            self.classifier, self.classifier_info = load_model(classifier_dir)
            if self.classifier_info.task != "classify":
                raise ValueError(f"{classifier_dir}: expected a classifier, found a '{self.classifier_info.task}' model")

    @property
    def versions(self) -> dict[str, str]:
        """Model versions, as written into every output."""
        versions = {"segmenter": self.segmenter_info.version}
        if self.classifier_info is not None:
            versions["classifier"] = self.classifier_info.version
        return versions

    @property
    def decision_info(self) -> ModelInfo:
        return self.classifier_info or self.segmenter_info

    def predict(self, slices: np.ndarray) -> SlicePredictions:
        """Score raw slices.

        Args:
            slices: (N, 256, 256, 3) uint8, channels pre-contrast, FLAIR, post-contrast.

        Returns:
            SlicePredictions for the N slices.
        """
        inputs = normalize_slices(slices)
        pixel_probability, masks = segment(self.segmenter, inputs, self.mask_settings)
        if self.classifier is not None:
            probability = np.asarray(self.classifier.predict_on_batch(inputs), dtype=np.float32).reshape(-1)
        else:
            probability = pixel_probability.max(axis=(1, 2))
        label = (probability >= self.decision_info.threshold).astype(np.int64)
        return SlicePredictions(probability=probability, label=label, masks=masks, area=masks.sum(axis=(1, 2)).astype(np.int64))
