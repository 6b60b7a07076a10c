"""Subscription features from the scheduled term: renewal calendar, seats, price, no leakage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureParams, LabelParams
from features.lifecycle import compute_customer_features
from features.subscriptions import next_renewal

PARAMS = FeatureParams()
CUTOFF = pd.Timestamp("2025-01-01")


def no_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype=object),
            "timestamp": pd.Series([], dtype="datetime64[ns]"),
            "event_type": pd.Series([], dtype=object),
        }
    )


def subscriptions(**columns) -> pd.DataFrame:
    """A canonical subscriptions table; dates given as strings."""
    frame = pd.DataFrame(columns)
    for name in ("start_date", "end_date", "term_end"):
        if name in frame:
            frame[name] = pd.to_datetime(frame[name])
    if "end_date" not in frame:
        frame["end_date"] = pd.NaT
    return frame


def features_of(subs: pd.DataFrame, cutoff=CUTOFF, **label_settings) -> pd.DataFrame:
    return compute_customer_features(
        no_events(),
        cutoff,
        subscriptions=subs,
        params=PARAMS,
        label_params=LabelParams(**label_settings),
    )


SEAT_PLANS = subscriptions(
    customer_id=["annual", "half", "monthly", "termed"],
    plan=["team-annual", "team-6m", "starter", "enterprise"],
    start_date=["2024-03-15", "2024-08-31", "2024-12-10", "2024-07-01"],
    mrr=[100.0, 60.0, 20.0, 500.0],
    bill_period_months=[12.0, 6.0, np.nan, np.nan],
    term_end=[pd.NaT, pd.NaT, pd.NaT, "2025-07-01"],
    seats=[10.0, 4.0, np.nan, 50.0],
    discount=[0.2, 0.0, np.nan, 0.1],
)


# --------------------------------------------------------------------------------------------
# hand-computed renewal calendar
# --------------------------------------------------------------------------------------------


def test_annual_plan_renews_on_its_anniversary():
    annual = features_of(SEAT_PLANS).loc["annual"]

    # 2024-03-15 + 12 months = 2025-03-15: 31 (Jan) + 28 (Feb) + 14 days after 2025-01-01
    assert annual["days_to_renewal"] == 73
    assert annual["bill_period_months"] == 12
    assert annual["plan_price"] == 1200.0  # mrr x 12: what is due at renewal
    assert annual["seats"] == 10 and annual["mrr_per_seat"] == 10.0
    assert annual["discount"] == 0.2
    assert annual["renewal_in_horizon"] == 1  # 73 < 90 (default horizon)
    assert annual["has_subscription"] == 1 and annual["plan"] == "team-annual"


def test_six_month_plan_day_is_clipped_to_the_month_length():
    half = features_of(SEAT_PLANS).loc["half"]

    # 2024-08-31 + 6 months = 2025-02-31 -> 2025-02-28: 58 days after 2025-01-01
    assert half["days_to_renewal"] == 58
    assert half["plan_price"] == 360.0


def test_monthly_when_nothing_else_is_known():
    monthly = features_of(SEAT_PLANS).loc["monthly"]

    assert monthly["days_to_renewal"] == 9  # 2025-01-10
    assert monthly["bill_period_months"] == 1
    assert monthly["plan_price"] == 20.0
    assert math.isnan(monthly["seats"]) and math.isnan(monthly["mrr_per_seat"])


def test_a_known_term_end_is_the_renewal_and_gives_the_period():
    termed = features_of(SEAT_PLANS).loc["termed"]

    assert termed["days_to_renewal"] == 181  # 2025-07-01
    assert termed["bill_period_months"] == 12  # 2024-07-01 -> 2025-07-01
    assert termed["plan_price"] == 6000.0
    assert termed["renewal_in_horizon"] == 0


def test_a_passed_term_end_on_a_running_row_renews_on_the_same_cycle():
    subs = subscriptions(
        customer_id=["a"], plan=["p"], start_date=["2023-07-01"], mrr=[10.0],
        term_end=["2024-07-01"],
    )  # fmt: skip

    a = features_of(subs).loc["a"]

    assert a["days_to_renewal"] == 181  # 2025-07-01, a year after the first term end


def test_a_price_column_is_the_amount_due_at_renewal():
    subs = SEAT_PLANS.assign(price=[1000.0, np.nan, np.nan, np.nan])

    table = features_of(subs)

    assert table.loc["annual", "plan_price"] == 1000.0  # the invoice, discount applied
    assert table.loc["half", "plan_price"] == 360.0  # no price: mrr x period


def test_renewal_in_horizon_follows_the_label_window():
    short = features_of(SEAT_PLANS, horizon_days=30)
    with_lead = features_of(SEAT_PLANS, horizon_days=30, lead_days=50)

    assert short["renewal_in_horizon"].to_dict() == {
        "annual": 0, "half": 0, "monthly": 1, "termed": 0,
    }  # fmt: skip
    assert with_lead.loc["half", "renewal_in_horizon"] == 1  # 58 < 50 + 30


def test_renewal_in_horizon_uses_the_training_window_at_training_and_scoring_time():
    scoring = LabelParams(horizon_days=273, training_horizon_days=60)
    table = compute_customer_features(
        no_events(), CUTOFF, subscriptions=SEAT_PLANS, params=PARAMS, label_params=scoring
    )
    training = compute_customer_features(
        no_events(),
        CUTOFF,
        subscriptions=SEAT_PLANS,
        params=PARAMS,
        label_params=scoring.for_training(),
    )

    assert table["renewal_in_horizon"].to_dict() == training["renewal_in_horizon"].to_dict()
    assert table.loc["annual", "renewal_in_horizon"] == 0  # 73 days > 60


def test_without_an_active_subscription_the_term_features_are_missing():
    subs = SEAT_PLANS.assign(end_date=pd.to_datetime(["2024-12-01", None, None, None]))

    annual = features_of(subs).loc["annual"]

    assert annual["has_subscription"] == 0 and annual["renewal_in_horizon"] == 0
    assert math.isnan(annual["days_to_renewal"]) and math.isnan(annual["plan_price"])
    assert math.isnan(annual["bill_period_months"]) and math.isnan(annual["seats"])


def test_seat_and_discount_columns_only_when_the_table_has_them():
    subs = SEAT_PLANS.drop(columns=["seats", "discount"])

    table = features_of(subs)

    assert not {"seats", "mrr_per_seat", "discount"} & set(table.columns)
    assert {"days_to_renewal", "renewal_in_horizon", "bill_period_months", "plan_price"} <= set(
        table.columns
    )


def test_next_renewal_steps_by_the_period_and_counts_a_future_base():
    base = pd.to_datetime(["2024-01-31 10:00", "2025-03-01 00:00", "2023-11-30 00:00"]).to_numpy()
    renewal = next_renewal(base.view(np.int64), CUTOFF.value, np.array([1, 3, 6]))

    expected = pd.to_datetime(["2025-01-31 10:00", "2025-03-01 00:00", "2025-05-30 00:00"])
    assert list(renewal.view("datetime64[ns]")) == list(expected.to_numpy())
    with pytest.raises(ValueError, match="at least 1 month"):
        next_renewal(base.view(np.int64), CUTOFF.value, 0)


# --------------------------------------------------------------------------------------------
# point in time: a cancellation is not known before it happens, the schedule is
# --------------------------------------------------------------------------------------------


def test_a_cancellation_after_the_cutoff_changes_no_feature():
    cancelled = SEAT_PLANS.assign(
        end_date=pd.to_datetime(["2025-01-01", "2025-02-15", "2025-06-01", "2026-01-01"])
    )

    before = features_of(SEAT_PLANS)
    after = features_of(cancelled)

    pd.testing.assert_frame_equal(before, after)


def test_the_scheduled_term_is_known_at_the_cutoff():
    longer = SEAT_PLANS.assign(
        bill_period_months=[1.0, 6.0, np.nan, np.nan],
        term_end=pd.to_datetime([None, None, None, "2025-04-01"]),
    )

    before = features_of(SEAT_PLANS)
    after = features_of(longer)

    assert after.loc["annual", "days_to_renewal"] == 14  # monthly now: 2025-01-15
    assert after.loc["termed", "days_to_renewal"] == 90
    assert (before["days_to_renewal"] != after["days_to_renewal"]).sum() == 2


def test_a_row_started_after_the_cutoff_does_not_exist_yet():
    later = pd.concat(
        [
            SEAT_PLANS,
            subscriptions(
                customer_id=["annual"], plan=["team-monthly"], start_date=["2025-01-01"],
                mrr=[300.0], bill_period_months=[1.0], term_end=[pd.NaT], seats=[30.0],
                discount=[0.0],
            ),
        ],
        ignore_index=True,
    )  # fmt: skip

    pd.testing.assert_frame_equal(features_of(SEAT_PLANS), features_of(later))


# --------------------------------------------------------------------------------------------
# is_active under subscription churn
# --------------------------------------------------------------------------------------------


def test_is_active_is_an_active_subscription_under_subscription_churn():
    events = pd.DataFrame(
        {
            "customer_id": ["visitor", "visitor"],
            "timestamp": pd.to_datetime(["2024-12-20", "2024-12-28"]),
            "event_type": ["visit", "purchase"],
        }
    )
    subs = pd.concat(
        [
            SEAT_PLANS,
            subscriptions(
                customer_id=["ended"], plan=["p"], start_date=["2023-01-01"],
                end_date=["2024-10-01"], mrr=[10.0],
            ),
        ],
        ignore_index=True,
    )  # fmt: skip

    def active(definition: str) -> dict[str, bool]:
        table = compute_customer_features(
            events,
            CUTOFF,
            subscriptions=subs,
            params=PARAMS,
            label_params=LabelParams(churn_definition=definition),
        )
        return table["is_active"].astype(bool).to_dict()

    assert active("subscription") == {
        "annual": True, "ended": False, "half": True, "monthly": True, "termed": True,
        "visitor": False,
    }  # fmt: skip
    assert active("activity") == {
        "annual": False, "ended": False, "half": False, "monthly": False, "termed": False,
        "visitor": True,
    }  # fmt: skip
