"""Reading slices and masks (`io`), the index of a dataset (`index`) and patient splits (`split`)."""
