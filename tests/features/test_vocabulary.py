"""Per-event-type features from the export's own vocabulary (features.vocabulary)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.config import AttributeParams, FeatureParams, VocabularyParams
from features.lifecycle import compute_customer_features
from features.segments import GlobalStats
from features.snapshots import build_features
from features.validation import validate_customers
from features.vocabulary import (
    OTHER,
    EventVocabulary,
    fit_vocabulary,
    select_vocabulary,
    slugify,
    type_statistics,
)

CUTOFF = pd.Timestamp("2024-07-01")
SMALL = VocabularyParams(min_customers=1, min_events=1)
PARAMS = FeatureParams(vocabulary=SMALL)


def _events(rows: list[tuple[str, str, str] | tuple[str, str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [(r[0], pd.Timestamp(r[1]), r[2], r[3] if len(r) > 3 else np.nan) for r in rows],
        columns=["customer_id", "timestamp", "event_type", "amount"],
    )
    frame["customer_id"] = frame["customer_id"].astype("category")
    frame["event_type"] = frame["event_type"].astype("category")
    return frame


def _features(events: pd.DataFrame, **kwargs) -> pd.DataFrame:
    vocabulary = fit_vocabulary(events, CUTOFF, kwargs.pop("vocabulary_params", SMALL))
    return compute_customer_features(events, CUTOFF, params=PARAMS, vocabulary=vocabulary, **kwargs)


def test_slugs_are_column_safe_and_never_collide_with_other() -> None:
    assert slugify("Add Contact!") == "add_contact"
    assert slugify("email-opened") == "email_opened"
    assert slugify("3d_view") == "t_3d_view"
    assert slugify("other") == "other_type"
    assert slugify("  ") == "unnamed"


def test_selection_keeps_supported_types_most_frequent_first_and_pools_the_rest() -> None:
    statistics = pd.DataFrame(
        {
            "events": [500, 300, 300, 5, 200, 50],
            "customers": [40, 30, 25, 5, 30, 2],
            "priced": [0, 300, 0, 0, 0, 0],
        },
        index=pd.Index(["like", "Deal Won", "dislike", "rare", "Like", "few_customers"]),
    )
    params = VocabularyParams(min_customers=20, min_events=100, max_types=2)
    vocabulary = select_vocabulary(statistics, params)
    # "like" and "Like" share a slug and count together (700 events); then 300/300 by name
    assert vocabulary.slugs == ("like", "deal_won")
    assert vocabulary.members == {"like": "like", "Like": "like", "Deal Won": "deal_won"}
    assert vocabulary.amount_slugs == ("deal_won",)
    assert vocabulary.slug_of("dislike") == OTHER
    assert vocabulary.slug_of("never seen") == OTHER
    assert vocabulary.pooled_types == 3
    assert EventVocabulary.from_dict(vocabulary.to_dict()) == vocabulary


def test_vocabulary_round_trips_through_global_stats_json() -> None:
    events = _events([("a", "2024-06-01", "like"), ("b", "2024-06-02", "post")])
    features, stats = build_features(events, CUTOFF, params=PARAMS)
    assert stats.vocabulary is not None
    again = GlobalStats.from_dict(stats.to_dict())
    assert again.event_vocabulary() == stats.event_vocabulary()
    rebuilt, _ = build_features(events, CUTOFF, params=PARAMS, stats=again)
    pd.testing.assert_frame_equal(rebuilt, features)


def test_hand_computed_counts_rates_recency_trend_share_and_amounts() -> None:
    events = _events(
        [
            # customer a: first seen 2024-05-01 (61 days before the cutoff)
            ("a", "2024-05-01 10:00", "like"),
            ("a", "2024-06-20 08:00", "like"),
            ("a", "2024-06-20 09:00", "like"),
            ("a", "2024-06-28 12:00", "like"),
            ("a", "2024-06-28 13:00", "deal_won", 250.0),
            ("a", "2024-06-29 13:00", "dislike"),
            ("a", "2024-07-01 00:00", "like"),  # at the cutoff: not known yet
            # customer b: old, active long ago
            ("b", "2023-01-10", "like"),
            ("b", "2024-01-10", "deal_won", 100.0),
            # customer c: seen for 182 days, 1 like in the earlier 90 days and 2 in the latest
            ("c", "2024-01-01", "post"),
            ("c", "2024-03-01", "like"),
            ("c", "2024-05-01", "like"),
            ("c", "2024-06-01", "like"),
            # customer d: seen for 152 days, so only 62 days of the earlier window are observed
            ("d", "2024-01-31", "post"),
            ("d", "2024-03-15", "like"),
            ("d", "2024-05-01", "like"),
            ("d", "2024-06-01", "like"),
        ]
    )
    params = VocabularyParams(min_customers=1, min_events=1, ratios=(("dislike", "like"),))
    rows = _features(events, vocabulary_params=params)
    a, b = rows.loc["a"], rows.loc["b"]
    assert a["ev_like_7d"] == 1  # 2024-06-28 (the 06-20 ones are 11 days back)
    assert a["ev_like_30d"] == 3
    assert a["ev_like_total"] == 4
    # exposure is min(window, tenure): 30 days of a 61-day-old customer, 61 of 90
    assert a["ev_like_per_day_30d"] == pytest.approx(3 / 30)
    assert a["ev_like_per_day_90d"] == pytest.approx(4 / a["tenure_days"])
    # days with any activity in 30 days: 06-20, 06-28, 06-29
    assert a["active_days_30d"] == 3
    assert a["ev_like_per_active_day_30d"] == pytest.approx(1.0)
    assert a["ev_like_days_since_last"] == pytest.approx(
        (CUTOFF - pd.Timestamp("2024-06-28 12:00")).total_seconds() / 86400
    )
    # trend: a has been seen for 61 days, less than half of the earlier 90-day window: unknown
    # (its empty "before" would read as growth); c has two full windows; d's earlier count is
    # scaled from the 62 days observed to 90
    assert math.isnan(a["ev_like_trend_90d"])
    assert rows.loc["c", "ev_like_trend_90d"] == pytest.approx(math.log(3 / 2))
    d_earlier_days = rows.loc["d", "tenure_days"] - 90
    assert d_earlier_days == pytest.approx(62)
    assert rows.loc["d", "ev_like_trend_90d"] == pytest.approx(
        math.log1p(2) - math.log1p(1 * 90 / d_earlier_days)
    )
    assert b["ev_like_trend_90d"] == 0.0  # nothing in either window
    assert a["ev_like_share_180d"] == pytest.approx(4 / 6)
    assert a["ev_deal_won_amount_30d"] == 250.0
    assert "ev_like_amount_30d" not in rows.columns  # likes carry no amounts
    assert a["ratio_dislike_per_like_30d"] == pytest.approx(1 / 3)
    assert b["ev_like_30d"] == 0 and b["ev_like_total"] == 1
    assert math.isnan(b["ev_dislike_days_since_last"])
    assert math.isnan(b["ratio_dislike_per_like_30d"])  # no like in the window: undefined
    assert b["ev_deal_won_amount_total"] == 100.0


def test_a_daily_count_export_and_an_event_export_give_the_same_features() -> None:
    single = _events(
        [("a", "2024-06-10 09:00", "add_contact")] * 3
        + [("a", "2024-06-11 10:00", "add_contact")] * 2
        + [("a", "2024-05-01 10:00", "login")]
    )
    daily = _events(
        [("a", "2024-06-10", "add_contact"), ("a", "2024-06-11", "add_contact")]
        + [("a", "2024-05-01 10:00", "login")]
    )
    daily["quantity"] = [3.0, 2.0, 1.0]
    counted = VocabularyParams(min_customers=1, min_events=1, count_weight="quantity")
    by_rows = _features(single)
    by_quantity = compute_customer_features(
        daily, CUTOFF, params=PARAMS, vocabulary=fit_vocabulary(single, CUTOFF, counted)
    )
    columns = [c for c in by_rows.columns if c.startswith("ev_add_contact") and "since" not in c]
    assert by_quantity.loc["a", "ev_add_contact_30d"] == 5
    pd.testing.assert_series_equal(by_rows.loc["a", columns], by_quantity.loc["a", columns])


def test_events_at_or_after_the_cutoff_change_no_vocabulary_feature() -> None:
    base = [("a", "2024-06-01", "like"), ("b", "2024-06-15", "post"), ("a", "2024-03-01", "post")]
    vocabulary = fit_vocabulary(_events(base), CUTOFF, SMALL)
    before = compute_customer_features(_events(base), CUTOFF, params=PARAMS, vocabulary=vocabulary)
    later = base + [
        ("a", "2024-07-01", "like"),
        ("b", "2024-08-01", "like"),
        ("c", "2024-07-02", "x"),
    ]
    after = compute_customer_features(_events(later), CUTOFF, params=PARAMS, vocabulary=vocabulary)
    pd.testing.assert_frame_equal(before, after)
    # the control: an earlier event does move them
    earlier = base + [("a", "2024-06-30", "like")]
    moved = compute_customer_features(
        _events(earlier), CUTOFF, params=PARAMS, vocabulary=vocabulary
    )
    assert moved.loc["a", "ev_like_7d"] == before.loc["a", "ev_like_7d"] + 1


def test_types_outside_the_vocabulary_are_pooled_as_other() -> None:
    events = _events([("a", "2024-06-01", "like"), ("a", "2024-06-02", "brand_new")])
    vocabulary = EventVocabulary(slugs=("like",), members={"like": "like"})
    rows = compute_customer_features(events, CUTOFF, params=PARAMS, vocabulary=vocabulary)
    assert rows.loc["a", "ev_like_30d"] == 1
    assert rows.loc["a", "ev_other_30d"] == 1
    assert not any(c.startswith("ev_brand_new") for c in rows.columns)


def test_partitions_give_the_same_rows_with_one_vocabulary() -> None:
    rng = np.random.default_rng(3)
    n = 400
    events = _events(
        [
            (
                f"c{rng.integers(60)}",
                str(CUTOFF - pd.Timedelta(minutes=int(rng.integers(1, 400 * 24 * 60)))),
                str(rng.choice(["like", "post", "Deal Won", "dislike"])),
                float(rng.integers(1, 50)) if rng.random() < 0.3 else np.nan,
            )
            for _ in range(n)
        ]
    )
    vocabulary = fit_vocabulary(events, CUTOFF, SMALL)
    whole = compute_customer_features(events, CUTOFF, params=PARAMS, vocabulary=vocabulary)
    ids = events["customer_id"].astype(str)
    parts = [
        compute_customer_features(
            events[ids < "c3"].reset_index(drop=True), CUTOFF, params=PARAMS, vocabulary=vocabulary
        ),
        compute_customer_features(
            events[ids >= "c3"].reset_index(drop=True), CUTOFF, params=PARAMS, vocabulary=vocabulary
        ),
    ]
    pd.testing.assert_frame_equal(pd.concat(parts).sort_index(), whole)


def test_type_statistics_count_only_events_before_the_date() -> None:
    events = _events(
        [("a", "2024-06-01", "like"), ("b", "2024-07-02", "like"), ("a", "2024-06-03", "x", 3.0)]
    )
    stats = type_statistics(events, CUTOFF)
    assert stats.loc["like"].tolist() == [1, 1, 0]
    assert stats.loc["x"].tolist() == [1, 1, 1]


def test_declared_customer_attributes_become_features() -> None:
    """Validation settles the attributes on the whole table (ISO-date text to datetime64,
    identifier-like text dropped); phase 1 reads what is left by dtype."""
    events = _events([(f"c{i}", "2024-06-01", "like") for i in range(60)])
    raw = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(60)],
            "country": ["DE"] * 60,
            "seats_bought": np.arange(60, dtype=float),
            "plan_tier": ["gold", "silver"] * 30,
            "date_of_birth": ["1990-01-01"] * 59 + ["2030-01-01"],
            "email": [f"person{i}@example.com" for i in range(60)],
            "status": ["open"] * 60,
        }
    )
    validated = validate_customers(raw, now=CUTOFF)
    customers = validated.clean
    assert customers["date_of_birth"].dtype == "datetime64[ns]"
    # identifier-like text is never a feature: validation drops it and says so
    assert "email" not in customers.columns
    assert validated.report.problem("identifier_like_columns").details["columns"] == ["email"]
    rows = _features(events, customers=customers)
    assert rows.loc["c3", "attr_seats_bought"] == 3.0
    assert rows.loc["c1", "attr_plan_tier"] == "silver"
    assert rows.loc["c0", "attr_date_of_birth_days"] == pytest.approx(
        (CUTOFF - pd.Timestamp("1990-01-01")).days
    )
    assert math.isnan(rows.loc["c59", "attr_date_of_birth_days"])  # after the cutoff: unknown
    assert "attr_email" not in rows.columns
    assert rows.loc["c0", "country"] == "DE"  # the known attributes keep their names
    # phase 1 decides by dtype only: unvalidated ISO text is text, any text stays a category
    raw_rows = _features(events, customers=raw)
    assert raw_rows.loc["c0", "attr_date_of_birth"] == "1990-01-01"
    assert raw_rows.loc["c5", "attr_email"] == "person5@example.com"
    excluded = compute_customer_features(
        events,
        CUTOFF,
        customers=customers,
        params=FeatureParams(attributes=AttributeParams(exclude=("status",))),
    )
    assert "attr_status" not in excluded.columns and "attr_plan_tier" in excluded.columns
    only = compute_customer_features(
        events,
        CUTOFF,
        customers=customers,
        params=FeatureParams(attributes=AttributeParams(include=("plan_tier",))),
    )
    assert [c for c in only.columns if c.startswith("attr_")] == ["attr_plan_tier"]
