"""Global statistics (phase 2) and segments / CLV columns (phase 3)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureParams
from features.lifecycle import compute_customer_features
from features.segments import (
    LIFECYCLE_STAGES,
    RFM_SEGMENTS,
    VALUE_GROWTH_SEGMENTS,
    GlobalStats,
    apply_global_stats,
    fit_global_stats,
    lifecycle_stage,
    rfm_segment,
)
from features.synthetic import GeneratorParams, generate_crm_data

CUTOFF = pd.Timestamp("2025-01-01")
PARAMS = FeatureParams(clv_fit_sample=1500)


def _with_two_archetypes(events: pd.DataFrame) -> pd.DataFrame:
    """Add a silent former heavy buyer and a brand-new customer to a synthetic history."""
    heavy_days = pd.date_range(CUTOFF - pd.Timedelta(days=800), periods=60, freq="6D")
    rows = [("heavy_silent", t + pd.Timedelta(hours=12), "purchase", 400.0) for t in heavy_days]
    rows += [("heavy_silent", t + pd.Timedelta(hours=13), "visit", np.nan) for t in heavy_days]
    rows += [
        ("brand_new", CUTOFF - pd.Timedelta(days=5, hours=-10), "visit", np.nan),
        ("brand_new", CUTOFF - pd.Timedelta(days=4, hours=-10), "purchase", 35.0),
    ]
    extra = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type", "amount"])
    extra["category"] = np.where(extra["event_type"] == "purchase", "books", None)
    extra["channel"] = "web"
    combined = pd.concat([events.astype({c: object for c in ("customer_id", "event_type")}), extra])
    for column in ("customer_id", "event_type", "category", "channel"):
        combined[column] = combined[column].astype(str).replace("nan", None).astype("category")
    return combined.reset_index(drop=True)


@pytest.fixture(scope="module")
def base() -> dict[str, pd.DataFrame]:
    data = generate_crm_data(GeneratorParams(n_customers=3000, seed=3))
    events = _with_two_archetypes(data.events)
    features = compute_customer_features(
        events,
        CUTOFF,
        customers=data.customers,
        subscriptions=data.subscriptions,
        params=PARAMS,
    )
    return {"features": features}


@pytest.fixture(scope="module")
def fitted(base) -> tuple[pd.DataFrame, GlobalStats]:
    stats = fit_global_stats(base["features"], PARAMS)
    return apply_global_stats(base["features"], stats, PARAMS), stats


def test_stats_round_trip_through_json(fitted):
    _, stats = fitted
    restored = GlobalStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert restored == stats
    assert stats.cutoff == "2025-01-01"


def test_clv_models_are_fitted_on_at_most_the_sample_size(fitted):
    _, stats = fitted
    assert stats.bgnbd is not None and stats.gamma_gamma is not None
    assert 0 < stats.clv_fit_customers <= PARAMS.clv_fit_sample


def test_stats_are_deterministic(base, fitted):
    _, stats = fitted
    assert fit_global_stats(base["features"], PARAMS) == stats


def test_clv_columns(fitted):
    table, _ = fitted
    purchased = table["purchases_total"] > 0
    alive = table.loc[purchased, "clv_p_alive"]
    assert alive.between(0, 1).all()
    assert (table.loc[purchased, "clv_expected_purchases"] >= 0).all()
    np.testing.assert_allclose(
        table["clv_value"],
        table["clv_expected_purchases"] * table["clv_expected_avg_spend"],
    )
    clv_columns = ["clv_p_alive", "clv_expected_purchases", "clv_expected_avg_spend", "clv_value"]
    assert table.loc[~purchased, clv_columns].isna().all().all()


def test_clv_expects_more_from_the_recent_buyer_than_the_silent_one(fitted):
    table, _ = fitted
    silent = table.loc["heavy_silent"]
    assert silent["clv_p_alive"] < 0.05
    assert silent["clv_expected_purchases"] < table.loc["brand_new", "clv_expected_purchases"]


def test_rfm_scores_are_one_to_five(fitted):
    table, _ = fitted
    for column in ("rfm_r", "rfm_f", "rfm_m"):
        assert table[column].between(1, 5).all()
    assert (table["rfm_score"] == table["rfm_r"] + table["rfm_f"] + table["rfm_m"]).all()


def test_every_customer_gets_exactly_one_label_of_each_kind(fitted):
    table, _ = fitted
    assert table["rfm_segment"].isin(RFM_SEGMENTS).all()
    assert table["lifecycle_stage"].isin(LIFECYCLE_STAGES).all()
    assert table["value_growth_segment"].isin(VALUE_GROWTH_SEGMENTS).all()
    assert table["value_tier"].isin(["A", "B", "C", "D"]).all()
    for column in ("rfm_segment", "lifecycle_stage", "value_growth_segment", "value_tier"):
        assert table[column].notna().all()


def test_silent_former_heavy_buyer(fitted):
    row = fitted[0].loc["heavy_silent"]
    assert row["rfm_segment"] in {"at_risk", "cannot_lose_them"}
    assert row["rfm_r"] == 1 and row["rfm_f"] == 5
    assert row["lifecycle_stage"] == "decline"
    assert row["value_growth_segment"] == "sleeping"


def test_brand_new_customer(fitted):
    row = fitted[0].loc["brand_new"]
    assert row["rfm_segment"] == "new_customers"
    assert row["lifecycle_stage"] == "exploration"


def test_value_tier_shares_are_20_30_30_20(base):
    features = base["features"].copy()
    rng = np.random.default_rng(0)
    features["value_365d"] = rng.lognormal(4.0, 1.0, len(features))
    stats = fit_global_stats(features, PARAMS)
    shares = apply_global_stats(features, stats, PARAMS)["value_tier"].value_counts(normalize=True)
    expected = {"A": 0.2, "B": 0.3, "C": 0.3, "D": 0.2}
    for tier, share in expected.items():
        assert shares[tier] == pytest.approx(share, abs=0.002)


def test_customers_without_value_are_tier_d(fitted):
    table, _ = fitted
    assert (table.loc[table["value_365d"] == 0, "value_tier"] == "D").all()
    top = table["value_365d"] >= table["value_365d"].quantile(0.9)
    assert (table.loc[top, "value_tier"] == "A").all()


def test_rfm_grid_corners():
    r = np.array([5, 1, 1, 5, 3, 2])
    f = np.array([1, 5, 1, 5, 3, 3])
    assert list(rfm_segment(r, f)) == [
        "new_customers",
        "cannot_lose_them",
        "lost",
        "champions",
        "need_attention",
        "at_risk",
    ]


def test_lifecycle_rules_on_hand_made_rows():
    rows = pd.DataFrame(
        {
            "tenure_days": [30.0, 400.0, 400.0, 400.0, 400.0, 400.0],
            "recency_days": [2.0, 200.0, 5.0, 5.0, 5.0, 5.0],
            "recency_purchase_days": [2.0, 200.0, 100.0, 5.0, 5.0, 5.0],
            "recency_vs_rhythm": [np.nan, 10.0, 5.0, 0.5, 0.5, 0.5],
            "activity_trend": [0.0, 0.0, 0.0, -1.5, 0.8, 0.0],
            "spend_trend": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            "purchase_days_total": [1, 10, 10, 10, 10, 10],
            "new_categories_90d": [0, 0, 0, 0, 0, 0],
        }
    )
    assert list(lifecycle_stage(rows)) == [
        "exploration",  # young
        "decline",  # long silence
        "decline",  # five usual gaps without a purchase
        "decline",  # activity fell to less than half
        "formation",  # activity up by more than half
        "stability",
    ]


def test_phase_three_is_partition_invariant(base, fitted):
    table, stats = fitted
    features = base["features"]
    halves = [features.iloc[::2], features.iloc[1::2]]
    parts = pd.concat([apply_global_stats(h, stats, PARAMS) for h in halves]).sort_index()
    pd.testing.assert_frame_equal(parts, table)


def test_apply_does_not_mutate_its_input(base, fitted):
    _, stats = fitted
    features = base["features"]
    before = features.copy()
    result = apply_global_stats(features, stats, PARAMS)
    result.iloc[0, result.columns.get_loc("spend_total")] = -1.0
    pd.testing.assert_frame_equal(features, before)


def test_clv_is_missing_when_nobody_repeats(base):
    features = base["features"].copy()
    features["clv_frequency"] = np.where(features["clv_frequency"].notna(), 0.0, np.nan)
    features["clv_recency_weeks"] = np.where(features["clv_frequency"].notna(), 0.0, np.nan)
    stats = fit_global_stats(features, PARAMS)
    assert stats.bgnbd is None and "repeat" in stats.clv_note
    table = apply_global_stats(features, stats, PARAMS)
    assert table["clv_value"].isna().all()
    assert table["rfm_segment"].isin(RFM_SEGMENTS).all()
