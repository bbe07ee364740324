"""Batch scoring of MRI slices from a folder tree, a zip or tar archive, or an index CSV.

- ``sources``: list the slices of an input with their patient, slice number and safe output name,
  and read their bytes.
- ``storage``: where outputs go: a local folder now, behind an interface that another store can implement.
- ``tables``: the per-batch part files, and the labels, errors and per-patient tables built from them.
- ``pipeline``: the Ray Data stages: read and decode, then score on a pool of model actors.
- ``job``: one scoring run, resuming where an earlier run stopped, and its summary.
"""
