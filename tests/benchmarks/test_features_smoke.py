"""A tiny run of benchmarks/features.py: the script works and prints the promised JSON.

Speed itself is measured by running the benchmark at full size, never asserted in tests.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "features.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_features", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_features_benchmark_smoke_run_prints_its_json_summary(capsys):
    summary = load_benchmark().main(["--customers", "2000", "--repeats", "1"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == summary
    for key in ("events", "customers", "seconds", "events_per_s", "peak_rss_mb", "core_vs_duckdb"):
        assert summary[key] > 0
    assert summary["customers"] <= 2000
