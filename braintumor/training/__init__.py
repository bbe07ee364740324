"""Training: configuration (`config`), the Ray Train worker loop (`loop`) and the driver (`trainer`)."""
