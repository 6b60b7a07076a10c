"""Point-in-time lifecycle features: one row per customer from the events before a cutoff.

Phase 1 of the feature engine (``features.snapshots`` runs phases 1-3). Everything here is a pure
function of the rows it is given: the features of a customer depend only on that customer's own
events, customer row and subscription rows, never on other customers. So running
:func:`compute_customer_features` on any split of the customers and concatenating the results
gives the same table as running it on all of them, which is what lets the same code run per
partition on Spark. Statistics that need every customer (CLV model fits, quantile cut points)
live in ``features.segments``.

Point-in-time rules (sacred: a feature at a cutoff must be computable at that cutoff):

* only events with ``timestamp < cutoff`` are read; an event at or after the cutoff changes
  nothing, including which customers get a row;
* subscriptions: only rows with ``start_date < cutoff`` exist; an ``end_date`` at or after the
  cutoff is not yet known at the cutoff, so such a row counts as active (as if ``end_date`` were
  NaT);
* a customer gets a row when it has history before the cutoff: an event, a ``signup_date`` or a
  subscription start before the cutoff.

Units: durations are float days (CLV inputs in weeks, as their names say); money is in the
currency of ``amount``/``mrr``. A window "``w`` days" is ``[cutoff - w days, cutoff)``.

Features (``w`` in ``FeatureParams.windows_days``; ``<type>`` in the canonical event types):

=============================  ==============================================================
``tenure_days``                cutoff minus the earliest of signup date, first event and first
                               subscription start (all before the cutoff); a signup date later
                               than the first event is read as data lag
``recency_days``               days since the last event of any type (NaN: no event)
``recency_purchase_days``      days since the last purchase (NaN: never purchased)
``days_since_last_<type>``     days since the last event of that type (NaN: never)
``events_<w>d``                events of any type in the window (``events_total``: lifetime)
``purchases_<w>d``             purchase events in the window (``purchases_total``: lifetime)
``visits_<w>d``                visit events in the window
``spend_<w>d``                 revenue in the window: sum of ``amount`` over all events (only
                               purchases carry one in canonical data; NaN amounts count 0)
``spend_total``                lifetime revenue
``avg_order_value``            spend_total / purchases_total (NaN: no purchase)
``purchase_days_total``        distinct calendar days with a purchase
``interpurchase_mean_days``    mean gap between consecutive distinct purchase days (NaN with
                               fewer than 2 purchase days)
``interpurchase_std_days``     population std (ddof 0) of those gaps (NaN with fewer than 2
                               gaps, i.e. fewer than 3 purchase days)
``recency_vs_rhythm``          recency_purchase_days / interpurchase_mean_days: 1 = on rhythm,
                               3 = silent for three usual gaps (NaN without a rhythm)
``activity_trend``             log((1 + events in the latest trend window) / (1 + events in
                               the trend window before it)): 0 = flat, +-0.69 = doubled/halved;
                               always finite thanks to the +1
``spend_trend``                the same log-ratio for revenue
``active_days_90d``            distinct calendar days with any event in the last 90 days
``active_weeks_180d``          distinct ISO weeks (Monday-Sunday) with any event in 180 days
``share_<type>_365d``          that type's share of the events in 365 days (NaN: no events)
``support_tickets_90d``        tickets opened in 90 days
``unresolved_tickets``         lifetime tickets opened minus resolved, floored at 0
``complaints_90d/_365d``       complaints in 90 / 365 days
``campaign_opens_180d``        campaign e-mails opened in 180 days (``_clicks_``: clicked)
``campaign_click_rate_180d``   clicks / opens in 180 days (NaN without opens; may exceed 1
                               when opens are not tracked)
``categories_total``           distinct product categories ever purchased
``categories_90d``             distinct categories purchased in 90 days
``new_categories_90d``         categories first purchased within the last 90 days (breadth
                               being built)
``last_purchase_channel``      channel of the latest purchase (ties at the same timestamp:
                               the alphabetically last channel)
``is_active``                  the churn / up-sell population (others with history are
                               lapsed: win-back). ``churn_definition="activity"``: a
                               qualifying event (``LabelParams.qualifying_event_types``)
                               within ``LabelParams.active_window_days`` before the cutoff;
                               ``"subscription"``: a subscription active at the cutoff
                               (``has_subscription``; False without a subscriptions table)
``clv_frequency``              repeat purchase days x = purchase_days_total - 1
``clv_recency_weeks``          first to last purchase day, in weeks (t_x)
``clv_T_weeks``                first purchase day to the cutoff, in weeks (T)
``clv_monetary``               mean revenue per repeat purchase day (purchases on the first
                               purchase day excluded, as in Gamma-Gamma); 0 when x = 0. All four
                               CLV inputs are NaN for customers who never purchased.
``value_365d``                 spend_365d + 12 * mrr: a year of revenue, one-off purchases plus
                               the current subscription annualised (mrr = 0 without a table);
                               the basis of the value tiers
=============================  ==============================================================

With a subscriptions table, ``features.subscriptions`` (its docstring has the definitions and
point-in-time rules): ``has_subscription``, ``plan``, ``mrr``, ``mrr_change_90d``,
``plan_changes_365d``, ``days_to_renewal`` (from ``term_end`` / ``bill_period_months`` when
given, else monthly), ``renewal_in_horizon``, ``bill_period_months``, ``plan_price``,
``subscription_tenure_days``, and ``seats``, ``mrr_per_seat``, ``discount`` when the table has
those columns. A scheduled term end is known at the cutoff; an actual end (``end_date``) at or
after it is not.

With a customers table: ``customer_type``, ``country``, ``acquisition_channel`` when present
(NaN for a record whose ``signup_date`` is at or after the cutoff: it did not exist yet).

Partitioning: split by customer (every row of a customer in the same partition, e.g. Spark's
``groupBy("customer_id").applyInPandas`` or a hash partition on ``customer_id``), with the
customers and subscriptions rows of the same customers.

Performance (20M events / 1M customers, 2 cores): about 2-3 s for phase 1 and 0.6 s for
:func:`core_aggregations` (DuckDB: ~3 s for the same GROUP BY). No Python loops over customers
and no pandas group-bys: customer ids become integer codes once (Categorical codes as they are;
strings dictionary-encoded), each pass over the events is one ``np.bincount`` over a combined
int64 key (customer x time bucket; customer x compact (event type, window) counter), latest
times are ``np.maximum.at``, and distinct days / weeks / categories are presence bitmaps (or
sorted int64 keys when a bitmap would be too large). One int64 scratch buffer serves every key,
so the working set stays a few 20M-row arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.arrays import (
    _INT64_MAX,
    _INT64_MIN,
    NS_PER_DAY,
    _boundaries,
    _buckets,
    _count_new,
    _cumulative,
    _days,
    _distinct_keys,
    _first_of_groups,
    _pair_counts,
    _safe_ratio,
    weighted_bincount,
)
from features.config import AttributeParams, FeatureParams, LabelParams
from features.contract import EVENT_TYPES, DataContractError, EventType
from features.subscriptions import _next_monthly_anniversary as _next_monthly_anniversary
from features.subscriptions import subscription_features
from features.vocabulary import EventVocabulary, slugify, vocabulary_features

__all__ = [
    "ACTIVE_DAYS_WINDOW_DAYS",
    "ACTIVE_WEEKS_WINDOW_DAYS",
    "CUSTOMER_ATTRIBUTES",
    "as_cutoff",
    "compute_customer_features",
    "core_aggregations",
]


#: Fixed windows of the named features (their names carry the number).
ACTIVE_DAYS_WINDOW_DAYS = 90
ACTIVE_WEEKS_WINDOW_DAYS = 180
_SUPPORT_WINDOW_DAYS = 90
_COMPLAINT_WINDOWS_DAYS = (90, 365)
_CAMPAIGN_WINDOW_DAYS = 180
_MIX_WINDOW_DAYS = 365
_RECENT_CATEGORY_DAYS = 90

#: Customer attributes passed through from the customers table when present.
CUSTOMER_ATTRIBUTES: tuple[str, ...] = ("customer_type", "country", "acquisition_channel")


# --------------------------------------------------------------------------------------------
# input encoding
# --------------------------------------------------------------------------------------------


def as_cutoff(cutoff: object) -> pd.Timestamp:
    """A cutoff as a naive midnight Timestamp; anything else is an error, not a silent shift.

    Features count calendar days and ISO weeks relative to the cutoff, so a cutoff inside a day
    would make "the last 90 days" ambiguous.
    """
    try:
        stamp = pd.Timestamp(cutoff)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cutoff {cutoff!r} is not a date: {error}") from error
    if stamp is pd.NaT:
        raise ValueError("cutoff is missing (NaT)")
    if stamp.tzinfo is not None:
        raise ValueError(f"cutoff {stamp} must be naive (meaning UTC), not time-zone aware")
    if stamp != stamp.normalize():
        raise ValueError(f"cutoff {stamp} must be at midnight (a date)")
    return stamp.as_unit("ns")


def _require_columns(frame: pd.DataFrame, table: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataContractError(
            f"{table} table lacks required column(s) {missing}; it has {list(frame.columns)}"
        )


def _timestamps_ns(values: pd.Series, name: str, *, allow_nat: bool) -> np.ndarray:
    """int64 nanoseconds of a naive datetime column (a view, no copy, when already ns)."""
    dtype = values.dtype
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if isinstance(dtype, pd.DatetimeTZDtype):
        raise DataContractError(
            f"{name} is time-zone aware ({dtype}); canonical timestamps are naive UTC "
            "(run features.validation first)"
        )
    if not pd.api.types.is_datetime64_dtype(dtype):
        raise DataContractError(
            f"{name} must be datetime64, got {dtype} (run features.validation first)"
        )
    ns = values.to_numpy(dtype="datetime64[ns]").view(np.int64)
    if not allow_nat:
        missing = int(np.count_nonzero(ns == _INT64_MIN))
        if missing:
            raise DataContractError(
                f"{name} has {missing:,} missing values (NaT); validation quarantines them"
            )
    return ns


def _as_str_labels(values: pd.Index | np.ndarray) -> np.ndarray:
    """Distinct labels as an object array of str (ids are strings in the contract)."""
    index = pd.Index(values)
    if index.dtype != object or not all(isinstance(v, str) for v in index[:1]):
        index = index.astype(str)
    return np.asarray(index, dtype=object)


def _factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes (-1 where missing) and distinct values of a non-categorical column.

    Strings go through Arrow's dictionary encoding (about 1.5x faster than ``pd.factorize`` on
    tens of millions of Python strings); anything else through ``pd.factorize``.
    """
    try:
        array = pa.array(values.to_numpy(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = None
    if array is not None and (
        pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
    ):
        encoded = array.dictionary_encode()
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return codes, encoded.dictionary.to_numpy(zero_copy_only=False)
    codes, labels = pd.factorize(values.to_numpy(), sort=False, use_na_sentinel=True)
    return codes, np.asarray(labels)


def _encode(values: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (>= 0) and their labels; Categorical columns are used as they are."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        labels = values.cat.categories
    else:
        codes, labels = _factorize(values)
    if codes.size and codes.min() < 0:
        raise DataContractError(
            f"{name} has {int(np.count_nonzero(codes < 0)):,} missing values; "
            "validation quarantines them"
        )
    return codes, _as_str_labels(labels)


def _encode_optional(values: pd.Series | None) -> tuple[np.ndarray | None, np.ndarray]:
    """Codes (-1 where missing) and labels of an optional categorical column."""
    if values is None:
        return None, np.array([], dtype=object)
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(), _as_str_labels(values.cat.categories)
    codes, labels = _factorize(values)
    return codes, _as_str_labels(labels)


def _type_codes(codes: np.ndarray, labels: np.ndarray, tracked: Sequence[str]) -> np.ndarray:
    """Index of each event's type in ``tracked``; ``len(tracked)`` for any other type."""
    position = {t: i for i, t in enumerate(tracked)}
    lookup = np.array([position.get(t, len(tracked)) for t in labels], dtype=np.int8)
    return lookup[codes] if lookup.size else np.zeros(codes.shape, dtype=np.int8)


@dataclass(frozen=True)
class _Customers:
    """Customer ids of the events as dense codes ``0..n-1`` and their labels."""

    codes: np.ndarray  # integer codes (any int width), one per event
    ids: np.ndarray  # object array of str, one per code


def _encode_customers(events: pd.DataFrame) -> _Customers:
    codes, ids = _encode(events["customer_id"], "events.customer_id")
    if ids.size > 1024 and codes.size:
        # A partition of a larger table may keep the whole category list: drop unused codes so
        # the per-customer arrays are sized to the customers present.
        used = np.zeros(ids.size, dtype=bool)
        used[codes] = True
        n_used = int(np.count_nonzero(used))
        if n_used < 0.75 * ids.size:
            remap = (np.cumsum(used) - 1).astype(codes.dtype)
            codes = remap[codes]
            ids = ids[used]
    return _Customers(codes=codes, ids=ids)


def _combined_key(
    out: np.ndarray, codes: np.ndarray, width: int, offset: np.ndarray | None
) -> np.ndarray:
    """``codes * width + offset`` as int64 into the scratch buffer ``out`` (no new 8-byte array)."""
    np.multiply(codes, width, out=out, dtype=np.int64)
    if offset is not None:
        np.add(out, offset, out=out, dtype=np.int64)
    return out


def _sorted_rows(ids: np.ndarray) -> np.ndarray | None:
    """Positions that sort ``ids`` (None when already sorted)."""
    if pd.Index(ids).is_monotonic_increasing:
        return None
    return pc.sort_indices(pa.array(ids, type=pa.string())).to_numpy()


def _first_last(
    scratch: np.ndarray, codes: np.ndarray, bucket: np.ndarray, ts: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Earliest and latest event time per code before the cutoff (INT64_MAX/MIN when none).

    Events at/after the cutoff are sent to an extra slot ``n`` instead of masking the times, so
    no 20M-row copy of the timestamps is needed. ``scratch`` is overwritten.
    """
    key = _combined_key(scratch, codes, 1, None)
    key[bucket == 0] = n
    first = np.full(n + 1, _INT64_MAX)
    np.minimum.at(first, key, ts)
    last = np.full(n + 1, _INT64_MIN)
    np.maximum.at(last, key, ts)
    return first[:n], last[:n]


# --------------------------------------------------------------------------------------------
# core aggregations
# --------------------------------------------------------------------------------------------


def core_aggregations(
    events: pd.DataFrame, cutoff: object, windows_days: Sequence[int] = (30, 90, 180, 365)
) -> pd.DataFrame:
    """Counts and revenue per window plus first/last event time, per customer before a cutoff.

    The hot core of the feature engine, callable on its own (and raced against DuckDB in
    ``benchmarks/features.py``): for each customer with an event before ``cutoff``,
    ``events_total``, ``spend_total``, ``events_<w>d`` and ``spend_<w>d`` (sum of ``amount``,
    NaN amounts as 0) for each window, and ``first_event`` / ``last_event`` timestamps. Indexed
    by ``customer_id`` (str), sorted.
    """
    _require_columns(events, "events", ("customer_id", "timestamp"))
    cutoff = as_cutoff(cutoff)
    cutoff_ns = cutoff.value
    windows = _boundaries(windows_days)
    n_buckets = len(windows) + 2
    customers = _encode_customers(events)
    n = customers.ids.size
    ts = _timestamps_ns(events["timestamp"], "events.timestamp", allow_nat=False)
    bucket = _buckets(ts, cutoff_ns, windows)

    key = _combined_key(np.empty(ts.size, dtype=np.int64), customers.codes, n_buckets, bucket)
    counts = np.bincount(key, minlength=n * n_buckets).reshape(n, n_buckets)
    if "amount" in events.columns:
        amount = events["amount"].to_numpy(dtype=np.float64)
        priced = np.flatnonzero(~np.isnan(amount))
        revenue = weighted_bincount(key[priced], weights=amount[priced], minlength=n * n_buckets)
    else:
        revenue = np.zeros(n * n_buckets)
    revenue = revenue.reshape(n, n_buckets)
    events_within = _cumulative(counts)
    revenue_within = _cumulative(revenue)
    first, last = _first_last(key, customers.codes, bucket, ts, n)

    rows = np.flatnonzero(events_within[:, -1] > 0)
    order = _sorted_rows(customers.ids[rows])
    if order is not None:
        rows = rows[order]
    columns: dict[str, np.ndarray] = {
        "events_total": events_within[rows, -1],
        "spend_total": revenue_within[rows, -1],
    }
    for j, days in enumerate(windows):
        columns[f"events_{days}d"] = events_within[rows, j]
        columns[f"spend_{days}d"] = revenue_within[rows, j]
    columns["first_event"] = first[rows].view("datetime64[ns]")
    columns["last_event"] = last[rows].view("datetime64[ns]")
    index = pd.Index(customers.ids[rows], name="customer_id", dtype=object)
    return pd.DataFrame(columns, index=index, copy=False)


# --------------------------------------------------------------------------------------------
# customer features (phase 1)
# --------------------------------------------------------------------------------------------


@dataclass
class _Universe:
    """Every customer id seen in any input table, as dense positions ``0..n-1``.

    Positions ``0..n_event_customers-1`` are the events' customer codes; ids found only in the
    customers or subscriptions table are appended after them.
    """

    ids: np.ndarray
    customer_rows: np.ndarray | None  # position of each customers-table row
    subscription_rows: np.ndarray | None  # position of each subscriptions-table row


def _universe(
    event_ids: np.ndarray, customers: pd.DataFrame | None, subscriptions: pd.DataFrame | None
) -> _Universe:
    ids = event_ids
    index = pd.Index(ids, dtype=object)
    located: dict[str, np.ndarray | None] = {"customers": None, "subscriptions": None}
    for name, table in (("customers", customers), ("subscriptions", subscriptions)):
        if table is None:
            continue
        codes, labels = _encode(table["customer_id"], f"{name}.customer_id")
        found = index.get_indexer(pd.Index(labels, dtype=object))
        if (found < 0).any():
            extra = labels[found < 0]
            ids = np.concatenate([ids, extra])
            index = pd.Index(ids, dtype=object)
            found = index.get_indexer(pd.Index(labels, dtype=object))
        located[name] = found[codes]
    return _Universe(ids, located["customers"], located["subscriptions"])


@dataclass(frozen=True)
class _Windows:
    """Bucket layout: which column of a within-window cumulative array is which window."""

    boundaries: tuple[int, ...]

    @property
    def n_buckets(self) -> int:
        return len(self.boundaries) + 2

    def col(self, days: int | None) -> int:
        """Column for a window of ``days`` days; ``None`` for lifetime (all before the cutoff)."""
        return len(self.boundaries) if days is None else self.boundaries.index(int(days))


def compute_customer_features(
    events: pd.DataFrame,
    cutoff: object,
    *,
    customers: pd.DataFrame | None = None,
    subscriptions: pd.DataFrame | None = None,
    params: FeatureParams,
    label_params: LabelParams | None = None,
    vocabulary: EventVocabulary | None = None,
) -> pd.DataFrame:
    """Phase 1: the point-in-time feature row of every customer with history before ``cutoff``.

    Pure and per-customer (see the module docstring): depends on nothing but the rows given, so
    it is partition-safe. ``label_params`` supplies the definition of ``is_active``
    (qualifying event types and active window; defaults to ``LabelParams()``), so features and
    label eligibility agree. ``vocabulary`` (fitted once on the whole table by
    ``features.vocabulary.fit_vocabulary``, never per partition) adds the per-event-type
    ``ev_*`` columns; None leaves them out. Returns a frame indexed by ``customer_id`` (str),
    sorted, with a ``cutoff`` column.
    """
    _require_columns(events, "events", ("customer_id", "timestamp", "event_type"))
    if customers is not None:
        _require_columns(customers, "customers", ("customer_id",))
    if subscriptions is not None:
        _require_columns(
            subscriptions, "subscriptions", ("customer_id", "plan", "start_date", "mrr")
        )
    label_params = LabelParams() if label_params is None else label_params
    cutoff = as_cutoff(cutoff)
    c = cutoff.value
    windows = _Windows(
        _boundaries(
            params.windows_days,
            (params.trend_window_days, 2 * params.trend_window_days),
            (label_params.active_window_days,),
            (_SUPPORT_WINDOW_DAYS, _CAMPAIGN_WINDOW_DAYS, _MIX_WINDOW_DAYS, _RECENT_CATEGORY_DAYS),
            _COMPLAINT_WINDOWS_DAYS,
            (ACTIVE_WEEKS_WINDOW_DAYS,),
        )
    )
    tracked = EVENT_TYPES + tuple(
        t for t in dict.fromkeys(label_params.qualifying_event_types) if t not in EVENT_TYPES
    )

    event_customers = _encode_customers(events)
    universe = _universe(event_customers.ids, customers, subscriptions)
    n = universe.ids.size
    codes = event_customers.codes
    ts = _timestamps_ns(events["timestamp"], "events.timestamp", allow_nat=False)
    raw_type_codes, type_labels = _encode(events["event_type"], "events.event_type")
    type_code = _type_codes(raw_type_codes, type_labels, tracked)
    bucket = _buckets(ts, c, windows.boundaries)

    out: dict[str, np.ndarray] = {}
    # One int64 scratch buffer for every combined key: fresh 160 MB arrays per key would cost
    # more in first-touch page faults than the bincounts themselves.
    scratch = np.empty(ts.size, dtype=np.int64)
    activity = _activity_features(
        events, scratch, codes, ts, type_code, bucket, n, c, windows, tracked, params, label_params
    )
    del scratch
    out.update(activity.columns)
    purchases = _purchase_features(
        events, codes, ts, type_code, bucket, n, c, windows, activity.last_by_type
    )
    out.update(purchases)
    out.update(_recent_activity_features(codes, ts, bucket, n, c, windows))
    is_active = activity.qualifying_in_active_window > 0

    first_seen = activity.first_event.copy()
    has_history = activity.events_total > 0
    if customers is not None:
        attributes, signup = _customer_attributes(
            customers, universe.customer_rows, n, c, params.attributes
        )
        out.update(attributes)
        first_seen = np.minimum(first_seen, signup)
        has_history |= signup < c
    mrr = np.zeros(n)
    if subscriptions is not None:
        subs, first_start = subscription_features(
            subscriptions, universe.subscription_rows, n, c, label_params=label_params
        )
        out.update(subs)
        mrr = subs["mrr"]
        first_seen = np.minimum(first_seen, first_start)
        has_history |= first_start < c

    out["tenure_days"] = np.where(has_history, _days(c - first_seen), np.nan)
    if vocabulary is not None:
        out.update(
            vocabulary_features(
                events,
                codes=codes,
                ts=ts,
                type_codes=raw_type_codes,
                type_labels=type_labels,
                n=n,
                cutoff_ns=c,
                tenure_days=out["tenure_days"],
                vocabulary=vocabulary,
                trend_window_days=params.trend_window_days,
                seats=out.get("seats"),
            )
        )
    out["value_365d"] = out.pop("_revenue_365d") + 12.0 * mrr
    if label_params.churn_definition == "subscription":
        # subscription churn: the population is who has a subscription active at the cutoff
        is_active = out.get("has_subscription", np.zeros(n, dtype=np.int64)) > 0
    out["is_active"] = is_active

    rows = np.flatnonzero(has_history)
    order = _sorted_rows(universe.ids[rows])
    if order is not None:
        rows = rows[order]
    columns = {"cutoff": np.full(rows.size, c).view("datetime64[ns]")}
    for name in _column_order(out, params, tracked):
        columns[name] = out[name][rows]
    index = pd.Index(universe.ids[rows], name="customer_id", dtype=object)
    # copy=False: the arrays are fresh, and a consolidating copy of ~70 columns costs seconds
    return pd.DataFrame(columns, index=index, copy=False)


def _column_order(
    out: dict[str, np.ndarray], params: FeatureParams, tracked: Sequence[str]
) -> list[str]:
    """A stable, readable column order: recency, windows, rhythm, trends, mix, CLV, value."""
    leading = ["tenure_days", "recency_days", "recency_purchase_days"]
    leading += [f"days_since_last_{t}" for t in EVENT_TYPES]
    windowed = [
        f"{kind}_{w}d"
        for w in params.windows_days
        for kind in ("events", "purchases", "spend", "visits")
    ]
    middle = [
        "events_total",
        "purchases_total",
        "spend_total",
        "avg_order_value",
        "purchase_days_total",
        "interpurchase_mean_days",
        "interpurchase_std_days",
        "recency_vs_rhythm",
        "activity_trend",
        "spend_trend",
        "active_days_90d",
        "active_weeks_180d",
    ]
    middle += [f"share_{t}_365d" for t in EVENT_TYPES]
    middle += [
        "support_tickets_90d",
        "unresolved_tickets",
        "complaints_90d",
        "complaints_365d",
        "campaign_opens_180d",
        "campaign_clicks_180d",
        "campaign_click_rate_180d",
        "categories_total",
        "categories_90d",
        "new_categories_90d",
        "last_purchase_channel",
        "has_subscription",
        "plan",
        "mrr",
        "mrr_change_90d",
        "plan_changes_365d",
        "days_to_renewal",
        "subscription_tenure_days",
        *CUSTOMER_ATTRIBUTES,
        "clv_frequency",
        "clv_recency_weeks",
        "clv_T_weeks",
        "clv_monetary",
        "value_365d",
        "is_active",
    ]
    ordered = [name for name in leading + windowed + middle if name in out]
    rest = [name for name in out if name not in set(ordered)]
    return ordered + rest


@dataclass
class _Activity:
    columns: dict[str, np.ndarray]
    last_by_type: np.ndarray  # (n, n_types) int64 ns, INT64_MIN where never
    first_event: np.ndarray  # (n,) int64 ns, INT64_MAX where no event
    events_total: np.ndarray
    qualifying_in_active_window: np.ndarray


@dataclass(frozen=True)
class _SlotLayout:
    """Compact per-customer counters for the (event type, window) pairs the features need.

    Counting every type in every time bucket would need ``n_types * n_buckets`` counters per
    customer (hundreds of MB for a million customers); most pairs are never read. Each type
    gets one counter per window it needs, holding the events between that window and the next
    smaller one, so a window count is a sum of a few adjacent counters. Buckets a type does not
    need (and events at/after the cutoff) go to a trash counter at ``size - 1``.
    """

    lookup: np.ndarray  # (n_types, n_buckets) -> counter index
    columns: dict[int, tuple[int, ...]]  # type -> ascending window columns it counts
    base: dict[int, int]  # type -> index of its first counter
    size: int

    @classmethod
    def build(
        cls, needs: dict[int, set[int | None]], windows: _Windows, n_types: int
    ) -> _SlotLayout:
        trash_lookup: list[list[int]] = []
        columns: dict[int, tuple[int, ...]] = {}
        base: dict[int, int] = {}
        cursor = 0
        for t in range(n_types):
            cols = tuple(sorted({windows.col(w) for w in needs.get(t, set())}))
            columns[t], base[t] = cols, cursor
            row = []
            for b in range(windows.n_buckets):
                slot = next((i for i, col in enumerate(cols) if 1 <= b <= col + 1), None)
                row.append(-1 if slot is None else cursor + slot)
            trash_lookup.append(row)
            cursor += len(cols)
        lookup = np.array(trash_lookup, dtype=np.int64)
        lookup[lookup < 0] = cursor
        size = cursor + 1
        dtype = np.int16 if size < np.iinfo(np.int16).max else np.int32
        return cls(lookup.astype(dtype), columns, base, size)

    def count(
        self, cumulative: np.ndarray, t: int, windows: _Windows, days: int | None
    ) -> np.ndarray:
        """Events of type ``t`` within ``days``, from the row-wise cumsum of the counters."""
        last = self.base[t] + self.columns[t].index(windows.col(days))
        if self.base[t] == 0:
            return cumulative[:, last].copy()
        return cumulative[:, last] - cumulative[:, self.base[t] - 1]


def _activity_features(
    events: pd.DataFrame,
    scratch: np.ndarray,
    codes: np.ndarray,
    ts: np.ndarray,
    type_code: np.ndarray,
    bucket: np.ndarray,
    n: int,
    c: int,
    windows: _Windows,
    tracked: Sequence[str],
    params: FeatureParams,
    label_params: LabelParams,
) -> _Activity:
    """Counts and revenue per window, recency per type, trends, ticket and campaign features.

    ``scratch`` (int64, one per event) is overwritten.
    """
    nb = windows.n_buckets
    t = {name: i for i, name in enumerate(tracked)}
    n_types = len(tracked) + 1
    life = windows.col(None)

    # all events and revenue per time bucket
    key = _combined_key(scratch, codes, nb, bucket)
    all_within = _cumulative(np.bincount(key, minlength=n * nb).reshape(n, nb))
    if "amount" in events.columns:
        amount = events["amount"].to_numpy(dtype=np.float64)
        priced = np.flatnonzero(~np.isnan(amount))
        revenue = weighted_bincount(key[priced], weights=amount[priced], minlength=n * nb)
        del priced
    else:
        revenue = np.zeros(n * nb)
    revenue_within = _cumulative(revenue.reshape(n, nb))

    # per event type, only the windows that are read
    needs: dict[int, set[int | None]] = {i: {_MIX_WINDOW_DAYS} for i in range(len(EVENT_TYPES))}
    needs[t[EventType.PURCHASE]] |= {*params.windows_days, None}
    needs[t[EventType.VISIT]] |= set(params.windows_days)
    needs[t[EventType.SUPPORT_TICKET]] |= {_SUPPORT_WINDOW_DAYS, None}
    needs[t[EventType.TICKET_RESOLVED]] |= {None}
    needs[t[EventType.COMPLAINT]] |= set(_COMPLAINT_WINDOWS_DAYS)
    needs[t[EventType.CAMPAIGN_OPEN]] |= {_CAMPAIGN_WINDOW_DAYS}
    needs[t[EventType.CAMPAIGN_CLICK]] |= {_CAMPAIGN_WINDOW_DAYS}
    for name in label_params.qualifying_event_types:
        needs.setdefault(t[name], set()).add(label_params.active_window_days)
    layout = _SlotLayout.build(needs, windows, n_types)
    slot = layout.lookup[type_code, bucket]
    key = _combined_key(scratch, codes, layout.size, slot)
    del slot
    counters = np.bincount(key, minlength=n * layout.size).reshape(n, layout.size)
    np.cumsum(counters, axis=1, out=counters)

    def count(type_name: str, days: int | None) -> np.ndarray:
        return layout.count(counters, t[type_name], windows, days)

    # last event per type (events at/after the cutoff go to a trash slot) and first event
    key = _combined_key(scratch, codes, n_types, type_code)
    key[bucket == 0] = n * n_types
    last_by_type = np.full(n * n_types + 1, _INT64_MIN)
    np.maximum.at(last_by_type, key, ts)
    last_by_type = last_by_type[:-1].reshape(n, n_types)
    first_event, _ = _first_last(scratch, codes, bucket, ts, n)

    cols: dict[str, np.ndarray] = {}
    last_any = last_by_type.max(axis=1)
    cols["recency_days"] = _since(last_any, c)
    cols["recency_purchase_days"] = _since(last_by_type[:, t[EventType.PURCHASE]], c)
    for name in EVENT_TYPES:
        cols[f"days_since_last_{name}"] = _since(last_by_type[:, t[name]], c)
    for w in params.windows_days:
        cols[f"events_{w}d"] = all_within[:, windows.col(w)]
        cols[f"purchases_{w}d"] = count(EventType.PURCHASE, w)
        cols[f"spend_{w}d"] = revenue_within[:, windows.col(w)]
        cols[f"visits_{w}d"] = count(EventType.VISIT, w)
    cols["events_total"] = all_within[:, life]
    cols["purchases_total"] = count(EventType.PURCHASE, None)
    cols["spend_total"] = revenue_within[:, life]

    tw = params.trend_window_days
    recent = all_within[:, windows.col(tw)]
    before = all_within[:, windows.col(2 * tw)] - recent
    cols["activity_trend"] = np.log1p(recent) - np.log1p(before)
    recent_spend = revenue_within[:, windows.col(tw)]
    before_spend = np.maximum(revenue_within[:, windows.col(2 * tw)] - recent_spend, 0.0)
    cols["spend_trend"] = np.log1p(recent_spend) - np.log1p(before_spend)
    # value_365d needs the 365-day revenue even when 365 is not among the configured windows.
    cols["_revenue_365d"] = revenue_within[:, windows.col(_MIX_WINDOW_DAYS)]

    mix_total = all_within[:, windows.col(_MIX_WINDOW_DAYS)]
    for name in EVENT_TYPES:
        cols[f"share_{name}_365d"] = _safe_ratio(count(name, _MIX_WINDOW_DAYS), mix_total)
    cols["support_tickets_90d"] = count(EventType.SUPPORT_TICKET, _SUPPORT_WINDOW_DAYS)
    cols["unresolved_tickets"] = np.maximum(
        count(EventType.SUPPORT_TICKET, None) - count(EventType.TICKET_RESOLVED, None), 0
    )
    for w in _COMPLAINT_WINDOWS_DAYS:
        cols[f"complaints_{w}d"] = count(EventType.COMPLAINT, w)
    opens = count(EventType.CAMPAIGN_OPEN, _CAMPAIGN_WINDOW_DAYS)
    clicks = count(EventType.CAMPAIGN_CLICK, _CAMPAIGN_WINDOW_DAYS)
    cols["campaign_opens_180d"] = opens
    cols["campaign_clicks_180d"] = clicks
    cols["campaign_click_rate_180d"] = _safe_ratio(clicks, opens)

    qualifying = np.zeros(n, dtype=np.int64)
    for name in dict.fromkeys(label_params.qualifying_event_types):
        qualifying += count(name, label_params.active_window_days)
    return _Activity(
        columns=cols,
        last_by_type=last_by_type,
        first_event=first_event,
        events_total=all_within[:, life],
        qualifying_in_active_window=qualifying,
    )


def _since(last_ns: np.ndarray, c: int) -> np.ndarray:
    return np.where(last_ns > _INT64_MIN, _days(c - last_ns), np.nan)


def _purchase_features(
    events: pd.DataFrame,
    codes: np.ndarray,
    ts: np.ndarray,
    type_code: np.ndarray,
    bucket: np.ndarray,
    n: int,
    c: int,
    windows: _Windows,
    last_by_type: np.ndarray,
) -> dict[str, np.ndarray]:
    """Purchase rhythm, CLV inputs, category breadth and last purchase channel."""
    purchase_type = EVENT_TYPES.index(EventType.PURCHASE)
    rows = np.flatnonzero((bucket > 0) & (type_code == purchase_type))
    p_code = codes[rows].astype(np.int64)
    p_ts = ts[rows]
    p_bucket = bucket[rows]
    if "amount" in events.columns:
        p_amount = np.nan_to_num(events["amount"].to_numpy(dtype=np.float64)[rows], nan=0.0)
    else:
        p_amount = np.zeros(rows.size)
    cols: dict[str, np.ndarray] = {}

    # distinct purchase days, sorted by (customer, day)
    p_day = p_ts // NS_PER_DAY
    cutoff_day = c // NS_PER_DAY
    day0 = int(p_day.min()) if p_day.size else cutoff_day
    span = cutoff_day - day0 + 1
    day_keys = _distinct_keys(p_code * span + (p_day - day0))
    d_code = day_keys // span
    d_day = day_keys % span + day0
    n_days = np.bincount(d_code, minlength=n)
    starts = _first_of_groups(d_code)
    first_day = np.zeros(n, dtype=np.int64)
    first_day[d_code[starts]] = d_day[starts]
    ends = np.empty_like(starts)
    if ends.size:
        ends[:-1] = starts[1:]
        ends[-1] = True
    last_day = np.zeros(n, dtype=np.int64)
    last_day[d_code[ends]] = d_day[ends]

    gap_rows = ~starts[1:] if starts.size else np.zeros(0, dtype=bool)
    gap = np.diff(d_day)[gap_rows].astype(np.float64)
    gap_code = d_code[1:][gap_rows]
    n_gaps = np.maximum(n_days - 1, 0)
    span_days = (last_day - first_day).astype(np.float64)
    mean_gap = _safe_ratio(span_days, n_gaps)
    deviation = gap - mean_gap[gap_code]
    variance = _safe_ratio(weighted_bincount(gap_code, weights=deviation**2, minlength=n), n_gaps)
    cols["purchase_days_total"] = n_days
    cols["interpurchase_mean_days"] = mean_gap
    cols["interpurchase_std_days"] = np.where(n_gaps >= 2, np.sqrt(variance), np.nan)
    recency_purchase = _since(last_by_type[:, purchase_type], c)
    cols["recency_vs_rhythm"] = np.where(
        mean_gap > 0, recency_purchase / np.where(mean_gap > 0, mean_gap, 1.0), np.nan
    )

    purchased = n_days > 0
    on_first_day = p_day == first_day[p_code]
    repeat_spend = weighted_bincount(
        p_code[~on_first_day], weights=p_amount[~on_first_day], minlength=n
    )
    frequency = n_days - 1
    cols["clv_frequency"] = np.where(purchased, frequency, np.nan)
    cols["clv_recency_weeks"] = np.where(purchased, span_days / 7.0, np.nan)
    cols["clv_T_weeks"] = np.where(purchased, (cutoff_day - first_day) / 7.0, np.nan)
    cols["clv_monetary"] = np.where(
        purchased, np.where(frequency > 0, repeat_spend / np.maximum(frequency, 1), 0.0), np.nan
    )
    priced_purchases = np.bincount(p_code, minlength=n)
    cols["avg_order_value"] = _safe_ratio(
        weighted_bincount(p_code, weights=p_amount, minlength=n), priced_purchases
    )

    # category breadth
    category_codes, category_labels = _encode_optional(
        events["category"] if "category" in events.columns else None
    )
    if category_codes is not None and category_labels.size:
        p_category = category_codes[rows].astype(np.int64)
        known = p_category >= 0
        recent = known & (p_bucket <= windows.col(_RECENT_CATEGORY_DAYS) + 1)
        older = known & ~recent
        k = category_labels.size
        total, _ = _pair_counts(p_code[known], p_category[known], n, k)
        n_recent, recent_set = _pair_counts(p_code[recent], p_category[recent], n, k)
        _, older_set = _pair_counts(p_code[older], p_category[older], n, k)
        cols["categories_total"] = total
        cols["categories_90d"] = n_recent
        cols["new_categories_90d"] = _count_new(recent_set, older_set, n, k)
    else:
        zeros = np.zeros(n, dtype=np.int64)
        cols["categories_total"] = zeros
        cols["categories_90d"] = zeros
        cols["new_categories_90d"] = zeros

    # channel of the latest purchase
    channel_codes, channel_labels = _encode_optional(
        events["channel"] if "channel" in events.columns else None
    )
    channel = np.full(n, None, dtype=object)
    if channel_codes is not None and channel_labels.size:
        # Rank channels alphabetically so ties break the same way whatever the code order.
        rank_of_code = np.argsort(np.argsort(channel_labels.astype(str), kind="stable"))
        labels_by_rank = channel_labels[np.argsort(rank_of_code)]
        p_channel = channel_codes[rows]
        latest = (p_ts == last_by_type[p_code, purchase_type]) & (p_channel >= 0)
        best = np.full(n, -1, dtype=np.int64)
        np.maximum.at(best, p_code[latest], rank_of_code[p_channel[latest]])
        has = best >= 0
        channel[has] = labels_by_rank[best[has]]
    cols["last_purchase_channel"] = channel
    return cols


def _recent_activity_features(
    codes: np.ndarray, ts: np.ndarray, bucket: np.ndarray, n: int, c: int, windows: _Windows
) -> dict[str, np.ndarray]:
    """Distinct active days in 90 days and distinct ISO weeks in 180 days."""
    last_bucket = windows.col(ACTIVE_WEEKS_WINDOW_DAYS) + 1
    rows = np.flatnonzero((bucket > 0) & (bucket <= last_bucket))
    r_code = codes[rows].astype(np.int64)
    r_day = ts[rows] // NS_PER_DAY
    cutoff_day = c // NS_PER_DAY

    day_offset = r_day - (cutoff_day - ACTIVE_DAYS_WINDOW_DAYS)
    in_days = day_offset >= 0
    active_days, _ = _pair_counts(r_code[in_days], day_offset[in_days], n, ACTIVE_DAYS_WINDOW_DAYS)

    # ISO weeks start on Monday; 1970-01-01 (day 0) was a Thursday, so (day + 3) // 7 numbers
    # Monday-to-Sunday weeks.
    week0 = (cutoff_day - ACTIVE_WEEKS_WINDOW_DAYS + 3) // 7
    n_weeks = (cutoff_day - 1 + 3) // 7 - week0 + 1
    active_weeks, _ = _pair_counts(r_code, (r_day + 3) // 7 - week0, n, n_weeks)
    return {"active_days_90d": active_days, "active_weeks_180d": active_weeks}


def _customer_attributes(
    customers: pd.DataFrame,
    rows: np.ndarray | None,
    n: int,
    c: int,
    attribute_params: AttributeParams | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Attribute columns and the signup time (INT64_MAX where unknown or not before the cutoff).

    A customer record whose signup date is at or after the cutoff did not exist at the cutoff,
    so its attributes are not used (NaN); records without a signup date are taken as known.
    Besides ``CUSTOMER_ATTRIBUTES`` (kept under their names), every other column the config
    admits (:func:`declared_attributes`) becomes ``attr_<name>``, by dtype only
    (:func:`_attribute_values`): numbers and flags as floats, datetime64 columns as
    ``attr_<name>_days`` (days from the date to the cutoff; a date at or after the cutoff is not
    known yet and reads NaN), anything else as text categories. ISO-date text and
    identifier-like text are settled on the whole table by validation, never here.
    """
    assert rows is not None
    if rows.size and np.bincount(rows).max() > 1:
        raise DataContractError(
            "customers table has duplicate customer_id values; validation keeps the first"
        )
    signup = np.full(n, _INT64_MAX)
    existed = np.ones(rows.size, dtype=bool)
    if "signup_date" in customers.columns:
        values = _timestamps_ns(customers["signup_date"], "customers.signup_date", allow_nat=True)
        known = (values != _INT64_MIN) & (values < c)
        signup[rows[known]] = values[known]
        existed = (values == _INT64_MIN) | known
    cols: dict[str, np.ndarray] = {}
    for name in CUSTOMER_ATTRIBUTES:
        if name in customers.columns:
            column = np.full(n, None, dtype=object)
            values = customers[name].astype(object).to_numpy()[existed]
            column[rows[existed]] = np.where(pd.isna(values), None, values)
            cols[name] = column
    for name in declared_attributes(customers.columns, attribute_params or AttributeParams()):
        feature, values = _attribute_values(customers[name], c)
        column = np.full(n, np.nan if values.dtype != object else None, dtype=values.dtype)
        column[rows[existed]] = values[existed]
        cols[f"attr_{slugify(name)}{feature}"] = column
    return cols, signup


def declared_attributes(columns: Sequence[str], params: AttributeParams) -> list[str]:
    """Customer-table columns that become ``attr_*`` features under ``params``."""
    reserved = {"customer_id", "signup_date", *CUSTOMER_ATTRIBUTES}
    chosen = [str(c) for c in columns if str(c) not in reserved]
    if params.include is not None:
        chosen = [c for c in chosen if c in set(params.include)]
    return [c for c in chosen if c not in set(params.exclude)]


def _attribute_values(values: pd.Series, c: int) -> tuple[str, np.ndarray]:
    """(column suffix, values) of one attribute, decided by its dtype alone.

    Numbers and flags are floats, datetime64 columns ``_days`` (days from the date to the
    cutoff ``c``; NaN when missing or at/after the cutoff), any other dtype text categories
    (``str``, None where missing). Nothing depends on which rows are given, so phase 1 stays
    partition-safe: reading ISO-date text as dates and dropping identifier-like text are
    decided once on the whole customers table by ``features.validation.validate_customers``.
    """
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        return "", values.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values
        if isinstance(stamps.dtype, pd.DatetimeTZDtype):
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        ns = stamps.to_numpy(dtype="datetime64[ns]").view(np.int64)
        known = (ns != _INT64_MIN) & (ns < c)
        return "_days", np.where(known, (c - ns) / NS_PER_DAY, np.nan)
    text = values.astype(object)
    return "", np.where(text.isna().to_numpy(), None, text.astype(str).to_numpy()).astype(object)
