"""A tiny run of ``python -m benchmarks.features``: the benchmark works and prints the promised
JSON.

Speed itself is measured by running the benchmark at full size, never asserted in tests.
"""

from __future__ import annotations

import json

from benchmarks import features as features_benchmark


def test_features_benchmark_smoke_run_prints_its_json_summary(capsys):
    summary = features_benchmark.main(["--customers", "2000", "--repeats", "1"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == summary
    for key in ("events", "customers", "seconds", "events_per_s", "peak_rss_mb", "core_vs_duckdb"):
        assert summary[key] > 0
    assert summary["customers"] <= 2000
