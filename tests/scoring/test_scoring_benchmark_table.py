"""Tests of the results table that jobs/benchmark_scoring.py prints for docs/BENCHMARKS.md."""


def _results(**job_extra) -> dict:
    bare = {"path": "bare model.predict", "slices": 2000, "wall_s": 60.0}
    job = {"path": "job", "format": "zip", "slices": 2000, "wall_s": 100.0, "slices_per_s": 20.0,
           "steady_slices_per_s": 30.0, "first_part_s": 15.0, **job_extra}
    return {
        "machine": "test machine", "models": "test models", "batch_size": 32, "actors": 1,
        "runs": [{**bare, "when": "first", "slices_per_s": 30.0}, {**bare, "when": "last", "slices_per_s": 50.0}, job],
        "same_labels": {},
    }


def _rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]


def test_table_without_memory_columns(load_job):
    header, *rows = _rows(load_job("benchmark_scoring").format_table(_results()))

    assert header[-1] == "steady, of bare"
    assert all(len(row) == len(header) for row in rows)
    # Ratios divide by the mean of the two bare runs, 40 slices/s.
    assert rows[-1][:5] == ["jobs/score.py (zip, memory not sampled)", "2000", "100.0", "20.0", "0.50"]
    assert rows[-1][7] == "0.75"


def test_table_with_memory_columns(load_job):
    sampled = {"peak_rss_tree_mib": 2800, "peak_rss_process_mib": 1170, "peak_pss_tree_mib": 1900}
    header, *rows = _rows(load_job("benchmark_scoring").format_table(_results(**sampled)))

    assert header[-3:] == ["peak RSS, process tree", "peak RSS, largest process", "peak PSS, process tree"]
    assert all(len(row) == len(header) for row in rows)
    assert rows[-1][-3:] == ["2800 MiB", "1170 MiB", "1900 MiB"]
