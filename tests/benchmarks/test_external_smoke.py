"""A small run of ``python -m benchmarks.external`` on samples of socialnet7 and CDNOW.

The figures come from the full run (README, "Benchmarks"); here the script must export both data
sets as CRM exports, run the `churn` flows on them through their configs, the recency rule,
BG/NBD and the Featuretools peer, grade everyone on the same customers and print the promised
JSON last, with metrics in [0, 1].
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import cdnow
from benchmarks import external as external_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def external():
    if not (external_benchmark.sources.SOCIALNET7_DIR / "README.md").is_file():
        pytest.skip(f"socialnet7 is not at {external_benchmark.sources.SOCIALNET7_DIR}")
    if cdnow.cdnow_master_path() is None:
        pytest.skip("lifetimes (the dev dependency that ships CDNOW_master.txt) is not installed")
    pytest.importorskip("featuretools")
    return external_benchmark


def _unit(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


def test_external_benchmark_smoke_run_prints_its_json_summary(external, capsys, tmp_path):
    quick = [
        "--sample-customers", "300", "--socialnet7-as-of", "2020-04-01",
        "--trials", "1", "--time-budget", "20",
        "--set", "training.backtest_cutoffs=0", "--set", "training.max_boosting_rounds=30",
        "--work-dir", str(tmp_path),
    ]  # fmt: skip
    summary = external.main(quick)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == json.loads(json.dumps(summary, default=str))

    for key in (
        "socialnet7_roc_auc",
        "socialnet7_featuretools_roc_auc",
        "socialnet7_recency_roc_auc",
        "cdnow_roc_auc",
        "cdnow_featuretools_roc_auc",
        "cdnow_recency_roc_auc",
        "cdnow_bgnbd_roc_auc",
    ):
        assert _unit(summary[key]), (key, summary[key])
    for key in ("ours_seconds", "featuretools_seconds"):
        assert math.isfinite(summary[key]) and summary[key] > 0, key
    assert set(summary["goals"]) >= {
        "socialnet7_at_least_0.78_each_date",
        "cdnow_at_least_0.775",
        "socialnet7_ahead_of_featuretools",
        "socialnet7_ahead_of_recency",
        "cdnow_ahead_of_featuretools",
        "cdnow_ahead_of_recency",
        "faster_than_featuretools",
    }
    assert all(isinstance(v, bool) for v in summary["goals"].values())

    dates = ("socialnet7_2020-04-01", "cdnow_1997-10-01")
    assert "socialnet7_2020-05-01" not in summary  # --socialnet7-as-of: that date only
    for key in dates:
        per_date = summary[key]
        # every truly eligible customer got a score; the graded ones are those
        assert per_date["unscored_eligible"] == 0, key
        assert per_date["evaluated"] == per_date["eligible"] > 0, key
        assert 0 < per_date["churners"] < per_date["evaluated"], key
        for method, figures in per_date["methods"].items():
            assert _unit(figures["roc_auc"]) and _unit(figures["pr_auc"]), (key, method)
            assert math.isfinite(figures["lift_at_10"]) and figures["lift_at_10"] >= 0
    assert set(summary["cdnow_1997-10-01"]["methods"]) == {
        "ours", "recency", "bgnbd", "featuretools",
    }  # fmt: skip
    assert summary["socialnet7_roc_auc"] == summary[dates[0]]["methods"]["ours"]["roc_auc"]
    assert summary["cdnow_1997-10-01"]["horizon_days"] == 273


def test_socialnet7_export_hides_what_was_not_known_as_of_the_date(external, tmp_path):
    import pandas as pd

    sources = external.sources
    raw = sources.sample_socialnet7(sources.read_socialnet7(), 200, seed=3)
    as_of = pd.Timestamp("2020-04-01")
    paths = sources.export_socialnet7(raw, as_of, tmp_path)
    events = pd.read_parquet(paths["events"])
    subscriptions = pd.read_parquet(paths["subscriptions"])
    assert events["event_time"].max() < as_of
    assert set(events.columns) >= {"account_id", "event_time", "event_type_name"}
    start = pd.to_datetime(subscriptions["start_date"])
    end = pd.to_datetime(subscriptions["end_date"])
    assert (start < as_of).all()
    assert (end.dropna() < as_of).all()  # an end at or after the date is not known yet
    running = end.isna()
    assert running.any()
    assert (pd.to_datetime(subscriptions.loc[running, "period_end"]) >= as_of).all()

    # the truth: subscribed at D, not subscribed at D + 30 days, from the full table
    truth = sources.socialnet7_truth(raw, as_of, 30)
    full = raw.subscriptions

    def subscribed(rows, instant) -> bool:
        return bool(((rows["start_date"] < instant) & (rows["end_date"] >= instant)).any())

    for account, churned in truth.items():
        rows = full.loc[full["account_id"].astype(str) == account]
        assert subscribed(rows, as_of)
        assert churned == (0.0 if subscribed(rows, as_of + pd.Timedelta(days=30)) else 1.0)


def test_lift_counts_tied_scores_at_the_boundary_by_their_group_rate(external):
    import numpy as np

    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    # the top 10% is one customer, drawn from a tie of four with one churner among them
    score = np.array([5, 5, 1, 5, 5, 0, 0, 0, 0, 0], dtype=float)
    assert external.lift_at(y, score, 0.1) == pytest.approx((1 / 4) / 0.2)
    assert external.lift_at(y, -score, 0.1) == pytest.approx(0.0)
