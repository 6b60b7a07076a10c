"""Churn, up-sell and win-back labels at a cutoff: what happened in the label window after it.

The label window is ``[cutoff + lead_days, cutoff + lead_days + horizon_days)``: the lead time
is the time a retention team needs to act, so what happens in it is neither feature nor label.
Labels read events at or after the cutoff only, with two deliberate exceptions that are
feature-time data (known at the cutoff, so no leakage): the up-sell spend comparison uses the
revenue in the same-length window just before the cutoff ``[cutoff - horizon_days, cutoff)``,
and the new-category rule uses the categories purchased before the cutoff.

Definitions (``LabelParams``), per customer of the ``population`` (the feature rows, with the
``is_active`` flag computed from the same ``LabelParams``: under ``churn_definition="activity"``
a qualifying event in the ``active_window_days`` before the cutoff, under ``"subscription"`` a
subscription active at the cutoff; see ``features.lifecycle``):

* ``churn_label`` (eligible: active customers)

  - ``churn_definition="activity"``: 1 when the customer has no qualifying event
    (``qualifying_event_types``) in the label window, else 0;
  - ``churn_definition="subscription"``: eligible are customers with a subscription active at
    the cutoff (started before it, not ended before it), i.e. the active ones; 1 when no
    subscription of theirs is active at the end of the label window (the last instant before
    it ends): the subscription ended in the lead time or the window and was not replaced. A plan
    change (one row ends, the next starts) is not churn.

* ``upsell_label`` (eligible: active customers): 1 when in the label window the customer buys
  a category never purchased before the cutoff, or its revenue in the window exceeds
  ``(1 + upsell_spend_growth)`` times its revenue in the window before the cutoff and is
  positive, or (with a subscriptions table) its MRR at the end of the window is higher than at
  the cutoff; else 0.
* ``winback_label`` (eligible: lapsed customers, i.e. in the population but not active; under
  subscription churn, those without an active subscription): 1 when the customer has a
  qualifying event in the label window, else 0.

Training on a shorter window (``LabelParams.training_horizon_days``): the snapshot flows pass
``LabelParams.for_training()``, whose ``horizon_days`` is the training window.

Labels are float64 1.0/0.0 and NaN where the customer is not eligible, and NaN for everyone
when the window has not matured: ``label_matured`` is ``window end <= data_end`` (the end of
the observed data), because an unfinished window would turn "not yet" into "no".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import LabelParams
from features.contract import DataContractError, EventType
from features.lifecycle import (
    NS_PER_DAY,
    _encode,
    _encode_optional,
    _require_columns,
    _timestamps_ns,
    as_cutoff,
    weighted_bincount,
)

__all__ = ["build_labels", "label_window"]

_INT64_MIN = np.iinfo(np.int64).min
_INT64_MAX = np.iinfo(np.int64).max
_BITMAP_MAX_CELLS = 400_000_000


def label_window(cutoff: object, params: LabelParams) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)`` of the label window of ``cutoff``."""
    cutoff = as_cutoff(cutoff)
    start = cutoff + pd.Timedelta(days=params.lead_days)
    return start, start + pd.Timedelta(days=params.horizon_days)


