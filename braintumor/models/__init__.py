"""Networks (`segmentation`, `classification`), losses and metrics (`losses`), saving and loading (`io`).

Every model takes normalised slices, (N, 256, 256, 3) float32, and returns probabilities:
(N, 256, 256, 1) per pixel for a segmenter, (N, 1) per slice for a classifier. A model may work
inside at a smaller size (`input_size`): it resizes its input and its output itself, so callers
always deal in full-size slices and masks.
"""
