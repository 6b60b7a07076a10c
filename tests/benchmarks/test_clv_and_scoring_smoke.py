"""Tiny runs of ``python -m benchmarks.clv_fit`` and ``python -m benchmarks.scoring`` as a user
runs them (a subprocess from the repository root, with small sizes): each must finish and print
its promised JSON as the last line.

Speed itself is measured by running the benchmarks at full size, never asserted in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_benchmark(module: str, *args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_clv_fit_benchmark_recovers_the_simulated_parameters_and_prints_json():
    summary = run_benchmark("benchmarks.clv_fit", "--customers", "20000")
    assert summary["customers"] == 20000
    assert 0 < summary["distinct_rows"] <= 20000
    assert summary["fit_s"] > 0 and summary["fallback_predict_s"] > 0
    assert summary["fallback_customers"] == 10000
    # 20,000 simulated customers pin r and alpha down well (the CDNOW fit used 2,357)
    for name in ("r", "alpha"):
        assert summary["fitted_params"][name] == pytest.approx(
            summary["true_params"][name], rel=0.25
        ), name


@pytest.mark.slow
def test_scoring_benchmark_scores_every_replicated_customer_and_prints_json(tmp_path):
    summary = run_benchmark(
        "benchmarks.scoring",
        "--customers",
        "3000",
        "--train-customers",
        "2000",
        "--trials",
        "1",
        "--store",
        str(tmp_path / "store"),
    )
    assert summary["customers"] == 3000
    assert 0 < summary["active"] <= 3000
    assert set(summary["boosting_rounds"]) == {"churn", "upsell", "winback"}
    assert 0 < summary["risk_list_rows"] <= summary["active"]
    assert summary["customers_per_s"] > 0
