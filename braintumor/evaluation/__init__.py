"""Segmentation and classification metrics (`metrics`), result plots (`plots`) and the dataset summary (`overview`)."""
