"""Tests of the results table that jobs/benchmark.py prints for docs/BENCHMARKS.md."""


def test_table_ratios_per_precision(load_job):
    benchmark = load_job("benchmark")
    # 512 slices in global batches of 32; the first epoch is not counted.
    runs = [
        benchmark.summarise("plain model.fit, float32", "float32", [9.0, 25.6, 25.6], 512, 32),
        benchmark.summarise("plain model.fit, mixed_bfloat16", "mixed_bfloat16", [9.0, 16.0, 16.0], 512, 32),
        benchmark.summarise("Ray Train, 2 workers, Ray Data, mixed_bfloat16", "mixed_bfloat16", [30.0, 20.0, 20.0], 512, 32),
    ]
    table = benchmark.format_table({"slices": 512, "validation_slices": 32, "global_batch": 32, "runs": runs})
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]

    assert rows[0][-2:] == ["ratio to plain float32", "ratio to plain, same precision"]
    assert rows[1][2:] == ["20.0", "1.00", "1.00"]
    assert rows[2][2:] == ["32.0", "1.60", "1.00"]
    assert rows[3][2:] == ["25.6", "1.28", "0.80"]
