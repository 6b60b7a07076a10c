"""The export's own event vocabulary: which event types get features of their own.

A CRM team brings its own words for what customers do: HubSpot and Salesforce exports say
``email_opened`` and ``deal_won``, a product analytics export ``add_contact`` or ``like``. The
eight canonical types (``features.contract.EventType``) keep their dedicated features; on top of
them every event type with enough support gets the same generic family (``features.lifecycle``,
``ev_<slug>_*`` columns): counts, rates per day and per active day, recency, trend, share of
activity and, where the type carries amounts, their sums.

Which types, is learnt once from data and then frozen: :func:`fit_vocabulary` counts events and
customers per type before a date, keeps types with at least ``min_customers`` customers and
``min_events`` events, the ``max_types`` most frequent of them, and pools every other type
(including types first seen later, at scoring time) as ``other``. The result,
:class:`EventVocabulary`, is plain data: it travels with the segment statistics
(``features.segments.GlobalStats.vocabulary``) into the training run, so the service computes
exactly the columns the model was trained on.

Point in time: the vocabulary of a snapshot table is fitted on the events before its earliest
cutoff, so no snapshot depends on later data, not even through which columns it has; a type
that first appears later is counted in ``other`` until the next training run's vocabulary
names it.

Names: a type's slug is its name lower-cased with every run of other characters than
``[a-z0-9]`` turned into ``_`` (``"Add Contact"`` -> ``add_contact``); types with the same slug
are counted together. ``ev_`` columns never collide with the canonical feature names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.arrays import _INT64_MIN, NS_PER_DAY, _boundaries, _buckets, _pair_counts, _safe_ratio
from features.config import VocabularyParams

__all__ = [
    "OTHER",
    "EventVocabulary",
    "fit_vocabulary",
    "select_vocabulary",
    "slugify",
    "type_statistics",
    "vocabulary_features",
]

#: Slug of the pooled column for every type outside the vocabulary.
OTHER = "other"

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(name: object) -> str:
    """A column-safe name for an event type: ``"Add Contact!"`` -> ``add_contact``."""
    slug = _NOT_SLUG.sub("_", str(name).strip().lower()).strip("_")
    if not slug:
        return "unnamed"
    if slug[0].isdigit():
        slug = f"t_{slug}"
    return OTHER + "_type" if slug == OTHER else slug


@dataclass(frozen=True)
class EventVocabulary:
    """The event types with features of their own, and how their features are counted.

    ``members`` maps each kept export type to its slug; ``slugs`` lists the kept slugs in
    column order (most events first); ``amount_slugs`` those whose events carry amounts.
    ``windows_days``, ``count_weight`` and ``ratios`` (slug pairs) are copied from the
    ``VocabularyParams`` at fit time, so the columns depend on the fitted vocabulary alone.
    """

    slugs: tuple[str, ...]
    members: dict[str, str] = field(default_factory=dict)
    amount_slugs: tuple[str, ...] = ()
    windows_days: tuple[int, ...] = (7, 30, 90, 180)
    count_weight: str = "rows"
    ratios: tuple[tuple[str, str], ...] = ()
    pooled_types: int = 0  # types seen at fit time that went to `other`

    @property
    def columns(self) -> tuple[str, ...]:
        """Slugs that get columns: the kept ones, then ``other``."""
        return (*self.slugs, OTHER)

    def slug_of(self, event_type: object) -> str:
        """The column slug of an event type (``other`` for any type outside the vocabulary)."""
        return self.members.get(str(event_type), OTHER)

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["ratios"] = [list(pair) for pair in self.ratios]
        payload["slugs"] = list(self.slugs)
        payload["amount_slugs"] = list(self.amount_slugs)
        payload["windows_days"] = list(self.windows_days)
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> EventVocabulary:
        known = set(cls.__dataclass_fields__)
        unknown = set(payload) - known
        if unknown:
            raise ValueError(f"unknown EventVocabulary keys {sorted(unknown)}")
        values = dict(payload)
        values["slugs"] = tuple(str(s) for s in values["slugs"])
        values["members"] = {str(k): str(v) for k, v in values.get("members", {}).items()}
        values["amount_slugs"] = tuple(str(s) for s in values.get("amount_slugs", ()))
        values["windows_days"] = tuple(int(w) for w in values.get("windows_days", ()))
        values["ratios"] = tuple((str(a), str(b)) for a, b in values.get("ratios", ()))
        vocabulary = cls(**values)
        if OTHER in vocabulary.slugs or len(set(vocabulary.slugs)) != len(vocabulary.slugs):
            raise ValueError("EventVocabulary slugs must be distinct and must not be 'other'")
        if set(vocabulary.members.values()) - set(vocabulary.slugs):
            raise ValueError("EventVocabulary members map to slugs it does not keep")
        return vocabulary


def type_statistics(events: pd.DataFrame, before: object | None = None) -> pd.DataFrame:
    """Per event type before ``before``: ``events`` (rows), ``customers`` and ``priced`` rows.

    Indexed by ``event_type`` (str). ``priced`` counts rows with a non-missing ``amount``.
    """
    frame = events
    if before is not None:
        frame = events.loc[events["timestamp"] < pd.Timestamp(before)]
    types = frame["event_type"].astype(str)
    grouped = pd.DataFrame(
        {
            "event_type": types.to_numpy(),
            "customer_id": frame["customer_id"].astype(str).to_numpy(),
            "priced": (
                frame["amount"].notna().to_numpy()
                if "amount" in frame.columns
                else np.zeros(len(frame), dtype=bool)
            ),
        }
    ).groupby("event_type", sort=True)
    return pd.DataFrame(
        {
            "events": grouped.size(),
            "customers": grouped["customer_id"].nunique(),
            "priced": grouped["priced"].sum(),
        }
    ).astype(np.int64)


def select_vocabulary(statistics: pd.DataFrame, params: VocabularyParams) -> EventVocabulary:
    """The vocabulary from per-type statistics (:func:`type_statistics`, or Spark's equivalent).

    Types are grouped by slug first (so ``Like`` and ``like`` count together), then kept when
    the group has at least ``min_customers`` customers (the largest member's count: a lower
    bound of the distinct customers) and ``min_events`` events; the ``max_types`` largest
    groups stay, ties by slug. A slug keeps amounts when at least 1% of its rows are priced.
    """
    if statistics.empty:
        return _vocabulary((), {}, (), params, pooled=0)
    table = statistics.copy()
    table["slug"] = [slugify(t) for t in table.index]
    by_slug = table.groupby("slug", sort=True).agg(
        events=("events", "sum"), customers=("customers", "max"), priced=("priced", "sum")
    )
    supported = by_slug[
        (by_slug["customers"] >= params.min_customers) & (by_slug["events"] >= params.min_events)
    ]
    ordered = sorted(supported.index, key=lambda s: (-int(supported.at[s, "events"]), s))
    kept = tuple(ordered[: params.max_types])
    members = {str(t): s for t, s in zip(table.index, table["slug"], strict=True) if s in kept}
    amounts = tuple(s for s in kept if by_slug.at[s, "priced"] >= 0.01 * by_slug.at[s, "events"])
    pooled = int(np.count_nonzero(~table["slug"].isin(kept)))
    return _vocabulary(kept, members, amounts, params, pooled=pooled)


def _vocabulary(
    slugs: Sequence[str],
    members: dict[str, str],
    amounts: Sequence[str],
    params: VocabularyParams,
    *,
    pooled: int,
) -> EventVocabulary:
    ratios = tuple(
        (slugify(a), slugify(b))
        for a, b in params.ratios
        if slugify(a) in (*slugs, OTHER) and slugify(b) in (*slugs, OTHER)
    )
    return EventVocabulary(
        slugs=tuple(slugs),
        members=members,
        amount_slugs=tuple(amounts),
        windows_days=tuple(sorted({int(w) for w in params.windows_days})),
        count_weight=params.count_weight,
        ratios=ratios,
        pooled_types=pooled,
    )


def fit_vocabulary(
    events: pd.DataFrame, before: object | None, params: VocabularyParams
) -> EventVocabulary | None:
    """The vocabulary of the events before ``before``; None when ``params.enabled`` is off."""
    if not params.enabled:
        return None
    return select_vocabulary(type_statistics(events, before), params)


# --------------------------------------------------------------------------------------------
# the features (part of phase 1: pure per customer)
# --------------------------------------------------------------------------------------------


def _event_weights(events: pd.DataFrame, count_weight: str) -> np.ndarray | None:
    """Events per row: None (one each) or ``quantity`` (missing or negative -> 1)."""
    if count_weight != "quantity" or "quantity" not in events.columns:
        return None
    quantity = events["quantity"].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(quantity) & (quantity >= 0), quantity, 1.0)


def _active_days_by_window(
    codes: np.ndarray, ts: np.ndarray, before: np.ndarray, n: int, c: int, windows: Sequence[int]
) -> dict[int, np.ndarray]:
    """Distinct calendar days with any event in each window, per customer."""
    longest = max(windows)
    day_offset = ts // NS_PER_DAY - (c // NS_PER_DAY - longest)
    rows = np.flatnonzero(before & (day_offset >= 0))
    _, present = _pair_counts(codes[rows].astype(np.int64), day_offset[rows], n, longest)
    out: dict[int, np.ndarray] = {}
    for w in windows:
        if present.ndim == 2:
            out[w] = np.count_nonzero(present[:, longest - w :], axis=1)
        else:
            recent = present[present % longest >= longest - w]
            out[w] = np.bincount(recent // longest, minlength=n)
    return out


def _exposure_trend(
    recent: np.ndarray, both: np.ndarray, tenure: np.ndarray, window: int
) -> np.ndarray:
    """log((1 + recent) / (1 + earlier)) with both windows scaled to full length by exposure.

    A customer younger than two windows has not been seen for all of the earlier window (or
    the export does not reach that far back); counting its empty days as silence would read
    every young customer as "growing" and tie the trend to the customer's age. So each count
    is divided by the days the customer was observed in its window and scaled back to the
    window's length; with less than half the earlier window observed the trend is unknown
    (NaN). Customers older than two windows get exactly the plain smoothed log-ratio.
    """
    w = float(window)
    recent_days = np.clip(tenure, 0.0, w)
    earlier_days = np.clip(tenure - w, 0.0, w)
    earlier = np.maximum(both - recent, 0.0)
    recent_full = recent * w / np.maximum(recent_days, 1.0)
    earlier_full = earlier * w / np.maximum(earlier_days, 1.0)
    trend = np.log1p(recent_full) - np.log1p(earlier_full)
    return np.where(earlier_days >= 0.5 * w, trend, np.nan)


def vocabulary_features(
    events: pd.DataFrame,
    *,
    codes: np.ndarray,
    ts: np.ndarray,
    type_codes: np.ndarray,
    type_labels: np.ndarray,
    n: int,
    cutoff_ns: int,
    tenure_days: np.ndarray,
    vocabulary: EventVocabulary,
    trend_window_days: int,
    seats: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The ``ev_*``, ``ratio_*`` and ``active_days_<w>d`` columns of every customer position.

    ``codes`` are the customer positions of the events (``0..n-1``), ``type_codes`` /
    ``type_labels`` the encoded event types, ``tenure_days`` per position (NaN without
    history). Rates divide by the exposure in the window, ``min(w, tenure)`` days (at least
    one day), so a customer who joined 10 days ago is not read as a slow one. Only events
    before ``cutoff_ns`` are read.
    """
    windows = tuple(sorted({int(w) for w in vocabulary.windows_days}))
    trend = int(trend_window_days)
    boundaries = _boundaries(windows, (trend, 2 * trend))
    bucket = _buckets(ts, cutoff_ns, boundaries)
    nb = len(boundaries) + 2
    before = bucket > 0
    weights = _event_weights(events, vocabulary.count_weight)
    slot_of_label = np.array(
        [vocabulary.columns.index(vocabulary.slug_of(t)) for t in type_labels], dtype=np.int16
    )
    slot = slot_of_label[type_codes] if slot_of_label.size else np.zeros(ts.size, np.int16)
    key = codes.astype(np.int64) * nb + bucket
    amount = (
        events["amount"].to_numpy(dtype=np.float64, na_value=np.nan)
        if "amount" in events.columns
        else None
    )
    tenure = np.where(np.isnan(tenure_days), np.inf, tenure_days)

    def within(values: np.ndarray) -> np.ndarray:
        """Per customer, the sum within each boundary's window (last column: lifetime)."""
        return np.cumsum(values.reshape(n, nb)[:, 1:], axis=1)

    col = {d: i for i, d in enumerate(boundaries)}
    life = len(boundaries)
    active = _active_days_by_window(codes, ts, before, n, cutoff_ns, windows)
    total_all = within(
        np.bincount(key, weights=weights, minlength=n * nb).astype(np.float64, copy=False)
    )
    out: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for index, name in enumerate(vocabulary.columns):
        rows = np.flatnonzero(slot == index)
        row_weights = None if weights is None else weights[rows]
        count = within(
            np.bincount(key[rows], weights=row_weights, minlength=n * nb).astype(np.float64)
        )
        counts[name] = count
        prefix = f"ev_{name}"
        for w in windows:
            out[f"{prefix}_{w}d"] = count[:, col[w]]
        out[f"{prefix}_total"] = count[:, life]
        for w in windows:
            exposure = np.maximum(np.minimum(float(w), tenure), 1.0)
            out[f"{prefix}_per_day_{w}d"] = count[:, col[w]] / exposure
        out[f"{prefix}_per_day_total"] = np.where(
            np.isfinite(tenure), count[:, life] / np.maximum(tenure, 1.0), 0.0
        )
        for w in windows:
            out[f"{prefix}_per_active_day_{w}d"] = _safe_ratio(count[:, col[w]], active[w])
        last = np.full(n, _INT64_MIN)
        kept = rows[before[rows]]
        np.maximum.at(last, codes[kept], ts[kept])
        out[f"{prefix}_days_since_last"] = np.where(
            last > _INT64_MIN, (cutoff_ns - last) / NS_PER_DAY, np.nan
        )
        out[f"{prefix}_trend_{trend}d"] = _exposure_trend(
            count[:, col[trend]], count[:, col[2 * trend]], tenure, trend
        )
        longest = windows[-1]
        out[f"{prefix}_share_{longest}d"] = _safe_ratio(
            count[:, col[longest]], total_all[:, col[longest]]
        )
        if amount is not None and name in vocabulary.amount_slugs:
            priced = rows[np.isfinite(amount[rows])]
            spent = within(
                np.bincount(key[priced], weights=amount[priced], minlength=n * nb).astype(
                    np.float64
                )
            )
            for w in windows:
                out[f"{prefix}_amount_{w}d"] = spent[:, col[w]]
            out[f"{prefix}_amount_total"] = spent[:, life]
        if seats is not None:
            for w in windows:
                out[f"{prefix}_per_seat_{w}d"] = _safe_ratio(count[:, col[w]], seats)
    for numerator, denominator in vocabulary.ratios:
        for w in windows:
            out[f"ratio_{numerator}_per_{denominator}_{w}d"] = _safe_ratio(
                counts[numerator][:, col[w]], counts[denominator][:, col[w]]
            )
    for w in windows:
        out[f"active_days_{w}d"] = active[w]
    return out
