"""braintumor: find and outline brain tumours in MRI slices.

The subpackages follow the pipeline:

- ``braintumor.data``: read slices and masks, build the index CSV, split patients.
- ``braintumor.preprocessing``: intensity normalisation and the Ray Data job that writes Parquet.
- ``braintumor.models``: segmentation and classification networks, losses, saving and loading.
- ``braintumor.training``: the Ray Train loop, its configuration and checkpoints.
- ``braintumor.evaluation``: metrics, plots and reports on held-out patients.
"""

import os

# Ray's TensorFlow backend needs the Keras 2 API (tf-keras): MultiWorkerMirroredStrategy fails
# inside model.fit under Keras 3. The switch only takes effect if it is set before TensorFlow is
# first imported, and every braintumor module is imported through this file, so set it here.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
