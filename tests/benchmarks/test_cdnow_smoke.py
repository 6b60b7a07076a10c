"""A small run of ``python -m benchmarks.cdnow`` on a subsample of the real CDNOW log.

The figures themselves come from the full run (see the script's docstring); here the script
must load the real data through the contract, build the honest split, train, fit BG/NBD and
print the promised JSON with metrics in [0, 1].
"""

from __future__ import annotations

import json

import pytest

from benchmarks import cdnow as cdnow_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cdnow():
    if cdnow_benchmark.cdnow_master_path() is None:
        pytest.skip("lifetimes (the dev dependency that ships CDNOW_master.txt) is not installed")
    return cdnow_benchmark


def test_cdnow_benchmark_smoke_run_prints_its_json_summary(cdnow, capsys):
    quick = ["--trials", "2", "--time-budget", "60", "--max-rounds", "100"]
    summary = cdnow.main(["--sample-customers", "2000", *quick])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == summary
    for key in ("model_roc_auc", "model_pr_auc", "bgnbd_roc_auc", "bgnbd_pr_auc", "churn_rate"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["n_customers"] == 2000  # every sampled customer is in the test population
    assert summary["split"]["test_cutoff"] == "1997-10-01"
    assert summary["split"]["test_horizon_days"] == 273
    # no training or validation label window reaches past the test cutoff
    assert summary["split"]["train_and_validation_labels_end"] == "1997-10-01"
    assert summary["trials"] <= 2


def test_cdnow_loads_through_the_contract_with_first_purchase_as_signup(cdnow, tmp_path):
    log = cdnow.sample_customers(cdnow.read_cdnow_master(cdnow.cdnow_master_path()), 300, seed=1)
    events, customers, reports = cdnow.load_cdnow(log, tmp_path)
    assert set(events["event_type"].astype(str)) == {"purchase"}
    assert events["customer_id"].nunique() == len(customers) == 300
    assert str(events["customer_id"].iloc[0]).isdigit()  # ids stay text ("00042"), not numbers
    assert reports["events"]["input_rows"] == len(log)
    assert reports["events"]["clean_rows"] + reports["events"]["quarantined_rows"] == len(log)
    first_purchase = events.groupby("customer_id", observed=True)["timestamp"].min()
    signup = customers.set_index("customer_id")["signup_date"]
    assert (signup.reindex(first_purchase.index) == first_purchase).all()


def test_bgnbd_summary_counts_repeat_purchase_days_in_weeks(cdnow):
    import pandas as pd

    events = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "a"],
            "timestamp": pd.to_datetime(
                ["1997-01-01", "1997-01-01", "1997-01-15", "1997-03-01", "1997-10-01"]
            ),
            "event_type": "purchase",
        }
    )
    summary = cdnow.rfm_summary(events, cdnow.TEST_CUTOFF)
    # a: two purchase days before the cutoff (the 1997-10-01 one is holdout) -> x = 1
    assert summary.loc["a"].tolist() == [
        1.0,
        2.0,
        (cdnow.TEST_CUTOFF - events.timestamp[0]).days / 7,
    ]
    assert summary.loc["b", "frequency"] == 0.0 and summary.loc["b", "recency"] == 0.0


@pytest.fixture(scope="module")
def small_log(cdnow):
    return cdnow.sample_customers(cdnow.read_cdnow_master(cdnow.cdnow_master_path()), 400, seed=2)


def test_training_and_validation_labels_share_one_window_inside_the_calibration_period(
    cdnow, small_log, tmp_path
):
    import numpy as np
    import pandas as pd

    events, customers, _ = cdnow.load_cdnow(small_log, tmp_path)
    snapshots = cdnow.build_benchmark_snapshots(events, customers, seed=0)
    earlier = snapshots.loc[snapshots["cutoff"] < cdnow.TEST_CUTOFF]
    assert sorted(earlier["cutoff"].unique()) == [*cdnow.TRAIN_CUTOFFS, cdnow.VALIDATION_CUTOFF]
    for cutoff, rows in earlier.groupby("cutoff"):
        end = cutoff + pd.Timedelta(days=cdnow.TRAIN_HORIZON_DAYS)
        assert end <= cdnow.TEST_CUTOFF
        bought = set(
            events.loc[
                (events["timestamp"] >= cutoff) & (events["timestamp"] < end), "customer_id"
            ].astype(str)
        )
        labelled = rows.loc[rows["churn_label"].notna()]
        expected = np.array([0.0 if c in bought else 1.0 for c in labelled["customer_id"]])
        assert np.array_equal(labelled["churn_label"].to_numpy(), expected), cutoff


def test_holdout_purchases_do_not_change_any_training_or_validation_row(cdnow, small_log, tmp_path):
    import pandas as pd

    events, customers, _ = cdnow.load_cdnow(small_log, tmp_path)
    holdout = events["timestamp"] >= cdnow.TEST_CUTOFF
    assert holdout.any()
    without_holdout = events.loc[~holdout]
    doubled_holdout = pd.concat([events, events.loc[holdout]], ignore_index=True)

    def earlier_rows(table):
        rows = table.loc[table["cutoff"] < cdnow.TEST_CUTOFF]
        return rows.sort_values(["cutoff", "customer_id"]).reset_index(drop=True)

    reference = earlier_rows(cdnow.build_benchmark_snapshots(events, customers, seed=0))
    for changed in (without_holdout, doubled_holdout):
        table = cdnow.build_benchmark_snapshots(changed, customers, seed=0)
        pd.testing.assert_frame_equal(earlier_rows(table), reference)
