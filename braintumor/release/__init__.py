"""Release models shipped inside the package (`segmenter/`, `classifier/`) and their MODEL_CARD.md.

`braintumor.inference.default_model_dirs` returns these folders when they exist; `jobs/release.py`
fills them from trained model folders.
"""
