"""Point-in-time correctness as properties: the future never reaches features, the past never
reaches churn / win-back labels, and nothing after the label window reaches any label."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import FeatureParams, LabelParams
from features.contract import EVENT_TYPES
from features.labels import build_labels, label_window
from features.lifecycle import compute_customer_features
from features.snapshots import build_features
from features.synthetic import GeneratorParams, generate_crm_data

CUTOFF = pd.Timestamp("2024-07-01")
DAY_S = 86_400
FEATURE_PARAMS = FeatureParams(clv_fit_sample=800)
LABEL_PARAMS = LabelParams(horizon_days=30, lead_days=7)
WINDOW_START, WINDOW_END = label_window(CUTOFF, LABEL_PARAMS)
DATA_END = pd.Timestamp("2025-01-01")
CUSTOMERS = tuple(f"c{i}" for i in range(6))
# offsets (s) from the cutoff that sit on window edges, so the edges get exercised
EDGES = tuple(-d * DAY_S + e for d in (30, 90, 180, 365) for e in (-1, 0, 1))

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def event_rows(min_offset_s: int, max_offset_s: int, max_size: int = 25):
    """Lists of (customer, offset seconds from the cutoff, type, amount, category, channel)."""
    inside_edges = [e for e in EDGES + (0, -1) if min_offset_s <= e <= max_offset_s]
    offsets = st.integers(min_offset_s, max_offset_s)
    if inside_edges:
        offsets = st.one_of(offsets, st.sampled_from(inside_edges))
    row = st.tuples(
        st.sampled_from(CUSTOMERS + ("future_only",) if min_offset_s >= 0 else CUSTOMERS),
        offsets,
        st.sampled_from(EVENT_TYPES + ("custom_event",)),
        st.floats(0, 500, allow_nan=False).map(lambda v: round(v, 2)),
        st.sampled_from(["a", "b", "c", None]),
        st.sampled_from(["web", "app", None]),
    )
    return st.lists(row, max_size=max_size)


def to_frame(rows: list[tuple], shuffle_seed: int | None = None) -> pd.DataFrame:
    rows = list(rows)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    frame = pd.DataFrame(
        rows, columns=["customer_id", "offset", "event_type", "amount", "category", "channel"]
    )
    frame["timestamp"] = CUTOFF + pd.to_timedelta(frame["offset"].astype("int64"), unit="s")
    is_purchase = frame["event_type"] == "purchase"
    frame["amount"] = frame["amount"].astype(float).where(is_purchase)
    frame["category"] = frame["category"].where(is_purchase)
    for column in ("customer_id", "event_type", "category", "channel"):
        frame[column] = frame[column].astype("category")
    return frame[["customer_id", "timestamp", "event_type", "amount", "category", "channel"]]


def interleave(past: list[tuple], later: list[tuple], seed: int) -> list[tuple]:
    """Insert ``later`` rows at random places, keeping the order of ``past``."""
    rng = random.Random(seed)
    out = list(past)
    for row in later:
        out.insert(rng.randint(0, len(out)), row)
    return out


def customers_table(past: list[tuple], later: list[tuple]) -> pd.DataFrame:
    """Signups known before the cutoff for customers with history, after it for the others."""
    seen = {row[0] for row in past}
    ids = sorted(seen | {row[0] for row in later})
    signup = [
        CUTOFF - pd.Timedelta(days=600) if c in seen else CUTOFF + pd.Timedelta(days=3) for c in ids
    ]
    return pd.DataFrame({"customer_id": ids, "signup_date": signup, "country": "DE"})


def subscriptions_table(known: list[tuple], future_end_days: list[int]) -> pd.DataFrame:
    """Rows started before the cutoff, with the given future end dates (-1 = open)."""
    rows = []
    for (customer, start_day, mrr), end_day in zip(known, future_end_days, strict=False):
        end = pd.NaT if end_day < 0 else CUTOFF + pd.Timedelta(days=end_day)
        rows.append((customer, "basic", CUTOFF - pd.Timedelta(days=start_day), end, mrr))
    frame = pd.DataFrame(rows, columns=["customer_id", "plan", "start_date", "end_date", "mrr"])
    return frame.astype(
        {"start_date": "datetime64[ns]", "end_date": "datetime64[ns]", "mrr": "float64"}
    )


@pytest.fixture(scope="module")
def fixed_stats():
    """Global stats fitted once on other data: phase 3 is then a function of phase 1 only."""
    data = generate_crm_data(GeneratorParams(n_customers=800, seed=11))
    _, stats = build_features(data.events, pd.Timestamp("2024-07-01"), params=FEATURE_PARAMS)
    return stats


PAST = event_rows(-500 * DAY_S, -1)
FUTURE = event_rows(0, 300 * DAY_S)


@SETTINGS
@given(past=PAST, future_a=FUTURE, future_b=FUTURE, seed=st.integers(0, 10**6))
def test_phase_one_ignores_events_at_or_after_the_cutoff(past, future_a, future_b, seed):
    if not past:
        return
    a = compute_customer_features(
        to_frame(interleave(past, future_a, seed)), CUTOFF, params=FEATURE_PARAMS
    )
    b = compute_customer_features(to_frame(past + future_b), CUTOFF, params=FEATURE_PARAMS)
    pd.testing.assert_frame_equal(a, b)


@SETTINGS
@given(
    past=PAST,
    future_a=FUTURE,
    future_b=FUTURE,
    subscriptions=st.lists(
        st.tuples(st.sampled_from(CUSTOMERS), st.integers(1, 400), st.sampled_from([10.0, 30.0])),
        max_size=5,
    ),
    ends_a=st.lists(st.one_of(st.just(-1), st.integers(0, 200)), min_size=5, max_size=5),
    ends_b=st.lists(st.one_of(st.just(-1), st.integers(0, 200)), min_size=5, max_size=5),
    new_subscriber=st.booleans(),
)
def test_full_features_ignore_the_future(
    fixed_stats, past, future_a, future_b, subscriptions, ends_a, ends_b, new_subscriber
):
    if not past:
        return
    subs_a = subscriptions_table(subscriptions, ends_a)
    subs_b = subscriptions_table(subscriptions, ends_b)
    if new_subscriber:  # a subscription that starts at the cutoff exists only in one version
        late = subscriptions_table([("c0", 0, 99.0)], [-1])
        subs_b = pd.concat([subs_b, late], ignore_index=True) if len(subs_b) else late
    a, _ = build_features(
        to_frame(past + future_a),
        CUTOFF,
        customers=customers_table(past, future_a),
        subscriptions=subs_a,
        params=FEATURE_PARAMS,
        stats=fixed_stats,
    )
    b, _ = build_features(
        to_frame(past + future_b),
        CUTOFF,
        customers=customers_table(past, future_b),
        subscriptions=subs_b,
        params=FEATURE_PARAMS,
        stats=fixed_stats,
    )
    pd.testing.assert_frame_equal(a, b)


def _population(rows: list[tuple], active: list[bool]) -> pd.DataFrame:
    ids = sorted({r[0] for r in rows} | set(CUSTOMERS[:3]))
    flags = [active[i % len(active)] for i in range(len(ids))]
    return pd.DataFrame({"customer_id": ids, "is_active": flags})


@SETTINGS
@given(
    past_a=PAST,
    past_b=PAST,
    future=FUTURE,
    active=st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_churn_and_winback_labels_ignore_the_past(past_a, past_b, future, active):
    population = _population(future, active)
    kwargs = {"population": population, "params": LABEL_PARAMS, "data_end": DATA_END}
    a = build_labels(to_frame(past_a + future), CUTOFF, **kwargs)
    b = build_labels(to_frame(past_b + future), CUTOFF, **kwargs)
    pd.testing.assert_frame_equal(
        a[["churn_label", "winback_label", "label_matured"]],
        b[["churn_label", "winback_label", "label_matured"]],
    )


WINDOW_END_S = int((WINDOW_END - CUTOFF).total_seconds())


@SETTINGS
@given(
    before_end=event_rows(-400 * DAY_S, WINDOW_END_S - 1, max_size=40),
    after_a=event_rows(WINDOW_END_S, WINDOW_END_S + 200 * DAY_S),
    after_b=event_rows(WINDOW_END_S, WINDOW_END_S + 200 * DAY_S),
    active=st.lists(st.booleans(), min_size=1, max_size=6),
    seed=st.integers(0, 10**6),
)
def test_labels_ignore_events_after_the_label_window(before_end, after_a, after_b, active, seed):
    population = _population(before_end, active)
    kwargs = {"population": population, "params": LABEL_PARAMS, "data_end": DATA_END}
    a = build_labels(to_frame(interleave(before_end, after_a, seed)), CUTOFF, **kwargs)
    b = build_labels(to_frame(before_end + after_b), CUTOFF, **kwargs)
    pd.testing.assert_frame_equal(a, b)


def test_features_do_change_when_the_past_changes():
    """The properties above are not vacuous: the same comparison sees a change in the past."""
    rows = [("c0", -5 * DAY_S, "purchase", 10.0, "a", "web")]
    a = compute_customer_features(to_frame(rows), CUTOFF, params=FEATURE_PARAMS)
    moved = [("c0", -6 * DAY_S, "purchase", 10.0, "a", "web")]
    b = compute_customer_features(to_frame(moved), CUTOFF, params=FEATURE_PARAMS)
    assert not np.isclose(a["recency_days"].iloc[0], b["recency_days"].iloc[0])


def test_labels_do_change_when_the_window_changes():
    population = pd.DataFrame({"customer_id": ["c0"], "is_active": [True]})
    kwargs = {"population": population, "params": LABEL_PARAMS, "data_end": DATA_END}
    inside = int((WINDOW_START - CUTOFF).total_seconds()) + DAY_S
    a = build_labels(to_frame([("c0", inside, "visit", 0.0, None, None)]), CUTOFF, **kwargs)
    b = build_labels(to_frame([("c0", inside, "complaint", 0.0, None, None)]), CUTOFF, **kwargs)
    assert a.loc["c0", "churn_label"] == 0.0 and b.loc["c0", "churn_label"] == 1.0
