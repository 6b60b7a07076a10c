"""Tests of the synthetic CRM generator: contract, invariants and the behaviour it must carry."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from features.contract import (
    CUSTOMERS_KNOWN,
    EVENT_TYPES,
    EVENTS_COLUMNS,
    SUBSCRIPTIONS_COLUMNS,
)
from features.synthetic import (
    PRODUCT_CATEGORIES,
    DriftSpec,
    GeneratorParams,
    SyntheticCRM,
    generate_crm_data,
    write_crm_data,
)

N_CUSTOMERS = 3000
DRIFT_DATE = date(2024, 7, 1)
QUALIFYING = ("visit", "purchase")


@pytest.fixture(scope="module")
def crm() -> SyntheticCRM:
    return generate_crm_data(GeneratorParams(n_customers=N_CUSTOMERS, seed=11))


@pytest.fixture(scope="module")
def drifted_crm() -> SyntheticCRM:
    drift = DriftSpec(start=DRIFT_DATE, price_increase=0.3, new_channel="marketplace")
    return generate_crm_data(GeneratorParams(n_customers=N_CUSTOMERS, seed=11, drift=drift))


def _end_of_period(params: GeneratorParams) -> pd.Timestamp:
    return pd.Timestamp(params.end) + pd.Timedelta(days=1)


def _customer_type_of(data: SyntheticCRM, customer_id: pd.Series) -> np.ndarray:
    return (
        data.customers.set_index("customer_id")["customer_type"]
        .astype(str)
        .reindex(customer_id.astype(str))
        .to_numpy()
    )


def _purchases(data: SyntheticCRM) -> pd.DataFrame:
    return data.events[data.events["event_type"] == "purchase"]


def _pooled_churn_observations(data: SyntheticCRM) -> pd.DataFrame:
    """Active customers at monthly cutoffs with their recent behaviour and next-90-day churn.

    Churn is observed as a model would see it: no visit or purchase in the 90 days from the
    cutoff. Pooling cutoffs keeps the test data small and the rate estimates stable.
    """
    events = data.events
    n = len(data.customers)
    codes = events["customer_id"].cat.codes.to_numpy()
    ts = events["timestamp"].to_numpy()
    qualifying = events["event_type"].isin(QUALIFYING).to_numpy()
    complaint = (events["event_type"] == "complaint").to_numpy()
    horizon, half = np.timedelta64(90, "D"), np.timedelta64(45, "D")
    frames = []
    for cutoff in pd.date_range("2024-01-01", "2025-03-01", freq="MS").to_numpy():

        def count(mask: np.ndarray) -> np.ndarray:
            return np.bincount(codes[mask], minlength=n)

        earlier = count(qualifying & (ts >= cutoff - horizon) & (ts < cutoff - half))
        recent = count(qualifying & (ts >= cutoff - half) & (ts < cutoff))
        following = count(qualifying & (ts >= cutoff) & (ts < cutoff + horizon))
        complaints = count(complaint & (ts >= cutoff - horizon) & (ts < cutoff))
        active = (earlier + recent) > 0
        frames.append(
            pd.DataFrame(
                {
                    "churned": following[active] == 0,
                    "complained": complaints[active] > 0,
                    "falling": (earlier[active] >= 4) & (recent[active] < 0.5 * earlier[active]),
                    "steady": (earlier[active] >= 4) & (recent[active] >= 0.5 * earlier[active]),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _amount_ratios(data: SyntheticCRM) -> tuple[float, float]:
    """Mean purchase amount in the half-year after DRIFT_DATE over the half-year before it,
    pooled and as the median of per-customer ratios (robust to the mix of customers)."""
    purchases = _purchases(data)
    pivot = pd.Timestamp(DRIFT_DATE)
    half_year = pd.Timedelta(days=182)
    before = purchases[(purchases.timestamp >= pivot - half_year) & (purchases.timestamp < pivot)]
    after = purchases[(purchases.timestamp >= pivot) & (purchases.timestamp < pivot + half_year)]
    pooled = after["amount"].mean() / before["amount"].mean()
    per_customer = (
        after.groupby("customer_id", observed=True)["amount"].mean()
        / before.groupby("customer_id", observed=True)["amount"].mean()
    ).dropna()
    return float(pooled), float(per_customer.median())


# ------------------------------------------------------------------ determinism and contract


def test_same_seed_gives_identical_frames() -> None:
    params = GeneratorParams(n_customers=400, seed=3)
    first, second = generate_crm_data(params), generate_crm_data(params)
    for name in ("events", "customers", "subscriptions", "truth"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))


def test_different_seeds_give_different_histories() -> None:
    first = generate_crm_data(GeneratorParams(n_customers=400, seed=3))
    second = generate_crm_data(GeneratorParams(n_customers=400, seed=4))
    assert len(first.events) != len(second.events) or not first.events.equals(second.events)
    assert not first.customers["signup_date"].equals(second.customers["signup_date"])


def test_events_follow_the_contract(crm: SyntheticCRM) -> None:
    events = crm.events
    assert tuple(events.columns) == EVENTS_COLUMNS
    for column in ("customer_id", "event_type", "category", "channel"):
        assert isinstance(events[column].dtype, pd.CategoricalDtype), column
    assert all(isinstance(c, str) for c in events["customer_id"].cat.categories)
    assert events["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert events["amount"].dtype == np.float64
    assert events["quantity"].dtype == np.float64
    assert set(events["event_type"].unique()) == set(EVENT_TYPES)
    assert set(events["category"].dropna().unique()) == set(PRODUCT_CATEGORIES)
    assert events["customer_id"].str.fullmatch(r"C\d{7}").all()


def test_only_purchases_carry_amount_quantity_and_category(crm: SyntheticCRM) -> None:
    events = crm.events
    is_purchase = (events["event_type"] == "purchase").to_numpy()
    for column in ("amount", "quantity", "category"):
        assert events[column].notna().to_numpy().tolist() == is_purchase.tolist(), column
    assert (events.loc[is_purchase, "amount"] > 0).all()
    assert (events.loc[is_purchase, "quantity"] >= 1).all()
    assert events["channel"].notna().all()


def test_customer_and_subscription_tables_follow_the_contract(crm: SyntheticCRM) -> None:
    customers, subscriptions = crm.customers, crm.subscriptions
    assert tuple(customers.columns) == CUSTOMERS_KNOWN
    assert customers["customer_id"].is_unique
    assert customers["signup_date"].dtype == np.dtype("datetime64[ns]")
    assert (customers["signup_date"] == customers["signup_date"].dt.normalize()).all()
    assert set(customers["customer_type"].unique()) == {"B2B", "B2C"}
    assert tuple(subscriptions.columns) == SUBSCRIPTIONS_COLUMNS
    assert subscriptions["start_date"].dtype == np.dtype("datetime64[ns]")
    assert subscriptions["end_date"].dtype == np.dtype("datetime64[ns]")
    assert subscriptions["mrr"].dtype == np.float64
    assert (subscriptions["mrr"] > 0).all()
    assert set(subscriptions["plan"].unique()) == {"basic", "plus", "pro"}
    assert set(crm.truth.columns) >= {"customer_id", "churn_date", "returned_date"}


def test_events_are_sorted_by_timestamp(crm: SyntheticCRM) -> None:
    assert crm.events["timestamp"].is_monotonic_increasing


# ------------------------------------------------------------------ lifetime invariants


def test_no_event_before_signup_or_after_the_period(crm: SyntheticCRM) -> None:
    params = GeneratorParams(n_customers=N_CUSTOMERS, seed=11)
    signup = crm.customers.set_index("customer_id")["signup_date"]
    signup_of_event = signup.reindex(crm.events["customer_id"].astype(str)).to_numpy()
    assert (crm.events["timestamp"].to_numpy() >= signup_of_event).all()
    assert crm.events["timestamp"].min() >= pd.Timestamp(params.start)
    assert crm.events["timestamp"].max() < _end_of_period(params)


def test_every_customer_has_a_signup_day_visit(crm: SyntheticCRM) -> None:
    first = crm.events.groupby("customer_id", observed=True)["timestamp"].min()
    signup = crm.customers.set_index("customer_id")["signup_date"]
    assert len(first) == len(crm.customers)
    assert (first.dt.normalize() == signup.reindex(first.index)).all()


def test_churned_customers_are_silent_until_they_return(crm: SyntheticCRM) -> None:
    truth = crm.truth.set_index("customer_id")
    keys = crm.events["customer_id"].astype(str)
    ts = crm.events["timestamp"].to_numpy()
    churn = truth["churn_date"].reindex(keys).to_numpy()
    back = truth["returned_date"].reindex(keys).fillna(pd.Timestamp.max).to_numpy()
    gone = truth["second_churn_date"].reindex(keys).fillna(pd.Timestamp.max).to_numpy()
    assert truth["churn_date"].notna().mean() > 0.15
    assert not ((ts >= churn) & (ts < back)).any()
    assert not (ts >= gone).any()


def test_some_lapsed_customers_come_back_and_are_active_again(crm: SyntheticCRM) -> None:
    truth = crm.truth
    returned = truth[truth["returned_date"].notna()]
    assert 0.02 < len(returned) / truth["churn_date"].notna().sum() < 0.4
    events = crm.events.merge(
        returned[["customer_id", "churn_date", "returned_date"]], on="customer_id"
    )
    after_return = events[events["timestamp"] >= events["returned_date"]]
    assert set(after_return["customer_id"].astype(str)) == set(returned["customer_id"].astype(str))
    assert (returned["returned_date"] - returned["churn_date"]).min() >= pd.Timedelta(days=42)


def test_win_back_is_more_likely_after_campaign_clicks(crm: SyntheticCRM) -> None:
    # Churned early enough to have had time to come back.
    churned = crm.truth[crm.truth["churn_date"] < pd.Timestamp("2024-10-01")]
    truth = churned.set_index("customer_id")
    clicks = crm.events[crm.events["event_type"] == "campaign_click"]
    churn_of_click = truth["churn_date"].reindex(clicks["customer_id"].astype(str)).to_numpy()
    clicks = clicks[clicks["timestamp"].to_numpy() < churn_of_click]
    n_clicks = (
        clicks.groupby("customer_id", observed=True).size().reindex(truth.index, fill_value=0)
    )
    returned = truth["returned_date"].notna()
    assert (n_clicks >= 2).sum() > 50
    assert returned[n_clicks >= 2].mean() > 1.5 * returned[n_clicks == 0].mean()


def test_resolutions_follow_their_tickets_and_some_tickets_stay_open(crm: SyntheticCRM) -> None:
    counts = crm.events["event_type"].value_counts()
    resolved_share = counts["ticket_resolved"] / counts["support_ticket"]
    assert 0.75 < resolved_share < 0.97
    per_customer = (
        crm.events.groupby(["customer_id", "event_type"], observed=True)
        .agg(first=("timestamp", "min"))["first"]
        .unstack()
    )
    both = per_customer.dropna(subset=["support_ticket", "ticket_resolved"])
    assert (both["ticket_resolved"] > both["support_ticket"]).all()


# ------------------------------------------------------------------ heterogeneity and realism


def test_b2b_customers_are_fewer_spend_more_and_open_more_tickets(crm: SyntheticCRM) -> None:
    share_b2b = (crm.customers["customer_type"] == "B2B").mean()
    assert 0.08 < share_b2b < 0.25
    purchases = _purchases(crm)
    kind = _customer_type_of(crm, purchases["customer_id"])
    amount = purchases["amount"].to_numpy()
    assert np.median(amount[kind == "B2B"]) > 3 * np.median(amount[kind == "B2C"])
    tickets = crm.events[crm.events["event_type"] == "support_ticket"]
    ticket_kind = _customer_type_of(crm, tickets["customer_id"])
    n_b2b = (crm.customers["customer_type"] == "B2B").sum()
    per_b2b = (ticket_kind == "B2B").sum() / n_b2b
    per_b2c = (ticket_kind == "B2C").sum() / (len(crm.customers) - n_b2b)
    assert per_b2b > 2 * per_b2c


def test_acquisition_grows_over_the_period(crm: SyntheticCRM) -> None:
    quarters = crm.customers["signup_date"].dt.to_period("Q").value_counts().sort_index()
    assert quarters.iloc[-1] > 2 * quarters.iloc[0]


def test_b2b_activity_is_concentrated_on_weekdays_and_office_hours(crm: SyntheticCRM) -> None:
    visits = crm.events[crm.events["event_type"] == "visit"]
    kind = _customer_type_of(crm, visits["customer_id"])
    weekend = (visits["timestamp"].dt.dayofweek >= 5).to_numpy()
    office = visits["timestamp"].dt.hour.between(8, 17).to_numpy()
    assert weekend[kind == "B2B"].mean() < 0.5 * weekend[kind == "B2C"].mean()
    assert office[kind == "B2B"].mean() > 0.7
    assert (visits["timestamp"].dt.hour.nunique()) == 24


# ------------------------------------------------------------------ learnable behaviour


def test_customers_with_complaints_churn_more_in_the_next_90_days(crm: SyntheticCRM) -> None:
    obs = _pooled_churn_observations(crm)
    assert obs["complained"].sum() > 200
    rate_complained = obs.loc[obs["complained"], "churned"].mean()
    rate_others = obs.loc[~obs["complained"], "churned"].mean()
    assert rate_complained > 1.6 * rate_others


def test_customers_with_falling_activity_churn_more_in_the_next_90_days(crm: SyntheticCRM) -> None:
    obs = _pooled_churn_observations(crm)
    assert obs["falling"].sum() > 200
    assert obs.loc[obs["falling"], "churned"].mean() > 3 * obs.loc[obs["steady"], "churned"].mean()


def test_customers_buy_new_categories_after_their_first_90_days(crm: SyntheticCRM) -> None:
    purchases = _purchases(crm)
    first_ever = purchases.groupby("customer_id", observed=True)["timestamp"].transform("min")
    first_in_category = purchases.groupby(["customer_id", "category"], observed=True)[
        "timestamp"
    ].transform("min")
    late_new = purchases[
        (purchases["timestamp"] == first_in_category)
        & (purchases["timestamp"] >= first_ever + pd.Timedelta(days=90))
    ]
    buyers = purchases["customer_id"].nunique()
    assert late_new["customer_id"].nunique() > 0.05 * buyers


def test_plans_are_upgraded_and_downgraded(crm: SyntheticCRM) -> None:
    subs = crm.subscriptions.sort_values(["customer_id", "start_date"])
    order = {"basic": 1, "plus": 2, "pro": 3}
    level = subs["plan"].astype(str).map(order)
    same_customer = subs["customer_id"].astype(str).eq(subs["customer_id"].astype(str).shift())
    contiguous = subs["start_date"].eq(subs["end_date"].shift()) & same_customer
    step = (level - level.shift())[contiguous]
    assert (step > 0).sum() > 20
    assert (step < 0).sum() > 5


# ------------------------------------------------------------------ subscriptions


def test_subscription_rows_never_overlap_per_customer(crm: SyntheticCRM) -> None:
    subs = crm.subscriptions.sort_values(["customer_id", "start_date"]).reset_index(drop=True)
    ended = subs["end_date"].notna()
    assert (subs.loc[ended, "end_date"] >= subs.loc[ended, "start_date"]).all()
    same_customer = subs["customer_id"].astype(str).eq(subs["customer_id"].astype(str).shift())
    previous_end = subs["end_date"].shift()
    follows = same_customer.to_numpy()
    assert previous_end[follows].notna().all()
    assert (subs.loc[follows, "start_date"] >= previous_end[follows]).all()
    assert subs[subs["end_date"].isna()]["customer_id"].is_unique


def test_b2b_customers_subscribe_more_often(crm: SyntheticCRM) -> None:
    subscribers = set(crm.subscriptions["customer_id"].astype(str))
    customers = crm.customers.assign(
        subscribed=crm.customers["customer_id"].astype(str).isin(subscribers)
    )
    share = customers.groupby("customer_type", observed=True)["subscribed"].mean()
    assert share["B2B"] > 2 * share["B2C"]


def test_subscriptions_end_when_customers_churn(crm: SyntheticCRM) -> None:
    gone = crm.truth[crm.truth["churned_at_end"]]["customer_id"].astype(str)
    open_rows = crm.subscriptions[crm.subscriptions["end_date"].isna()]
    assert not open_rows["customer_id"].astype(str).isin(set(gone)).any()
    still_active = crm.truth[~crm.truth["churned_at_end"]]["customer_id"].astype(str)
    assert open_rows["customer_id"].astype(str).isin(set(still_active)).all()


def test_every_subscription_row_starts_with_a_subscription_change(crm: SyntheticCRM) -> None:
    changes = crm.events[crm.events["event_type"] == "subscription_change"]
    change_days = set(
        zip(changes["customer_id"].astype(str), changes["timestamp"].dt.normalize(), strict=True)
    )
    starts = set(
        zip(
            crm.subscriptions["customer_id"].astype(str),
            crm.subscriptions["start_date"],
            strict=True,
        )
    )
    assert starts <= change_days


# ------------------------------------------------------------------ drift


def test_without_drift_mean_purchase_amount_is_stable(crm: SyntheticCRM) -> None:
    pooled, per_customer = _amount_ratios(crm)
    # Pooled means are dominated by a few large B2B orders, hence the wider band.
    assert 0.85 < pooled < 1.18
    assert 0.95 < per_customer < 1.12


def test_price_drift_raises_purchase_amounts_by_its_size(
    crm: SyntheticCRM, drifted_crm: SyntheticCRM
) -> None:
    pooled, per_customer = _amount_ratios(drifted_crm)
    assert 1.15 < pooled < 1.75
    assert 1.22 < per_customer < 1.5
    _, per_customer_without_drift = _amount_ratios(crm)
    assert 1.15 < per_customer / per_customer_without_drift < 1.45


def test_price_drift_makes_price_sensitive_customers_churn_more(
    crm: SyntheticCRM, drifted_crm: SyntheticCRM
) -> None:
    def sensitive_churn_after_drift(data: SyntheticCRM) -> float:
        truth = data.truth
        at_risk = (
            truth["churn_date"].isna() | (truth["churn_date"] >= pd.Timestamp(DRIFT_DATE))
        ) & (truth["price_sensitivity"] > truth["price_sensitivity"].quantile(0.75))
        signed_up = data.customers["signup_date"] < pd.Timestamp(DRIFT_DATE)
        group = truth[at_risk & signed_up.to_numpy()]
        return float(group["churn_date"].notna().mean())

    assert sensitive_churn_after_drift(drifted_crm) > 1.3 * sensitive_churn_after_drift(crm)


def test_new_channel_appears_only_after_its_start(
    crm: SyntheticCRM, drifted_crm: SyntheticCRM
) -> None:
    pivot = pd.Timestamp(DRIFT_DATE)
    events = drifted_crm.events
    on_new = events["channel"] == "marketplace"
    assert on_new.sum() > 100
    assert events.loc[on_new, "timestamp"].min() >= pivot
    customers = drifted_crm.customers
    via_new = customers["acquisition_channel"] == "marketplace"
    assert via_new.sum() > 10
    assert customers.loc[via_new, "signup_date"].min() >= pivot
    assert "marketplace" not in set(crm.events["channel"].astype(str))


# ------------------------------------------------------------------ scale, params and writing


def test_activity_scale_scales_event_volume() -> None:
    full = generate_crm_data(GeneratorParams(n_customers=600, seed=5))
    half = generate_crm_data(GeneratorParams(n_customers=600, seed=5, activity_scale=0.5))
    assert 0.4 < len(half.events) / len(full.events) < 0.65


def test_default_scale_gives_about_fifty_events_per_customer(crm: SyntheticCRM) -> None:
    assert 35 < len(crm.events) / len(crm.customers) < 70


@pytest.mark.parametrize(
    "kwargs",
    [
        {"end": date(2022, 12, 1)},
        {"n_customers": 0},
        {"activity_scale": 0.0},
        {"drift": {"start": date(2030, 1, 1), "price_increase": 0.1}},
        {"drift": {"start": date(2024, 1, 1), "new_channel": "web"}},
        {"drift": {"start": date(2024, 1, 1), "unknown": 1}},
        {"n_custmers": 10},
    ],
)
def test_invalid_params_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        GeneratorParams(**kwargs)


def test_write_crm_data_writes_tables_atomically(tmp_path, crm: SyntheticCRM) -> None:
    small = generate_crm_data(GeneratorParams(n_customers=200, seed=1))
    written = write_crm_data(small, tmp_path / "out")
    assert set(written) == {"events", "customers", "subscriptions"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "customers.parquet",
        "events.parquet",
        "subscriptions.parquet",
    ]
    for name, path in written.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), getattr(small, name))


def test_write_crm_data_includes_truth_only_when_asked(tmp_path) -> None:
    small = generate_crm_data(GeneratorParams(n_customers=100, seed=1))
    written = write_crm_data(small, tmp_path, include_truth=True)
    assert written["truth"] == tmp_path / "truth.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(written["truth"]), small.truth)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_customers=st.integers(1, 150),
    seed=st.integers(0, 2**32 - 1),
    start=st.dates(date(2020, 1, 1), date(2024, 1, 1)),
    length_days=st.integers(14, 500),
    activity_scale=st.floats(0.1, 3.0),
    drift_at=st.one_of(st.none(), st.floats(0.05, 1.0)),
)
def test_invariants_hold_for_any_params(
    n_customers: int,
    seed: int,
    start: date,
    length_days: int,
    activity_scale: float,
    drift_at: float | None,
) -> None:
    end = start + timedelta(days=length_days - 1)
    drift = None
    if drift_at is not None:
        drift_start = start + timedelta(days=max(1, int(drift_at * (length_days - 1))))
        drift = DriftSpec(start=drift_start, price_increase=0.2, new_channel="kiosk")
    params = GeneratorParams(
        n_customers=n_customers,
        seed=seed,
        start=start,
        end=end,
        activity_scale=activity_scale,
        drift=drift,
    )
    data = generate_crm_data(params)
    events = data.events
    assert tuple(events.columns) == EVENTS_COLUMNS
    assert events["timestamp"].is_monotonic_increasing
    assert events["timestamp"].min() >= pd.Timestamp(start)
    assert events["timestamp"].max() < _end_of_period(params)
    assert len(data.customers) == n_customers
    assert (events.loc[events["event_type"] == "purchase", "amount"] > 0).all()
    subs = data.subscriptions
    ended = subs["end_date"].notna()
    assert (subs.loc[ended, "end_date"] >= subs.loc[ended, "start_date"]).all()
    assert subs[~ended]["customer_id"].is_unique
    if drift is not None:
        on_new = events["channel"] == "kiosk"
        assert (events.loc[on_new, "timestamp"] >= pd.Timestamp(drift.start)).all()
