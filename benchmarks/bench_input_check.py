"""Smoke test of the input-check cost report (``python -m benchmarks.input_check`` times it for real)."""

from benchmarks.input_check import markdown, measure


def test_input_check_report_runs(benchmark):
    row = benchmark.pedantic(measure, args=("vit_tiny_eurosat", {}, 1, 1), rounds=1, iterations=1)
    assert row["check_ms"] > 0 and row["forward_ms"] > 0 and row["input"] == [1, 3, 64, 64]
    text = markdown({"machine": "cpu", "threads": 1, "torch": "x", "date": "today", "load": [1.0, 2.0], "rows": [row]})
    assert "| vit_tiny_eurosat | 1x3x64x64 |" in text
