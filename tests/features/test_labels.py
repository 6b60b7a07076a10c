"""Churn, up-sell and win-back labels: hand examples for each rule, lead time, maturity."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.config import LabelParams
from features.labels import build_labels, label_window

CUTOFF = pd.Timestamp("2024-07-01")
LATE = pd.Timestamp("2025-01-01")  # data_end far after every window
PARAMS = LabelParams(horizon_days=30)


def _events(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["customer_id", "timestamp", "event_type", "amount", "category"]
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["amount"] = frame["amount"].astype(float)
    for column in ("customer_id", "event_type", "category"):
        frame[column] = frame[column].astype("category")
    return frame


def _population(active: dict[str, bool]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(active), "is_active": list(active.values())})


@pytest.fixture
def events() -> pd.DataFrame:
    return _events(
        [
            ("A", "2024-06-10 10:00", "purchase", 20.0, "x"),
            ("A", "2024-07-10 10:00", "visit", None, None),
            ("A", "2024-07-20 10:00", "purchase", 10.0, "new_line"),
            ("B", "2024-06-15 10:00", "visit", None, None),
            ("B", "2024-07-31 00:00", "visit", None, None),  # exactly at the window end: outside
            ("C", "2023-06-15 10:00", "purchase", 50.0, "x"),
            ("C", "2024-07-20 10:00", "purchase", 50.0, "x"),
            ("D", "2023-05-01 10:00", "visit", None, None),
            ("D", "2024-07-05 10:00", "campaign_open", None, None),  # not qualifying
        ]
    )


POPULATION = _population({"A": True, "B": True, "C": False, "D": False})


def _labels(events, params=PARAMS, population=POPULATION, data_end=LATE, **kwargs):
    return build_labels(
        events, CUTOFF, population=population, params=params, data_end=data_end, **kwargs
    )


def test_label_window_with_lead_time():
    start, end = label_window(CUTOFF, LabelParams(horizon_days=30, lead_days=14))
    assert (start, end) == (pd.Timestamp("2024-07-15"), pd.Timestamp("2024-08-14"))


def test_activity_churn(events):
    labels = _labels(events)
    assert labels.loc["A", "churn_label"] == 0.0
    assert labels.loc["B", "churn_label"] == 1.0  # its only later visit is at the window end


def test_churn_and_upsell_are_not_defined_for_lapsed_customers(events):
    labels = _labels(events)
    assert labels.loc[["C", "D"], ["churn_label", "upsell_label"]].isna().all().all()


def test_winback(events):
    labels = _labels(events)
    assert labels.loc["C", "winback_label"] == 1.0
    assert labels.loc["D", "winback_label"] == 0.0  # a campaign open is not qualifying
    assert labels.loc[["A", "B"], "winback_label"].isna().all()


def test_upsell_by_new_category(events):
    labels = _labels(events)
    assert labels.loc["A", "upsell_label"] == 1.0  # bought new_line, only x before
    assert labels.loc["B", "upsell_label"] == 0.0


def test_lead_time_moves_the_window(events):
    labels = _labels(events, params=LabelParams(horizon_days=30, lead_days=15))
    # window [07-16, 08-15): A's 07-10 visit falls in the lead time, its 07-20 purchase counts
    assert labels.loc["A", "churn_label"] == 0.0
    labels = _labels(events, params=LabelParams(horizon_days=5, lead_days=5))
    # window [07-06, 07-11): only A's visit on 07-10
    assert labels.loc["A", "churn_label"] == 0.0
    assert labels.loc["A", "upsell_label"] == 0.0  # the new-line purchase is after the window
    assert labels.loc["C", "winback_label"] == 0.0


def test_unmatured_window_gives_nan_labels(events):
    labels = _labels(events, data_end=pd.Timestamp("2024-07-20"))
    assert labels[["churn_label", "upsell_label", "winback_label"]].isna().all().all()
    assert not labels["label_matured"].any()


def test_window_ending_exactly_at_data_end_is_matured(events):
    labels = _labels(events, data_end=pd.Timestamp("2024-07-31"))
    assert labels["label_matured"].all()
    assert labels.loc["B", "churn_label"] == 1.0


def test_upsell_by_spend_growth():
    rows = [
        ("grow", "2024-06-10", "purchase", 100.0, "x"),
        ("grow", "2024-07-10", "purchase", 160.0, "x"),  # > 1.5 x 100
        ("flat", "2024-06-10", "purchase", 100.0, "x"),
        ("flat", "2024-07-10", "purchase", 150.0, "x"),  # = 1.5 x 100: not more
        ("first", "2024-05-01", "visit", None, None),
        ("first", "2024-06-30", "visit", None, None),
        ("first", "2024-07-10", "purchase", 5.0, None),  # nothing spent before, now > 0
        ("old", "2024-05-01", "purchase", 100.0, "x"),  # outside the comparison window
        ("old", "2024-07-10", "purchase", 20.0, "x"),
    ]
    population = _population({"grow": True, "flat": True, "first": True, "old": True})
    labels = _labels(_events(rows), population=population)
    assert labels["upsell_label"].to_dict() == {"grow": 1.0, "flat": 0.0, "first": 1.0, "old": 1.0}


def test_population_order_and_types(events):
    population = _population({"D": False, "A": True, "ghost": True})
    labels = _labels(events, population=population)
    assert list(labels.index) == ["D", "A", "ghost"]
    assert labels.loc["ghost", "churn_label"] == 1.0  # active, no events in the window
    for column in ("churn_label", "upsell_label", "winback_label"):
        assert labels[column].dtype == np.float64
    assert labels["label_matured"].dtype == bool


@pytest.fixture
def subscriptions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["ends", "upgrades", "upgrades", "stays", "late", "lapsed_payer"],
            "plan": ["basic", "basic", "pro", "basic", "basic", "basic"],
            "start_date": pd.to_datetime(
                ["2024-01-01", "2024-01-01", "2024-07-10", "2024-01-01", "2024-07-05", "2023-01-01"]
            ),
            "end_date": pd.to_datetime(
                ["2024-07-15", "2024-07-10", None, "2024-12-31", None, "2024-07-20"]
            ),
            "mrr": [10.0, 10.0, 30.0, 10.0, 10.0, 10.0],
        }
    )


def test_subscription_churn(subscriptions):
    events = _events([("ends", "2024-07-02", "visit", None, None)])
    population = _population(
        {"ends": True, "upgrades": True, "stays": True, "late": True, "lapsed_payer": False}
    )
    params = LabelParams(horizon_days=30, churn_definition="subscription")
    labels = _labels(events, params=params, population=population, subscriptions=subscriptions)
    churn = labels["churn_label"].to_dict()
    assert churn["ends"] == 1.0  # active at the cutoff, ended in the window
    assert churn["upgrades"] == 0.0  # a plan change is not churn
    assert churn["stays"] == 0.0  # ends after the window
    assert math.isnan(churn["late"])  # no subscription at the cutoff: not eligible
    assert churn["lapsed_payer"] == 1.0  # a paying customer is eligible even without activity


def test_upsell_by_mrr_increase(subscriptions):
    population = _population({"upgrades": True, "stays": True})
    labels = _labels(
        _events([("stays", "2024-07-02", "visit", None, None)]),
        population=population,
        subscriptions=subscriptions,
    )
    assert labels.loc["upgrades", "upsell_label"] == 1.0
    assert labels.loc["stays", "upsell_label"] == 0.0


def test_subscription_churn_needs_a_subscriptions_table(events):
    with pytest.raises(ValueError, match="subscriptions"):
        _labels(events, params=LabelParams(churn_definition="subscription"))


def test_duplicate_population_rows_are_an_error(events):
    population = pd.concat([POPULATION, POPULATION])
    with pytest.raises(ValueError, match="duplicate"):
        _labels(events, population=population)


def test_subscription_population_from_the_features_matches_churn_eligibility(subscriptions):
    from features.config import FeatureParams
    from features.lifecycle import compute_customer_features

    # "late" starts after the cutoff; "lapsed_payer" pays and has no qualifying event
    events = _events(
        [
            ("ends", "2024-06-20", "visit", None, None),
            ("visitor", "2024-06-25", "purchase", 5.0, "x"),
            ("visitor", "2024-07-05", "visit", None, None),
        ]
    )
    params = LabelParams(horizon_days=30, churn_definition="subscription")
    features = compute_customer_features(
        events, CUTOFF, subscriptions=subscriptions, params=FeatureParams(), label_params=params
    )
    population = pd.DataFrame(
        {"customer_id": features.index, "is_active": features["is_active"].to_numpy()}
    )

    labels = _labels(events, params=params, population=population, subscriptions=subscriptions)

    active = features["is_active"].astype(bool)
    assert active.to_dict() == {
        "ends": True, "lapsed_payer": True, "stays": True, "upgrades": True, "visitor": False,
    }  # fmt: skip
    assert (labels["churn_label"].notna() == active).all()
    assert (labels["upsell_label"].notna() == active).all()
    assert (labels["winback_label"].notna() == ~active).all()
    assert labels.loc["visitor", "winback_label"] == 1.0  # not subscribed, came back
