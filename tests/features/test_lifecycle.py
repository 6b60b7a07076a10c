"""Phase-1 lifecycle features: hand-computed values, a brute-force oracle, partition safety."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features import arrays, lifecycle
from features.config import FeatureParams, LabelParams
from features.contract import EVENT_TYPES, DataContractError
from features.lifecycle import compute_customer_features, core_aggregations

CUTOFF = pd.Timestamp("2024-07-01")
PARAMS = FeatureParams()


def _events(rows: list[tuple]) -> pd.DataFrame:
    """Canonical events from (customer, timestamp, type, amount, category, channel) tuples."""
    frame = pd.DataFrame(
        rows, columns=["customer_id", "timestamp", "event_type", "amount", "category", "channel"]
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["amount"] = frame["amount"].astype(float)
    for column in ("customer_id", "event_type", "category", "channel"):
        frame[column] = frame[column].astype("category")
    return frame


@pytest.fixture
def three_customers() -> dict[str, pd.DataFrame]:
    """A: a buyer with tickets; B: a subscriber with one old visit; C: a fresh signup; D: future."""
    events = _events(
        [
            ("A", "2024-03-01 10:00", "purchase", 100.0, "x", "web"),
            ("A", "2024-05-01 12:00", "purchase", 50.0, "y", "app"),
            ("A", "2024-06-20 08:00", "purchase", 30.0, "x", "app"),
            ("A", "2024-06-25 00:00", "visit", None, None, "web"),
            ("A", "2024-06-30 12:00", "visit", None, None, "web"),
            ("A", "2024-04-01 09:00", "support_ticket", None, None, None),
            ("A", "2024-06-01 00:00", "support_ticket", None, None, None),
            ("A", "2024-04-05 09:00", "ticket_resolved", None, None, None),
            ("A", "2024-07-01 00:00", "purchase", 999.0, "z", "store"),  # at the cutoff
            ("B", "2023-01-10 00:00", "visit", None, None, "web"),
            ("D", "2024-07-05 00:00", "purchase", 20.0, "x", "web"),  # after the cutoff
        ]
    )
    customers = pd.DataFrame(
        {
            "customer_id": ["A", "B", "C", "D"],
            "signup_date": pd.to_datetime(["2024-01-01", None, "2024-06-01", "2024-08-01"]),
            "country": ["DE", "FR", None, "US"],
            "customer_type": ["B2C", "B2B", "B2C", "B2C"],
        }
    )
    subscriptions = pd.DataFrame(
        {
            "customer_id": ["B", "B"],
            "plan": ["basic", "pro"],
            "start_date": pd.to_datetime(["2023-02-15", "2024-05-15"]),
            # the pro row ends after the cutoff: unknown at the cutoff, so it counts as active
            "end_date": pd.to_datetime(["2024-05-15", "2024-08-31"]),
            "mrr": [10.0, 30.0],
        }
    )
    return {"events": events, "customers": customers, "subscriptions": subscriptions}


@pytest.fixture
def three_features(three_customers) -> pd.DataFrame:
    return compute_customer_features(
        three_customers["events"],
        CUTOFF,
        customers=three_customers["customers"],
        subscriptions=three_customers["subscriptions"],
        params=PARAMS,
    )


def test_rows_are_customers_with_history_before_the_cutoff(three_features):
    assert list(three_features.index) == ["A", "B", "C"]
    assert three_features.index.name == "customer_id"
    assert (three_features["cutoff"] == CUTOFF).all()


def test_recency_and_tenure_by_hand(three_features):
    a = three_features.loc["A"]
    assert a["tenure_days"] == 182  # 2024-01-01 -> 2024-07-01 (leap year)
    assert a["recency_days"] == pytest.approx(0.5)
    assert a["recency_purchase_days"] == pytest.approx(10 + 16 / 24)
    assert a["days_since_last_support_ticket"] == 30
    assert math.isnan(a["days_since_last_complaint"])


def test_window_counts_and_spend_by_hand(three_features):
    a = three_features.loc["A"]
    # 30 days = [2024-06-01, 2024-07-01): purchase 06-20, visits 06-25/06-30, ticket 06-01 00:00
    assert (a["events_30d"], a["purchases_30d"], a["visits_30d"], a["spend_30d"]) == (4, 1, 2, 30.0)
    # 90 days = [2024-04-02, ...): the 04-01 ticket and the 03-01 purchase are out
    assert (a["events_90d"], a["purchases_90d"], a["spend_90d"]) == (6, 2, 80.0)
    assert (a["events_total"], a["purchases_total"], a["spend_total"]) == (8, 3, 180.0)
    assert a["avg_order_value"] == 60.0


def test_interpurchase_rhythm_by_hand(three_features):
    a = three_features.loc["A"]
    # purchase days 03-01, 05-01, 06-20: gaps 61 and 50 days
    assert a["interpurchase_mean_days"] == 55.5
    assert a["interpurchase_std_days"] == 5.5
    assert a["recency_vs_rhythm"] == pytest.approx((10 + 16 / 24) / 55.5)
    assert a["clv_frequency"] == 2
    assert a["clv_recency_weeks"] == pytest.approx(111 / 7)
    assert a["clv_T_weeks"] == pytest.approx(122 / 7)
    assert a["clv_monetary"] == 40.0  # (50 + 30) / 2 repeat purchase days


def test_trends_tickets_breadth_by_hand(three_features):
    a = three_features.loc["A"]
    # latest 90 days: 6 events, 80 spend; the 90 days before: 2 events, 100 spend
    assert a["activity_trend"] == pytest.approx(math.log(7 / 3))
    assert a["spend_trend"] == pytest.approx(math.log(81 / 101))
    assert a["unresolved_tickets"] == 1
    assert a["support_tickets_90d"] == 1
    assert (a["categories_total"], a["categories_90d"], a["new_categories_90d"]) == (2, 2, 1)
    assert a["last_purchase_channel"] == "app"
    assert a["active_days_90d"] == 6
    assert a["active_weeks_180d"] == 6  # ISO weeks 9, 14, 18, 22, 25, 26 of 2024
    assert a["share_purchase_365d"] == pytest.approx(3 / 8)
    assert bool(a["is_active"])


def test_subscription_with_future_end_date_is_active_at_the_cutoff(three_features):
    b = three_features.loc["B"]
    assert b["has_subscription"] == 1
    assert b["plan"] == "pro"
    assert b["mrr"] == 30.0
    assert b["mrr_change_90d"] == 20.0  # basic (10) was active on 2024-04-02
    assert b["plan_changes_365d"] == 1
    assert b["days_to_renewal"] == 14  # monthly anniversary of 2024-05-15 after 07-01: 07-15
    assert b["subscription_tenure_days"] == (CUTOFF - pd.Timestamp("2023-02-15")).days
    assert b["value_365d"] == 360.0  # no spend, 12 x 30 MRR
    assert b["tenure_days"] == (CUTOFF - pd.Timestamp("2023-01-10")).days
    assert not bool(b["is_active"])
    assert b["customer_type"] == "B2B"


def test_subscription_that_ended_before_the_cutoff_is_not_active(three_customers):
    subscriptions = three_customers["subscriptions"].copy()
    subscriptions.loc[1, "end_date"] = pd.Timestamp("2024-06-30")
    features = compute_customer_features(
        three_customers["events"], CUTOFF, subscriptions=subscriptions, params=PARAMS
    )
    b = features.loc["B"]
    assert (b["has_subscription"], b["mrr"]) == (0, 0.0)
    assert pd.isna(b["plan"]) and math.isnan(b["days_to_renewal"])


def test_signup_only_customer_has_a_row_without_activity(three_features):
    c = three_features.loc["C"]
    assert c["tenure_days"] == 30
    assert c["events_total"] == 0 and c["purchases_total"] == 0
    assert math.isnan(c["recency_days"]) and math.isnan(c["clv_frequency"])
    assert not bool(c["is_active"])
    assert pd.isna(c["country"])


def test_renewal_day_is_clipped_to_the_month_length():
    start = pd.to_datetime(["2024-01-31 10:00", "2024-03-15 00:00", "2023-06-30 00:00"]).to_numpy()
    cutoff = pd.Timestamp("2024-02-20").value
    renewal = lifecycle._next_monthly_anniversary(start.view(np.int64), cutoff)
    expected = pd.to_datetime(["2024-02-29 10:00", "2024-03-15 00:00", "2024-02-29 00:00"])
    assert list(renewal.view("datetime64[ns]")) == list(expected.to_numpy())


def test_is_active_follows_the_label_definition(three_customers):
    only_purchases = LabelParams(qualifying_event_types=("purchase",), active_window_days=7)
    features = compute_customer_features(
        three_customers["events"], CUTOFF, params=PARAMS, label_params=only_purchases
    )
    assert not bool(features.loc["A", "is_active"])  # last purchase 10.7 days ago
    visits = LabelParams(qualifying_event_types=("visit",), active_window_days=7)
    features = compute_customer_features(
        three_customers["events"], CUTOFF, params=PARAMS, label_params=visits
    )
    assert bool(features.loc["A", "is_active"])


# --------------------------------------------------------------------------------------------
# brute-force oracle on random data
# --------------------------------------------------------------------------------------------


def random_events(seed: int, n_customers: int = 40, n_events: int = 1500) -> pd.DataFrame:
    """Random canonical events around ``CUTOFF`` (some after it), unsorted."""
    rng = np.random.default_rng(seed)
    customer = rng.integers(0, n_customers, n_events)
    offset_s = rng.integers(-700 * 86_400, 60 * 86_400, n_events)
    offset_s[: n_events // 10] = rng.integers(-3, 3, n_events // 10) * 86_400  # day edges
    event_type = rng.choice(list(EVENT_TYPES) + ["custom_event"], n_events)
    is_purchase = event_type == "purchase"
    category = np.where(is_purchase, rng.choice(["a", "b", "c", "d", None], n_events), None)
    frame = pd.DataFrame(
        {
            "customer_id": pd.Categorical([f"cust{c:03d}" for c in customer]),
            "timestamp": CUTOFF + pd.to_timedelta(offset_s, unit="s"),
            "event_type": pd.Categorical(event_type),
            "amount": np.where(is_purchase, rng.gamma(2.0, 20.0, n_events).round(2), np.nan),
            "quantity": np.where(is_purchase, 1.0, np.nan),
            "category": pd.Categorical(category),
            "channel": pd.Categorical(rng.choice(["web", "app", "store"], n_events)),
        }
    )
    return frame


def reference_features(events: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Straightforward per-customer pandas loops: slow, obviously right."""
    past = events[events["timestamp"] < cutoff]
    rows = {}
    day = pd.Timedelta(days=1)
    for customer, ev in past.groupby("customer_id", observed=True):
        r: dict[str, object] = {}
        age = (cutoff - ev["timestamp"]) / day
        purchases = ev[ev["event_type"] == "purchase"]
        r["recency_days"] = age.min()
        for t in EVENT_TYPES:
            sub = age[ev["event_type"] == t]
            r[f"days_since_last_{t}"] = sub.min() if len(sub) else np.nan
        for w in (30, 90, 180, 365):
            inside = ev[age <= w]
            r[f"events_{w}d"] = len(inside)
            r[f"purchases_{w}d"] = int((inside["event_type"] == "purchase").sum())
            r[f"visits_{w}d"] = int((inside["event_type"] == "visit").sum())
            r[f"spend_{w}d"] = inside["amount"].sum()
        r["events_total"] = len(ev)
        r["purchases_total"] = len(purchases)
        r["spend_total"] = ev["amount"].sum()
        days = np.sort(purchases["timestamp"].dt.normalize().unique())
        gaps = np.diff(days) / day
        r["purchase_days_total"] = len(days)
        r["interpurchase_mean_days"] = gaps.mean() if len(gaps) else np.nan
        r["interpurchase_std_days"] = gaps.std() if len(gaps) >= 2 else np.nan
        recent = ev[age <= 90]
        before = ev[(age > 90) & (age <= 180)]
        r["activity_trend"] = math.log((1 + len(recent)) / (1 + len(before)))
        r["spend_trend"] = math.log((1 + recent["amount"].sum()) / (1 + before["amount"].sum()))
        r["active_days_90d"] = recent["timestamp"].dt.normalize().nunique()
        in180 = ev[age <= 180]["timestamp"]
        r["active_weeks_180d"] = in180.dt.isocalendar()[["year", "week"]].drop_duplicates().shape[0]
        tickets = (ev["event_type"] == "support_ticket").sum()
        resolved = (ev["event_type"] == "ticket_resolved").sum()
        r["unresolved_tickets"] = max(int(tickets - resolved), 0)
        r["complaints_365d"] = int(((ev["event_type"] == "complaint") & (age <= 365)).sum())
        r["campaign_clicks_180d"] = int(
            ((ev["event_type"] == "campaign_click") & (age <= 180)).sum()
        )
        cats = purchases.dropna(subset=["category"])
        cat_age = (cutoff - cats["timestamp"]) / day
        r["categories_total"] = cats["category"].nunique()
        r["categories_90d"] = cats.loc[cat_age <= 90, "category"].nunique()
        old = set(cats.loc[cat_age > 90, "category"])
        r["new_categories_90d"] = len(set(cats.loc[cat_age <= 90, "category"]) - old)
        if len(purchases):
            latest = purchases[purchases["timestamp"] == purchases["timestamp"].max()]
            r["last_purchase_channel"] = max(latest["channel"].astype(str))
            first_day = days[0]
            repeat = purchases[purchases["timestamp"].dt.normalize() > first_day]
            x = len(days) - 1
            r["clv_frequency"] = x
            r["clv_recency_weeks"] = (days[-1] - days[0]) / day / 7
            r["clv_T_weeks"] = (cutoff - first_day) / day / 7
            r["clv_monetary"] = repeat["amount"].sum() / x if x else 0.0
        else:
            r["last_purchase_channel"] = None
            for name in ("clv_frequency", "clv_recency_weeks", "clv_T_weeks", "clv_monetary"):
                r[name] = np.nan
        qualifying = ev[ev["event_type"].isin(["purchase", "visit"]) & (age <= 90)]
        r["is_active"] = len(qualifying) > 0
        rows[str(customer)] = r
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_reference(seed):
    events = random_events(seed)
    ours = compute_customer_features(events, CUTOFF, params=PARAMS)
    expected = reference_features(events, CUTOFF)
    assert list(ours.index) == list(expected.index)
    for column in expected.columns:
        got, want = ours[column], expected[column]
        if column == "last_purchase_channel":
            assert got.tolist() == want.tolist(), column
        else:
            np.testing.assert_allclose(
                got.to_numpy(dtype=float), want.to_numpy(dtype=float), rtol=1e-9, err_msg=column
            )


