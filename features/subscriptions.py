"""Point-in-time subscription features: the state of a customer's subscriptions at a cutoff.

Called by :func:`features.lifecycle.compute_customer_features` with the subscriptions table of
the contract (``features.contract``). Like the rest of phase 1 it is a pure function of each
customer's own rows (partition-safe) and reads only what is known at the cutoff:

* a row exists at the cutoff when ``start_date < cutoff``;
* ``end_date`` (canonical alias ``cancelled_at``) is when the subscription actually ended or was
  cancelled. It is only known once it happens, so an end at or after the cutoff is unknown at the
  cutoff: the row counts as active, as if ``end_date`` were NaT;
* the *scheduled* term is known when the row starts, so it is used as is: ``bill_period_months``
  (the plan renews every N months from ``start_date``) and/or ``term_end`` (alias
  ``renewal_date``: the end of the committed term). Both describe the renewal calendar, never
  whether the customer will renew.

Features (the "current row" is the active row that started last; ties: higher mrr, then later
in the table):

=============================  ==============================================================
``has_subscription``           1 when a row is active at the cutoff, else 0
``plan``                       plan of the current row (NaN without one)
``mrr``                        sum of mrr over the active rows (0 without)
``mrr_change_90d``             mrr now minus mrr 90 days before the cutoff (end dates known at
                               the cutoff)
``plan_changes_365d``          rows started in the last 365 days after the customer's first
                               subscription: upgrades, downgrades, restarts
``days_to_renewal``            days from the cutoff to the current row's next renewal: its
                               ``term_end`` when that is at or after the cutoff; otherwise the
                               next anniversary every ``bill_period_months`` months of
                               ``start_date`` (of ``term_end`` when that has passed and the row
                               is still active: it renewed); monthly when neither is known (the
                               billing cycle MRR implies). Day of month clipped to the month
                               length. NaN without an active row
``renewal_in_horizon``         1 when that renewal falls before the end of the label window,
                               i.e. within ``lead_days + horizon_days`` of the cutoff (the
                               horizon the model is trained on:
                               ``LabelParams.model_horizon_days``), else 0 (also 0 without an
                               active row)
``bill_period_months``         billing period of the current row: the column when given, else
                               whole months from ``start_date`` to ``term_end``, else 1; NaN
                               without an active row
``plan_price``                 amount due at the current row's renewal: its ``price`` column
                               when given, else its mrr x ``bill_period_months``
``subscription_tenure_days``   cutoff minus the first subscription start (NaN if never)
=============================  ==============================================================

Only when the table has the column (so data sets without them keep their feature set):
``seats`` (current row's seats; map ``quantity``/``units`` onto ``seats`` with the column
mapping), ``mrr_per_seat`` (current row's mrr / seats, NaN without seats) and ``discount``
(current row's discount, passed through as the export gives it: see ``features.contract``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.arrays import _INT64_MAX, _INT64_MIN, NS_PER_DAY, weighted_bincount
from features.config import LabelParams
from features.contract import DataContractError

__all__ = ["next_renewal", "subscription_features"]

_PLAN_CHANGE_WINDOW_DAYS = 365
_MRR_CHANGE_WINDOW_DAYS = 90
#: Average month length, to read a term (term_end - start_date) as whole months.
_DAYS_PER_MONTH = 365.25 / 12


def _ns(subscriptions: pd.DataFrame, column: str, *, allow_nat: bool) -> np.ndarray:
    """int64 nanoseconds of a canonical (naive datetime64) column; all NaT when absent."""
    if column not in subscriptions.columns:
        return np.full(len(subscriptions), _INT64_MIN)
    values = subscriptions[column]
    name = f"subscriptions.{column}"
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        raise DataContractError(
            f"{name} is time-zone aware ({values.dtype}); canonical timestamps are naive UTC "
            "(run features.validation first)"
        )
    if not pd.api.types.is_datetime64_dtype(values.dtype):
        raise DataContractError(
            f"{name} must be datetime64, got {values.dtype} (run features.validation first)"
        )
    ns = values.to_numpy(dtype="datetime64[ns]").view(np.int64)
    if not allow_nat and (ns == _INT64_MIN).any():
        missing = int(np.count_nonzero(ns == _INT64_MIN))
        raise DataContractError(
            f"{name} has {missing:,} missing values (NaT); validation quarantines them"
        )
    return ns


def _floats(subscriptions: pd.DataFrame, column: str) -> np.ndarray:
    """float64 values of an optional numeric column; all NaN when absent."""
    if column not in subscriptions.columns:
        return np.full(len(subscriptions), np.nan)
    return pd.to_numeric(subscriptions[column], errors="coerce").to_numpy(dtype=np.float64)


def _plan_labels(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes (-1 where missing) and str labels of the plan column."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        labels = values.cat.categories
    else:
        codes, labels = pd.factorize(values.to_numpy(), sort=False, use_na_sentinel=True)
    return codes, np.asarray(pd.Index(labels).astype(str), dtype=object)


def _anniversary(month: np.ndarray, dom: np.ndarray, tod: np.ndarray) -> np.ndarray:
    """ns of day ``dom`` (0-based, clipped to the month length) of ``month`` plus ``tod``."""
    month_first = month.astype("datetime64[D]")
    days_in_month = ((month + 1).astype("datetime64[D]") - month_first).astype(np.int64)
    day = month_first + np.minimum(dom, days_in_month - 1)
    return day.astype("datetime64[ns]").view(np.int64) + tod


def next_renewal(base_ns: np.ndarray, c: int, period_months: np.ndarray | int = 1) -> np.ndarray:
    """First anniversary ``base + k * period_months`` months (k >= 0) at or after ``c``.

    The day of month is clipped to the month length each time (a plan started on the 31st
    renews on the 30th in 30-day months and on the 28th or 29th in February), at the same time
    of day. ``base`` itself counts when it is at or after ``c``.
    """
    base_ns = np.asarray(base_ns, dtype=np.int64)
    period = np.broadcast_to(np.asarray(period_months, dtype=np.int64), base_ns.shape)
    if (period < 1).any():
        raise ValueError("billing periods must be at least 1 month")
    base = base_ns.view("datetime64[ns]")
    base_month = base.astype("datetime64[M]")
    base_day = base.astype("datetime64[D]")
    day_of_month = (base_day - base_month.astype("datetime64[D]")).astype(np.int64)
    time_of_day = base_ns - base_day.astype("datetime64[ns]").view(np.int64)
    cutoff_month = np.datetime64(c, "ns").astype("datetime64[M]")
    months_ahead = np.maximum((cutoff_month - base_month).astype(np.int64), 0)
    steps = -(-months_ahead // period)  # ceil: the first anniversary month >= the cutoff month
    candidate_month = base_month + steps * period
    candidate = _anniversary(candidate_month, day_of_month, time_of_day)
    late = candidate < c
    candidate[late] = _anniversary(
        candidate_month[late] + period[late], day_of_month[late], time_of_day[late]
    )
    return candidate


def _next_monthly_anniversary(start_ns: np.ndarray, c: int) -> np.ndarray:
    """First monthly anniversary of ``start`` at or after ``c`` (day clipped to month length)."""
    return next_renewal(start_ns, c, 1)


def _term_months(start: np.ndarray, term_end: np.ndarray) -> np.ndarray:
    """Whole months from start to term_end (>= 1); 0 where term_end is unknown."""
    months = np.rint((term_end - start) / NS_PER_DAY / _DAYS_PER_MONTH)
    return np.where(term_end == _INT64_MIN, 0, np.maximum(months, 1)).astype(np.int64)


def _renewal_of_rows(
    start: np.ndarray, term_end: np.ndarray, period: np.ndarray, c: int
) -> np.ndarray:
    """Next renewal (ns) at or after ``c`` of active rows started before ``c``.

    ``period``: the row's billing period in months (>= 1). The start itself is never a renewal
    (it is before the cutoff); a known ``term_end`` at or after the cutoff is the renewal; a
    ``term_end`` before the cutoff on a row still active means it renewed on the same cycle.
    """
    renewal = next_renewal(start, c, period)
    has_term = term_end != _INT64_MIN
    future_term = has_term & (term_end >= c)
    renewal[future_term] = term_end[future_term]
    past_term = has_term & ~future_term
    if past_term.any():
        renewal[past_term] = next_renewal(term_end[past_term], c, period[past_term])
    return renewal


def subscription_features(
    subscriptions: pd.DataFrame,
    rows: np.ndarray | None,
    n: int,
    c: int,
    *,
    label_params: LabelParams | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Subscription feature columns (length ``n``) and each customer's first start (ns).

    ``rows`` maps each subscription row to its customer's position in ``0..n-1``; ``c`` is the
    cutoff in ns. The first start is ``INT64_MAX`` where the customer has no row before ``c``.
    """
    assert rows is not None
    label_params = LabelParams() if label_params is None else label_params
    start = _ns(subscriptions, "start_date", allow_nat=False)
    end = _ns(subscriptions, "end_date", allow_nat=True)
    term_end = _ns(subscriptions, "term_end", allow_nat=True)
    # What is known at the cutoff: rows started before it; end dates before it. The scheduled
    # term (term_end, bill_period_months) is known from the start.
    known = start < c
    end_known = np.where((end != _INT64_MIN) & (end < c), end, _INT64_MAX)
    mrr = subscriptions["mrr"].to_numpy(dtype=np.float64)
    plan_codes, plan_labels = _plan_labels(subscriptions["plan"])

    def active_at(moment: int) -> np.ndarray:
        return known & (start < moment) & (end_known >= moment)

    active = active_at(c)
    then = active_at(c - _MRR_CHANGE_WINDOW_DAYS * NS_PER_DAY)
    mrr_now = weighted_bincount(rows[active], weights=np.nan_to_num(mrr[active]), minlength=n)
    mrr_then = weighted_bincount(rows[then], weights=np.nan_to_num(mrr[then]), minlength=n)
    has_subscription = np.bincount(rows[active], minlength=n) > 0

    first_start = np.full(n, _INT64_MAX)
    np.minimum.at(first_start, rows[known], start[known])
    recent_start = known & (start >= c - _PLAN_CHANGE_WINDOW_DAYS * NS_PER_DAY)
    change = recent_start & (start > first_start[rows])
    plan_changes = np.bincount(rows[change], minlength=n)

    # The current row: the active row started last (ties: higher mrr, then later in the table).
    active_rows = np.flatnonzero(active)
    order = np.lexsort((np.nan_to_num(mrr[active_rows]), start[active_rows], rows[active_rows]))
    ordered = active_rows[order]
    is_last = np.ones(ordered.size, dtype=bool)
    if ordered.size:
        is_last[:-1] = rows[ordered][1:] != rows[ordered][:-1]
    current = ordered[is_last]
    who = rows[current]

    given_period = _floats(subscriptions, "bill_period_months")[current]
    inferred = _term_months(start[current], term_end[current])
    period = np.where(
        ~np.isnan(given_period) & (given_period >= 1),
        np.rint(np.nan_to_num(given_period, nan=1.0)),
        np.where(inferred > 0, inferred, 1),
    ).astype(np.int64)
    renewal_ns = _renewal_of_rows(start[current], term_end[current], period, c)
    horizon_days = label_params.lead_days + label_params.model_horizon_days

    plan = np.full(n, None, dtype=object)
    current_plan = plan_codes[current]
    has_plan = current_plan >= 0
    plan[who[has_plan]] = plan_labels[current_plan[has_plan]]
    renewal = np.full(n, np.nan)
    renewal[who] = (renewal_ns - c) / NS_PER_DAY
    in_horizon = np.zeros(n, dtype=np.int64)
    in_horizon[who] = renewal_ns - c < horizon_days * NS_PER_DAY
    bill_period = np.full(n, np.nan)
    bill_period[who] = period
    price = _floats(subscriptions, "price")[current]
    plan_price = np.full(n, np.nan)
    plan_price[who] = np.where(np.isnan(price), mrr[current] * period, price)

    cols = {
        "has_subscription": has_subscription.astype(np.int64),
        "plan": plan,
        "mrr": mrr_now,
        "mrr_change_90d": mrr_now - mrr_then,
        "plan_changes_365d": plan_changes,
        "days_to_renewal": renewal,
        "renewal_in_horizon": in_horizon,
        "bill_period_months": bill_period,
        "plan_price": plan_price,
    }
    if "seats" in subscriptions.columns:
        seats = _floats(subscriptions, "seats")[current]
        cols["seats"] = np.full(n, np.nan)
        cols["seats"][who] = seats
        cols["mrr_per_seat"] = np.full(n, np.nan)
        positive = seats > 0
        cols["mrr_per_seat"][who[positive]] = mrr[current][positive] / seats[positive]
    if "discount" in subscriptions.columns:
        cols["discount"] = np.full(n, np.nan)
        cols["discount"][who] = _floats(subscriptions, "discount")[current]
    cols["subscription_tenure_days"] = np.where(
        first_start < _INT64_MAX, (c - first_start) / NS_PER_DAY, np.nan
    )
    return cols, first_start
