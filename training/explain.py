"""Per-customer explanations: SHAP contributions turned into reasons a retention team can read.

XGBoost computes exact TreeSHAP contributions (``pred_contribs=True``): for every row, one
additive share of the log-odds per feature plus the bias, summing to the raw margin. The top
contributions by size are a customer's reasons, shown with a human-readable feature name
(``recency_days`` -> "days since last activity", ``purchases_90d`` -> "purchases in the last
90 days") and the customer's value of that feature.

Feature names are parsed in one place, :func:`parse_feature_name`: the canonical lifecycle
columns (``<base>_<N>d``, ``<base>_trend``, ``days_since_last_<type>``, ``share_<type>_<N>d``)
and the columns generated from each CRM's own data (``ev_<type>_*`` per event type,
``ratio_<a>_per_<b>_<N>d``, ``attr_<name>``). ``serving.decisions`` words its reason sentences
from the same parse, so names and sentences never disagree.

Contributions explain the uncalibrated margin. Calibration is monotone, so the order of
customers and the direction of every reason carry over to the calibrated probability.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import xgboost as xgb

    from training.datasets import FeatureSpec

#: Exact column names with a hand-written description.
READABLE_NAMES: dict[str, str] = {
    "recency_days": "days since last activity",
    "tenure_days": "days since first activity",
    "customer_age_days": "days since sign-up",
    "is_active": "active in the recent window",
    "frequency": "number of repeat purchases",
    "monetary": "average purchase value",
    "avg_order_value": "average order value",
    "average_order_value": "average order value",
    "clv": "expected customer lifetime value",
    "expected_clv": "expected customer lifetime value",
    "mrr": "monthly recurring revenue",
    "plan": "subscription plan",
    "country": "country",
    "customer_type": "customer type (B2B/B2C)",
    "acquisition_channel": "acquisition channel",
    "rfm_segment": "RFM segment",
    "lifecycle_stage": "lifecycle stage",
    "value_tier": "value tier",
    "value_growth_segment": "value growth segment",
    "renewal_in_horizon": "subscription renews within the prediction horizon",
    "bill_period_months": "billing period of the subscription (months)",
    "plan_price": "price due at the next renewal",
    "seats": "seats on the subscription",
    "mrr_per_seat": "monthly recurring revenue per seat",
    "discount": "subscription discount",
}

#: Words for the measured quantity of windowed columns (``<base>_<N>d``).
BASE_WORDS: dict[str, str] = {
    "purchases": "purchases",
    "purchase_count": "purchases",
    "orders": "orders",
    "spend": "spend",
    "revenue": "revenue",
    "visits": "visits",
    "complaints": "complaints",
    "tickets": "support tickets",
    "support_tickets": "support tickets",
    "unresolved_tickets": "unresolved support tickets",
    "campaign_opens": "campaign e-mails opened",
    "campaign_clicks": "campaign e-mails clicked",
    "active_days": "days with activity",
    "distinct_categories": "distinct product categories bought",
    "categories": "distinct product categories bought",
    "quantity": "items bought",
    "events": "interactions",
}

#: (singular, plural) words of event type slugs: the canonical types and a few common export
#: types. Any other slug reads "<slug words> event(s)" (:func:`event_words`).
EVENT_WORDS: dict[str, tuple[str, str]] = {
    "visit": ("visit", "visits"),
    "purchase": ("purchase", "purchases"),
    "support_ticket": ("support ticket", "support tickets"),
    "ticket_resolved": ("resolved ticket", "resolved tickets"),
    "complaint": ("complaint", "complaints"),
    "campaign_open": ("campaign e-mail opened", "campaign e-mails opened"),
    "campaign_click": ("campaign click", "campaign clicks"),
    "subscription_change": ("subscription change", "subscription changes"),
    "like": ("like", "likes"),
    "dislike": ("dislike", "dislikes"),
    "unfriend": ("unfriend", "unfriends"),
    "comment": ("comment", "comments"),
    "login": ("login", "logins"),
    "other": ("event of another type", "events of other types"),
}

#: The naming scheme of generated feature columns, one pattern per family. Event type slugs
#: and attribute names may themselves contain ``_``: the family suffix is matched first and the
#: slug is the shortest prefix that leaves a valid suffix.
_SLUG = r"[a-z0-9_]+?"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "event_rate",
        re.compile(
            rf"^ev_(?P<subject>{_SLUG})_(?P<kind>per_active_day|per_day|per_seat)"
            r"_(?:(?P<days>\d+)d|total)$"
        ),
    ),
    ("event_trend", re.compile(rf"^ev_(?P<subject>{_SLUG})_trend_(?P<days>\d+)d$")),
    ("event_share", re.compile(rf"^ev_(?P<subject>{_SLUG})_share_(?P<days>\d+)d$")),
    (
        "event_amount",
        re.compile(rf"^ev_(?P<subject>{_SLUG})_amount_(?:(?P<days>\d+)d|total)$"),
    ),
    ("event_days_since_last", re.compile(rf"^ev_(?P<subject>{_SLUG})_days_since_last$")),
    ("event_count", re.compile(rf"^ev_(?P<subject>{_SLUG})_(?:(?P<days>\d+)d|total)$")),
    (
        "event_ratio",
        re.compile(rf"^ratio_(?P<subject>{_SLUG})_per_(?P<per>[a-z0-9_]+)_(?P<days>\d+)d$"),
    ),
    ("attribute_days", re.compile(r"^attr_(?P<subject>.+?)_days$")),
    ("attribute", re.compile(r"^attr_(?P<subject>.+)$")),
    ("days_since_last", re.compile(r"^days_since_last_(?P<subject>[a-z0-9_]+)$")),
    ("days_since", re.compile(r"^days_since_(?P<subject>[a-z0-9_]+)$")),
    ("share", re.compile(rf"^share_(?P<subject>{_SLUG})_(?P<days>\d+)d$")),
    ("trend", re.compile(rf"^(?P<subject>{_SLUG})_trend(?:_(?P<days>\d+)d)?$")),
    ("windowed", re.compile(rf"^(?P<subject>{_SLUG})_(?P<days>\d+)d$")),
    ("total", re.compile(rf"^(?P<subject>{_SLUG})_total$")),
)


@dataclass(frozen=True)
class FeatureName:
    """A generated feature column taken apart (:func:`parse_feature_name`).

    ``family`` is one of

    * ``event_count`` (``ev_<T>_<w>d``, ``ev_<T>_total``), ``event_rate`` (``ev_<T>_per_day_<w>d``
      / ``_per_day_total`` / ``_per_active_day_<w>d`` / ``_per_seat_<w>d``; ``kind`` says which),
      ``event_days_since_last``, ``event_trend``, ``event_share``, ``event_amount``
      (``ev_<T>_amount_<w>d`` / ``_total``) and ``event_ratio`` (``ratio_<A>_per_<B>_<w>d``:
      ``subject`` A, ``per`` B): the per-event-type columns of ``features.vocabulary``;
    * ``attribute`` (``attr_<name>``) and ``attribute_days`` (``attr_<name>_days``);
    * the canonical lifecycle families ``days_since_last`` (``days_since_last_<type>``),
      ``days_since`` (``days_since_<what>``), ``share`` (``share_<type>_<w>d``), ``trend``
      (``<base>_trend`` / ``<base>_trend_<w>d``), ``windowed`` (``<base>_<w>d``) and ``total``
      (``<base>_total``).

    ``subject`` is the event type slug, attribute name or measured base; ``days`` the window
    (None: lifetime or no window).
    """

    family: str
    subject: str
    days: int | None = None
    kind: str | None = None
    per: str | None = None

    @property
    def is_event(self) -> bool:
        """A per-event-type column (``ev_*`` or ``ratio_*``)."""
        return self.family.startswith("event_")


@functools.lru_cache(maxsize=65_536)
def parse_feature_name(column: str) -> FeatureName | None:
    """The family, subject and window of a generated column; None for any other name (cached:
    reasons parse the same few hundred columns for every customer)."""
    for family, pattern in _PATTERNS:
        if match := pattern.match(column):
            groups = match.groupdict()
            days = groups.get("days")
            return FeatureName(
                family=family,
                subject=groups["subject"],
                days=int(days) if days else None,
                kind=groups.get("kind"),
                per=groups.get("per"),
            )
    return None


def event_words(slug: str) -> tuple[str, str]:
    """(singular, plural) words of an event type slug: "add_contact" -> "add contact event(s)"."""
    if slug in EVENT_WORDS:
        return EVENT_WORDS[slug]
    words = slug.replace("_", " ")
    return f"{words} event", f"{words} events"


def base_words(base: str) -> str:
    """Words of the measured quantity of a canonical ``<base>_<N>d``/``_total``/trend column."""
    return BASE_WORDS.get(base, base.replace("_", " "))


def _period(days: int | None) -> str:
    return f"in the last {days} days" if days is not None else "in total"


def _event_name(parts: FeatureName) -> str:
    one, many = event_words(parts.subject)
    days = parts.days
    if parts.family == "event_count":
        return f"{many} {_period(days)}"
    if parts.family == "event_rate":
        if parts.kind == "per_active_day":
            return f"{many} per active day {_period(days)}"
        if parts.kind == "per_seat":
            return f"{many} per seat {_period(days)}"
        if days is None:
            return f"{many} per day since the first activity"
        return f"{many} per day over the last {days} days"
    if parts.family == "event_days_since_last":
        return f"days since the last {one}"
    if parts.family == "event_trend":
        return f"change in {many}: last {days} days vs the {days} days before"
    if parts.family == "event_share":
        return f"share of {many} among all interactions in the last {days} days"
    if parts.family == "event_amount":
        return f"amount of {many} {_period(days)}"
    per = event_words(parts.per or "")[0]
    return f"{many} per {per} in the last {days} days"


def readable_feature_name(column: str) -> str:
    """A short description of a feature column for people who never saw the code."""
    if column in READABLE_NAMES:
        return READABLE_NAMES[column]
    parts = parse_feature_name(column)
    if parts is None:
        if column.endswith("_days"):
            return f"{column[: -len('_days')].replace('_', ' ')} (days)"
        return column.replace("_", " ")
    subject = parts.subject.replace("_", " ")
    if parts.is_event:
        return _event_name(parts)
    if parts.family == "attribute":
        return f"customer attribute: {subject}"
    if parts.family == "attribute_days":
        return f"days since {subject}"
    if parts.family in ("days_since_last", "days_since"):
        return f"days since {column.removeprefix('days_since_').replace('_', ' ')}"
    if parts.family == "share":
        return f"share of {event_words(parts.subject)[1]} in the last {parts.days} days"
    if parts.family == "trend":
        if parts.days:
            return (
                f"change in {base_words(parts.subject)}: last {parts.days} days vs the "
                f"{parts.days} days before"
            )
        return f"trend in {base_words(parts.subject)}"
    if parts.family == "windowed":
        return f"{base_words(parts.subject)} in the last {parts.days} days"
    return f"{base_words(parts.subject)} in total"


def readable_feature_names(columns: Iterable[str]) -> dict[str, str]:
    """``readable_feature_name`` for each column."""
    return {c: readable_feature_name(c) for c in columns}


def shap_contributions(booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:
    """TreeSHAP contributions, shape (rows, features + 1); the last column is the bias."""
    import xgboost as xgb

    matrix = xgb.DMatrix(X, enable_categorical=True)
    return np.asarray(booster.predict(matrix, pred_contribs=True), dtype=np.float64)


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if pd.isna(value):
        return None
    return str(value)


def top_reasons(
    contributions: np.ndarray,
    raw_features: pd.DataFrame,
    spec: FeatureSpec,
    top_k: int,
) -> list[list[dict[str, Any]]]:
    """The ``top_k`` largest contributions (by size) of each row, as JSON-able dicts.

    Each reason: ``feature`` (column), ``label`` (readable name), ``value`` (the customer's
    value as given), ``contribution`` (log-odds share) and ``direction`` ("raises"/"lowers").
    Features contributing exactly zero are never reasons.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    features = list(spec.features)
    per_feature = contributions[:, : len(features)]
    order = np.argsort(-np.abs(per_feature), axis=1, kind="stable")[:, :top_k]
    values = raw_features[features].to_numpy(dtype=object)
    reasons: list[list[dict[str, Any]]] = []
    for row in range(per_feature.shape[0]):
        row_reasons = []
        for j in order[row]:
            contribution = float(per_feature[row, j])
            if contribution == 0.0:
                continue
            name = features[j]
            row_reasons.append(
                {
                    "feature": name,
                    "label": spec.readable_names.get(name, readable_feature_name(name)),
                    "value": _json_value(values[row, j]),
                    "contribution": contribution,
                    "direction": "raises" if contribution > 0 else "lowers",
                }
            )
        reasons.append(row_reasons)
    return reasons


def mean_abs_contributions(contributions: np.ndarray, spec: FeatureSpec) -> pd.Series:
    """Global importance: mean |SHAP| per feature, largest first, indexed by column."""
    per_feature = np.abs(contributions[:, : len(spec.features)]).mean(axis=0)
    return pd.Series(per_feature, index=list(spec.features), name="mean_abs_shap").sort_values(
        ascending=False, kind="stable"
    )
