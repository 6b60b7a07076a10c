"""Snapshots: features and labels stacked over cutoffs, and build_features end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureParams, LabelParams
from features.contract import LABEL_COLUMNS
from features.snapshots import build_features, build_snapshots, stats_key
from features.synthetic import GeneratorParams, generate_crm_data

FEATURE_PARAMS = FeatureParams(clv_fit_sample=1000)
LABEL_PARAMS = LabelParams(horizon_days=90)
# synthetic data end on 2025-06-30: the last cutoff's window (to 2025-08-30) has not matured
CUTOFFS = ("2024-09-01", "2024-12-01", "2025-06-01")


@pytest.fixture(scope="module")
def data():
    return generate_crm_data(GeneratorParams(n_customers=1200, seed=5))


@pytest.fixture(scope="module")
def snapshots(data):
    return build_snapshots(
        data.events,
        CUTOFFS,
        customers=data.customers,
        subscriptions=data.subscriptions,
        feature_params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
    )


def test_one_row_per_customer_and_cutoff(snapshots):
    table, _ = snapshots
    assert list(table.columns[:2]) == ["customer_id", "cutoff"]
    assert not table.duplicated(["customer_id", "cutoff"]).any()
    assert sorted(table["cutoff"].unique()) == [pd.Timestamp(c) for c in CUTOFFS]
    assert table["customer_id"].map(type).eq(str).all()


def test_column_types(snapshots):
    table, _ = snapshots
    assert table["cutoff"].dtype == "datetime64[ns]"
    assert table["is_active"].dtype == bool
    assert table["label_matured"].dtype == bool
    for column in LABEL_COLUMNS:
        assert table[column].dtype == np.float64
    assert list(table.columns[-4:]) == [*LABEL_COLUMNS, "label_matured"]


def test_unmatured_last_cutoff_has_nan_labels(snapshots):
    table, _ = snapshots
    last = table[table["cutoff"] == pd.Timestamp(CUTOFFS[-1])]
    assert not last["label_matured"].any()
    assert last[list(LABEL_COLUMNS)].isna().all().all()
    matured = table[table["cutoff"] < pd.Timestamp(CUTOFFS[-1])]
    assert matured["label_matured"].all()


def test_labels_are_defined_exactly_for_eligible_rows(snapshots):
    table, _ = snapshots
    matured = table[table["label_matured"]]
    active = matured["is_active"]
    assert matured["churn_label"].notna().eq(active).all()
    assert matured["upsell_label"].notna().eq(active).all()
    assert matured["winback_label"].notna().eq(~active).all()
    # the synthetic customers churn, come back and grow: every label has both outcomes
    for column in LABEL_COLUMNS:
        assert set(matured[column].dropna().unique()) == {0.0, 1.0}


def test_each_cutoff_has_its_own_stats(snapshots):
    _, stats = snapshots
    assert list(stats) == [stats_key(c) for c in CUTOFFS]
    assert stats["2024-09-01"].cutoff == "2024-09-01"
    assert stats["2024-09-01"].value_tier_cuts != stats["2025-06-01"].value_tier_cuts


def test_snapshot_rows_equal_build_features_at_that_cutoff(data, snapshots):
    table, stats = snapshots
    # one event vocabulary for the whole table, fitted before its earliest cutoff
    vocabulary = stats[CUTOFFS[1]].event_vocabulary()
    assert vocabulary is not None and vocabulary == stats[CUTOFFS[0]].event_vocabulary()
    features, fitted = build_features(
        data.events,
        pd.Timestamp(CUTOFFS[1]),
        customers=data.customers,
        subscriptions=data.subscriptions,
        params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        vocabulary=vocabulary,
    )
    assert fitted == stats[CUTOFFS[1]]
    rows = table[table["cutoff"] == pd.Timestamp(CUTOFFS[1])].set_index("customer_id")
    pd.testing.assert_frame_equal(rows[features.columns], features)


def test_earlier_snapshots_do_not_depend_on_later_data(data, snapshots):
    table, _ = snapshots
    first = pd.Timestamp(CUTOFFS[0])
    truncated = data.events[data.events["timestamp"] < first + pd.Timedelta(days=120)]
    alone, _ = build_snapshots(
        truncated,
        [first],
        customers=data.customers,
        subscriptions=data.subscriptions,
        feature_params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        data_end=data.events["timestamp"].max(),
    )
    expected = table[table["cutoff"] == first].reset_index(drop=True)
    # subscriptions are passed whole, so only the events were truncated
    pd.testing.assert_frame_equal(alone, expected)


def test_shared_stats_cutoff(data):
    table, stats = build_snapshots(
        data.events,
        CUTOFFS[1:],
        feature_params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        stats_cutoff=CUTOFFS[0],
    )
    assert stats[CUTOFFS[1]] == stats[CUTOFFS[2]]
    assert stats[CUTOFFS[1]].cutoff == CUTOFFS[0]
    assert len(table) > 0


def test_stats_cutoff_after_a_snapshot_is_refused(data):
    with pytest.raises(ValueError, match="leak"):
        build_snapshots(
            data.events,
            CUTOFFS,
            feature_params=FEATURE_PARAMS,
            label_params=LABEL_PARAMS,
            stats_cutoff=CUTOFFS[-1],
        )


def test_cutoffs_are_required(data):
    with pytest.raises(ValueError, match="at least one cutoff"):
        build_snapshots(data.events, [], feature_params=FEATURE_PARAMS, label_params=LABEL_PARAMS)
