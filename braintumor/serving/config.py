"""Settings of the HTTP service and the checks on its model folders, both made before any replica starts."""

import json
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from braintumor.inference import default_model_dirs
from braintumor.models.io import INFO_FILE, MODEL_FILE, ModelLoadError
from braintumor.preprocessing.normalization import NORMALIZATION
from braintumor.serving.uploads import DEFAULT_MAX_BODY_BYTES


class ServiceConfig(BaseModel):
    """Settings of the service; `serve run braintumor.serving.app:build_app key=value ...` fills them.

    Model folders left empty default to the training runs under $BRAINTUMOR_OUTPUT (or ./outputs).
    """

    segmenter: str | None = Field(None, description="segmenter model folder (contains model.keras)")
    classifier: str | None = Field(None, description="classifier model folder (contains model.keras)")
    no_classifier: bool = Field(
        False, description="serve without a classifier; a slice's probability is then its highest pixel probability"
    )
    replicas: int = Field(1, ge=1, description="replicas, or the minimum when max_replicas turns on autoscaling")
    max_replicas: int | None = Field(None, ge=1, description="autoscale between replicas and this many")
    target_ongoing_requests: float | None = Field(
        None, gt=0, description="autoscaling target of requests in flight per replica (default: max_batch_size, or 2 without batching)"
    )
    cpus_per_replica: float = Field(1.0, gt=0, description="CPUs Ray reserves for each replica")
    # Off by default: on 2-core CPUs a batch of slices costs about as much per slice as one slice,
    # so batching added waiting without adding throughput (docs/BENCHMARKS.md, "Serving").
    batching: bool = Field(False, description="group concurrent requests into one model call (@serve.batch)")
    max_batch_size: int = Field(8, ge=1, le=256, description="maximum slices per model call")
    batch_wait_ms: float = Field(10.0, ge=0, le=1000, description="maximum wait for a batch to fill, in milliseconds")
    max_ongoing_requests: int = Field(32, ge=1, description="requests one replica accepts at a time; the rest queue in the proxy")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, description="request body limit in bytes; larger bodies get 413")

    @model_validator(mode="after")
    def _check_consistency(self):
        if self.no_classifier and self.classifier:
            raise ValueError("both classifier and no_classifier are set; pass one of them")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas})")
        if self.batching and self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) is below max_batch_size ({self.max_batch_size}), "
                "so no batch could ever fill; raise max_ongoing_requests"
            )
        return self

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None and self.max_replicas > self.replicas

    def resolved(self) -> "ServiceConfig":
        """Return a copy with absolute model folders, checked, and the defaults filled in.

        Raises:
            FileNotFoundError: a model folder or its files are missing.
            ModelLoadError: a folder contains a model of the other task or of another normalisation.
        """
        default_segmenter, default_classifier = default_model_dirs()
        segmenter = check_model_dir(self.segmenter or default_segmenter, "segment", "segmenter")
        classifier = None
        if not self.no_classifier:
            classifier = check_model_dir(self.classifier or default_classifier, "classify", "classifier")
        return self.model_copy(update={"segmenter": str(segmenter), "classifier": str(classifier) if classifier else None})


def check_model_dir(folder: str | Path, task: str, role: str) -> Path:
    """Check a model folder from its `model_info.json` alone, without loading TensorFlow.

    Returns:
        The folder as an absolute path, so replicas started elsewhere find it.

    Raises:
        FileNotFoundError: the folder, its model file or its info file is missing.
        ModelLoadError: the model is for another task or expects another normalisation.
    """
    folder = Path(folder).resolve()
    hint = f"train one with `python jobs/train.py --task {task}`, or pass --{role} PATH"
    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{role} model not found: {folder / MODEL_FILE} does not exist; {hint}")
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{role} model info not found: {info_path} does not exist beside {MODEL_FILE}")

    info = json.loads(info_path.read_text())
    if info.get("task") != task:
        raise ModelLoadError(f"{folder}: expected a {role} (task '{task}'), found task '{info.get('task')}'")
    # The service normalises every slice with the one scheme in braintumor.preprocessing; a model
    # trained on other inputs would get inputs it never saw.
    if info.get("normalization") != NORMALIZATION:
        raise ModelLoadError(
            f"{folder}: the model expects normalisation '{info.get('normalization')}', "
            f"but this service applies '{NORMALIZATION}'"
        )
    return folder
