"""A tiny run of ``python -m benchmarks.serving``: both servers start, every scenario runs, the
JSON holds the promised keys.

Speed itself is measured by running the benchmark at full size, never asserted in tests (the
figures depend on the machine and on what else runs on it); errors are, since a request that
fails at tiny load is a bug.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import serving as serving_benchmark

pytestmark = pytest.mark.slow


def test_serving_benchmark_smoke_run_prints_its_json_summary(tmp_path_factory, capsys):
    root = tmp_path_factory.getbasetemp() / "serving-fixture"
    summary = serving_benchmark.main(["--smoke", "--root", str(root)])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == json.loads(json.dumps(summary, default=str))
    for key in ("errors_c50", "score_vs_floor_c10", "batch_speedup"):
        assert key in summary
    assert summary["score_vs_floor_c10"] > 0 and summary["batch_speedup"] > 0
    assert summary["errors_c50"] == 0 and summary["floor_errors"] == 0
    names = {(s["name"], s["concurrency"]) for s in summary["scenarios"]}
    for name in ("floor_single", "score_single", "score_batch100"):
        assert {(name, c) for c in (1, 10, 50)} <= names
    for scenario in summary["scenarios"]:
        assert scenario["requests"] > 0 and scenario["errors"] == 0, scenario
        assert scenario["p50_ms"] <= scenario["p95_ms"] <= scenario["p99_ms"]
    assert summary["fast_path_single_ms_per_row"] > 0
