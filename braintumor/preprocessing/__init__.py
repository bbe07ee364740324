"""Intensity normalisation (`normalization`) and the Ray Data job that writes Parquet shards (`pipeline`)."""