def test_sorted_key_path_equals_bitmap_path(monkeypatch):
    events = random_events(3)
    bitmap = compute_customer_features(events, CUTOFF, params=PARAMS)
    monkeypatch.setattr(arrays, "_BITMAP_MAX_CELLS", 0)
    keys = compute_customer_features(events, CUTOFF, params=PARAMS)
    pd.testing.assert_frame_equal(bitmap, keys)


def test_object_customer_ids_give_the_same_features():
    events = random_events(4)
    as_objects = events.assign(
        customer_id=events["customer_id"].astype(str), event_type=events["event_type"].astype(str)
    )
    pd.testing.assert_frame_equal(
        compute_customer_features(events, CUTOFF, params=PARAMS),
        compute_customer_features(as_objects, CUTOFF, params=PARAMS),
    )


def test_unused_categories_do_not_matter():
    events = random_events(5)
    extra = [f"zz{i:05d}" for i in range(5000)]
    padded = events.assign(
        customer_id=events["customer_id"]
        .cat.add_categories(extra)
        .cat.reorder_categories(extra + list(events["customer_id"].cat.categories))
    )
    pd.testing.assert_frame_equal(
        compute_customer_features(events, CUTOFF, params=PARAMS),
        compute_customer_features(padded, CUTOFF, params=PARAMS),
    )