def _population_positions(population: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    _require_columns(population, "population", ("customer_id", "is_active"))
    ids = pd.Index(population["customer_id"].astype(str).to_numpy(), dtype=object)
    if not ids.is_unique:
        raise ValueError("population has duplicate customer_id values: one row per customer")
    is_active = population["is_active"]
    if is_active.isna().any():
        raise ValueError("population.is_active has missing values")
    return ids, is_active.to_numpy(dtype=bool)


def build_labels(
    events: pd.DataFrame,
    cutoff: object,
    *,
    population: pd.DataFrame,
    subscriptions: pd.DataFrame | None = None,
    params: LabelParams,
    data_end: object,
) -> pd.DataFrame:
    """Labels of each ``population`` customer at ``cutoff`` (definitions in the module docstring).

    ``population`` has ``customer_id`` and ``is_active`` (the phase-1 feature rows); the result
    is indexed by ``customer_id`` in the population's order, with ``churn_label``,
    ``upsell_label``, ``winback_label`` (float64) and ``label_matured`` (bool).
    """
    _require_columns(events, "events", ("customer_id", "timestamp", "event_type"))
    cutoff = as_cutoff(cutoff)
    data_end = pd.Timestamp(data_end)
    if data_end is pd.NaT:
        raise ValueError("data_end is missing (NaT)")
    if params.churn_definition == "subscription" and subscriptions is None:
        raise ValueError("churn_definition='subscription' needs a subscriptions table")
    ids, is_active = _population_positions(population)
    n = ids.size
    window_start, window_end = label_window(cutoff, params)
    matured = bool(window_end <= data_end)
    c, ws, we = cutoff.value, window_start.value, window_end.value

    codes, labels = _encode(events["customer_id"], "events.customer_id")
    position = ids.get_indexer(pd.Index(labels, dtype=object))[codes]
    ts = _timestamps_ns(events["timestamp"], "events.timestamp", allow_nat=False)
    type_codes, type_labels = _encode(events["event_type"], "events.event_type")
    qualifying_type = np.isin(type_labels, list(params.qualifying_event_types))[type_codes]
    purchase_type = (type_labels == EventType.PURCHASE.value)[type_codes]

    known = position >= 0
    in_window = known & (ts >= ws) & (ts < we)
    qualifying = np.bincount(position[in_window & qualifying_type], minlength=n)

    horizon_ns = params.horizon_days * NS_PER_DAY
    spend_window = np.zeros(n)
    spend_before = np.zeros(n)
    if "amount" in events.columns:
        amount = events["amount"].to_numpy(dtype=np.float64)
        priced = ~np.isnan(amount)
        rows = in_window & priced
        spend_window = weighted_bincount(position[rows], weights=amount[rows], minlength=n)
        rows = known & priced & (ts >= c - horizon_ns) & (ts < c)
        spend_before = weighted_bincount(position[rows], weights=amount[rows], minlength=n)
    spend_growth = (spend_window > (1.0 + params.upsell_spend_growth) * spend_before) & (
        spend_window > 0
    )
    new_category = _bought_new_category(events, position, ts, purchase_type, c, ws, we, n)
    upsell = spend_growth | new_category

    subscribed_at_cutoff = np.zeros(n, dtype=bool)
    subscribed_at_end = np.zeros(n, dtype=bool)
    if subscriptions is not None:
        state = _subscription_states(subscriptions, ids, c, we)
        upsell |= state.mrr_at_end > state.mrr_at_cutoff + 1e-9
        subscribed_at_cutoff = state.subscribed_at_cutoff
        subscribed_at_end = state.subscribed_at_end

    if params.churn_definition == "activity":
        churn_eligible = is_active
        churn = qualifying == 0
    else:
        churn_eligible = subscribed_at_cutoff
        churn = ~subscribed_at_end
    lapsed = ~is_active

    def label(value: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        if not matured:
            return np.full(n, np.nan)
        return np.where(eligible, value.astype(np.float64), np.nan)

    return pd.DataFrame(
        {
            "churn_label": label(churn, churn_eligible),
            "upsell_label": label(upsell, is_active),
            "winback_label": label(qualifying > 0, lapsed),
            "label_matured": np.full(n, matured),
        },
        index=pd.Index(ids, name="customer_id", dtype=object),
    )


def _bought_new_category(
    events: pd.DataFrame,
    position: np.ndarray,
    ts: np.ndarray,
    purchase_type: np.ndarray,
    c: int,
    ws: int,
    we: int,
    n: int,
) -> np.ndarray:
    """Customers with a purchase in the window of a category they never purchased before."""
    if "category" not in events.columns:
        return np.zeros(n, dtype=bool)
    category, category_labels = _encode_optional(events["category"])
    k = category_labels.size
    if category is None or k == 0:
        return np.zeros(n, dtype=bool)
    usable = purchase_type & (position >= 0) & (category >= 0)
    before = np.flatnonzero(usable & (ts < c))
    during = np.flatnonzero(usable & (ts >= ws) & (ts < we))
    before_keys = position[before].astype(np.int64) * k + category[before]
    during_keys = position[during].astype(np.int64) * k + category[during]
    if n * k <= _BITMAP_MAX_CELLS:
        seen = np.zeros(n * k, dtype=bool)
        seen[before_keys] = True
        fresh = ~seen[during_keys]
    else:
        fresh = ~np.isin(during_keys, before_keys)
    return np.bincount(position[during][fresh], minlength=n) > 0


class _SubscriptionState:
    def __init__(self, n: int) -> None:
        self.mrr_at_cutoff = np.zeros(n)
        self.mrr_at_end = np.zeros(n)
        self.subscribed_at_cutoff = np.zeros(n, dtype=bool)
        self.subscribed_at_end = np.zeros(n, dtype=bool)


def _subscription_states(
    subscriptions: pd.DataFrame, ids: pd.Index, c: int, we: int
) -> _SubscriptionState:
    """MRR and subscribed flags at the cutoff (point in time) and at the label window's end.

    At the cutoff a row counts when it started before the cutoff and has not ended before it
    (the same rule as the features). At the window end, the last instant ``end - 1ns``, a row
    counts when it started before the window end and ends at or after it (or never).
    """
    _require_columns(subscriptions, "subscriptions", ("customer_id", "start_date", "mrr"))
    codes, labels = _encode(subscriptions["customer_id"], "subscriptions.customer_id")
    position = ids.get_indexer(pd.Index(labels, dtype=object))[codes]
    start = _timestamps_ns(subscriptions["start_date"], "subscriptions.start_date", allow_nat=False)
    if "end_date" in subscriptions.columns:
        end = _timestamps_ns(subscriptions["end_date"], "subscriptions.end_date", allow_nat=True)
        end = np.where(end == _INT64_MIN, _INT64_MAX, end)
    else:
        end = np.full(start.size, _INT64_MAX)
    mrr = subscriptions["mrr"].to_numpy(dtype=np.float64)
    if np.isnan(mrr).any():
        raise DataContractError("subscriptions.mrr has missing values; validation quarantines them")
    n = ids.size
    state = _SubscriptionState(n)
    known = position >= 0
    at_cutoff = known & (start < c) & (end >= c)
    at_end = known & (start < we) & (end >= we)
    state.mrr_at_cutoff = weighted_bincount(
        position[at_cutoff], weights=mrr[at_cutoff], minlength=n
    )
    state.mrr_at_end = weighted_bincount(position[at_end], weights=mrr[at_end], minlength=n)
    state.subscribed_at_cutoff = np.bincount(position[at_cutoff], minlength=n) > 0
    state.subscribed_at_end = np.bincount(position[at_end], minlength=n) > 0
    return state
