"""``labels.training_horizon_days``: train on a window that can mature, score for the horizon.

Example: CDNOW-like data with a scoring horizon of 273 days has too few matured cutoffs, so the
snapshots for training are labelled on a 92-day window; the flows say so to the training code.
"""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from features.config import CutoffConfig, FeatureParams, LabelParams
from features.snapshots import build_snapshots
from features.synthetic import GeneratorParams, generate_crm_data
from pipelines.config import ProjectConfig
from pipelines.data import (
    LoadedData,
    build_training_table,
    label_horizons,
    run_check,
    run_snapshots,
    training_label_span_days,
)

LABELS = LabelParams(horizon_days=273, training_horizon_days=92)


@pytest.fixture(scope="module")
def data() -> LoadedData:
    crm = generate_crm_data(GeneratorParams(n_customers=300, seed=7))
    return LoadedData(
        events=crm.events,
        customers=crm.customers,
        subscriptions=crm.subscriptions,
        validation={},
    )


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> ProjectConfig:
    out = tmp_path_factory.mktemp("horizon")
    return ProjectConfig(
        labels=LABELS,
        cutoffs=CutoffConfig(count=3, every_days=60),
        output_dir=str(out),
    )


def test_training_horizon_defaults_to_the_horizon_and_cannot_exceed_it():
    assert LabelParams(horizon_days=120).model_horizon_days == 120
    assert LabelParams(horizon_days=120).for_training() == LabelParams(horizon_days=120)
    assert LABELS.model_horizon_days == 92
    assert LABELS.for_training().horizon_days == 92
    assert LABELS.for_training().training_horizon_days == 92
    with pytest.raises(ValidationError, match="training_horizon_days"):
        LabelParams(horizon_days=90, training_horizon_days=273)


def test_snapshots_for_training_use_the_training_window(cfg, data):
    table, _ = build_training_table(cfg, data=data)

    cutoffs = sorted(pd.Timestamp(c) for c in table["cutoff"].unique())
    expected, _ = build_snapshots(
        data.events,
        cutoffs,
        customers=data.customers,
        subscriptions=data.subscriptions,
        feature_params=cfg.features,
        label_params=LabelParams(horizon_days=92, training_horizon_days=92),
        data_end=data.data_end,
    )

    # the default grid ends at the latest cutoff whose 92-day window has matured
    assert training_label_span_days(cfg) == 92
    assert cutoffs[-1] == (data.data_end - pd.Timedelta(days=92)).normalize()
    assert table["label_matured"].all()
    pd.testing.assert_series_equal(table["churn_label"], expected["churn_label"])
    assert table.attrs["labels"] == {
        "horizon_days": 273,
        "training_horizon_days": 92,
        "lead_days": 0,
    }


def test_with_the_scoring_horizon_those_cutoffs_would_not_mature(cfg, data):
    table, _ = build_training_table(cfg, data=data)
    latest = pd.Timestamp(table["cutoff"].max())

    full, _ = build_snapshots(
        data.events,
        [latest],
        subscriptions=data.subscriptions,
        feature_params=FeatureParams(),
        label_params=LabelParams(horizon_days=273),
        data_end=data.data_end,
    )

    assert not full["label_matured"].any()


def test_the_snapshot_file_carries_both_horizons(cfg, data, tmp_path):
    out = tmp_path / "snapshots.parquet"

    summary = run_snapshots(cfg, out, data=data)

    assert pd.read_parquet(out).attrs["labels"] == label_horizons(cfg)
    latest = (data.data_end - pd.Timedelta(days=92)).normalize()
    assert summary["cutoffs"][-1] == str(latest.date())


def test_the_check_counts_the_training_window(cfg, data):
    report = run_check(cfg, data=data)

    assert all(counts.matured for counts in report.cutoffs)
    assert report.finding("training_horizon").details["training_horizon_days"] == 92
    assert report.finding("labels_not_matured") is None