def test_phase_one_is_partition_invariant(three_customers):
    events = random_events(6, n_customers=60)
    ids = sorted(events["customer_id"].astype(str).unique())
    customers = pd.DataFrame(
        {
            "customer_id": ids + ["late_signup", "only_signup"],
            "signup_date": pd.to_datetime(["2023-01-01"] * len(ids) + ["2025-01-01", "2024-05-01"]),
            "country": ["DE", "FR"] * (len(ids) // 2) + ["DE"] * (len(ids) % 2) + ["US", "GB"],
        }
    )
    subscriptions = pd.DataFrame(
        {
            "customer_id": [ids[0], ids[0], ids[-1], "sub_only"],
            "plan": ["basic", "pro", "plus", "basic"],
            "start_date": pd.to_datetime(["2023-03-01", "2024-02-01", "2024-06-01", "2024-01-01"]),
            "end_date": pd.to_datetime(["2024-02-01", None, "2024-09-01", None]),
            "mrr": [10.0, 30.0, 20.0, 10.0],
        }
    )
    kwargs = {"customers": customers, "subscriptions": subscriptions, "params": PARAMS}
    whole = compute_customer_features(events, CUTOFF, **kwargs)
    all_ids = sorted(set(ids) | {"late_signup", "only_signup", "sub_only"})
    parts = []
    for half in (set(all_ids[::2]), set(all_ids[1::2])):

        def keep(frame: pd.DataFrame, half: set = half) -> pd.DataFrame:
            return frame[frame["customer_id"].astype(str).isin(half)]

        parts.append(
            compute_customer_features(
                keep(events),
                CUTOFF,
                customers=keep(customers),
                subscriptions=keep(subscriptions),
                params=PARAMS,
            )
        )
    pd.testing.assert_frame_equal(pd.concat(parts).sort_index(), whole)
    assert "sub_only" in whole.index and "only_signup" in whole.index
    assert "late_signup" not in whole.index


# --------------------------------------------------------------------------------------------
# core aggregations and input errors
# --------------------------------------------------------------------------------------------


def test_core_aggregations_match_the_reference():
    events = random_events(7)
    core = core_aggregations(events, CUTOFF, (30, 90, 180, 365))
    expected = reference_features(events, CUTOFF)
    assert list(core.index) == list(expected.index)
    for w in (30, 90, 180, 365):
        np.testing.assert_array_equal(core[f"events_{w}d"], expected[f"events_{w}d"])
        np.testing.assert_allclose(core[f"spend_{w}d"], expected[f"spend_{w}d"], rtol=1e-12)
    past = events[events["timestamp"] < CUTOFF].groupby("customer_id", observed=True)
    last = past["timestamp"].max()
    last.index = last.index.astype(str)
    assert (core["last_event"] == last.loc[core.index]).all()
    first = past["timestamp"].min()
    first.index = first.index.astype(str)
    assert (core["first_event"] == first.loc[core.index]).all()


def test_core_aggregations_agree_with_duckdb():
    duckdb = pytest.importorskip("duckdb")
    events = random_events(8)
    core = core_aggregations(events, CUTOFF, (30, 365))
    con = duckdb.connect()
    con.register("events", events[["customer_id", "timestamp", "amount"]])
    sql = """
        SELECT customer_id::VARCHAR AS customer_id,
               count(*) FILTER (WHERE timestamp >= TIMESTAMP '2024-07-01' - INTERVAL 30 DAY) AS e30,
               coalesce(sum(amount) FILTER (
                   WHERE timestamp >= TIMESTAMP '2024-07-01' - INTERVAL 365 DAY), 0) AS s365
        FROM events WHERE timestamp < TIMESTAMP '2024-07-01' GROUP BY 1 ORDER BY 1
    """
    duck = con.execute(sql).df().set_index("customer_id")
    np.testing.assert_array_equal(core["events_30d"], duck["e30"])
    np.testing.assert_allclose(core["spend_365d"], duck["s365"], rtol=1e-12)


def test_missing_timestamps_are_an_error():
    events = random_events(9)
    events.loc[3, "timestamp"] = pd.NaT
    with pytest.raises(DataContractError, match="missing"):
        compute_customer_features(events, CUTOFF, params=PARAMS)


def test_cutoff_must_be_a_naive_midnight():
    events = random_events(10)
    with pytest.raises(ValueError, match="midnight"):
        compute_customer_features(events, CUTOFF + pd.Timedelta(hours=3), params=PARAMS)
    with pytest.raises(ValueError, match="naive"):
        compute_customer_features(events, CUTOFF.tz_localize("UTC"), params=PARAMS)


def test_missing_required_column_is_an_error():
    with pytest.raises(DataContractError, match="event_type"):
        compute_customer_features(
            random_events(11).drop(columns="event_type"), CUTOFF, params=PARAMS
        )


def test_duplicate_customer_rows_are_an_error(three_customers):
    customers = pd.concat([three_customers["customers"]] * 2, ignore_index=True)
    with pytest.raises(DataContractError, match="duplicate"):
        compute_customer_features(
            three_customers["events"], CUTOFF, customers=customers, params=PARAMS
        )


def test_input_frames_are_not_mutated(three_customers):
    before = {k: v.copy() for k, v in three_customers.items()}
    compute_customer_features(
        three_customers["events"],
        CUTOFF,
        customers=three_customers["customers"],
        subscriptions=three_customers["subscriptions"],
        params=PARAMS,
    )
    for name, frame in before.items():
        pd.testing.assert_frame_equal(three_customers[name], frame)


def test_numeric_customer_ids_become_strings():
    events = random_events(12)
    numeric = events.assign(
        customer_id=events["customer_id"].astype(str).str[4:].astype(int)  # cust007 -> 7
    )
    features = compute_customer_features(numeric, CUTOFF, params=PARAMS)
    assert all(isinstance(i, str) for i in features.index)
    assert set(features.index) == {
        str(int(c[4:])) for c in compute_customer_features(events, CUTOFF, params=PARAMS).index
    }


def test_missing_customer_id_in_a_string_column_is_an_error():
    events = random_events(13)
    events["customer_id"] = events["customer_id"].astype(object)
    events.loc[5, "customer_id"] = None
    with pytest.raises(DataContractError, match="customer_id has 1 missing"):
        compute_customer_features(events, CUTOFF, params=PARAMS)


def test_no_events_before_the_cutoff_leaves_only_signups(three_customers):
    late = three_customers["events"]
    late = late[late["timestamp"] >= CUTOFF]
    features = compute_customer_features(
        late, CUTOFF, customers=three_customers["customers"], params=PARAMS
    )
    assert list(features.index) == ["A", "C"]  # signed up before the cutoff; B has no date
    assert (features["events_total"] == 0).all()
    assert features["recency_days"].isna().all()
