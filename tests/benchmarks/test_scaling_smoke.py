"""A tiny run of ``python -m benchmarks.scaling``: every step runs and the promised JSON is printed.

Two small sizes on the local engine and the smaller one on Spark (``local[2]``), so the whole
subprocess chain (generate, local, spark, compare) is exercised. Speed is measured by running
the benchmark at full size, never asserted here.
"""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import scaling

pytestmark = pytest.mark.slow


def test_scaling_benchmark_smoke_run_prints_its_json_summary(capsys, tmp_path):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("the Spark part needs Java 17 on PATH")
    argv = ["--sizes", "1500,3000", "--spark-sizes", "1500", "--data-dir", str(tmp_path)]
    summary = scaling.main(argv)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == summary
    assert summary["sizes"] == [1500, 3000]
    assert summary["spark_matches_local"] is True
    assert summary["cost_per_event_ratio"] > 0
    small, large = summary["runs"]
    assert large["events"] > small["events"] > 0
    assert small["spark_buckets"] >= 1 and "spark_s" not in large
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "crm_1500_seed7_scale0.36",
        "crm_3000_seed7_scale0.36",
    ]


def test_loglog_slope_of_linear_and_quadratic_costs():
    slope = scaling.loglog_slope
    assert abs(slope([1e5, 3e5, 1e6], [1.0, 3.0, 10.0]) - 1.0) < 1e-12
    assert abs(slope([1e5, 1e6], [1.0, 100.0]) - 2.0) < 1e-12
