"""Per-customer explanations: SHAP contributions turned into reasons a retention team can read.

XGBoost computes exact TreeSHAP contributions (``pred_contribs=True``): for every row, one
additive share of the log-odds per feature plus the bias, summing to the raw margin. The top
contributions by size are a customer's reasons, shown with a human-readable feature name
(``recency_days`` -> "days since last activity", ``purchases_90d`` -> "purchases in the last
90 days") and the customer's value of that feature.

Contributions explain the uncalibrated margin. Calibration is monotone, so the order of
customers and the direction of every reason carry over to the calibrated probability.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
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

_WINDOW = re.compile(r"^(?P<base>[a-z0-9_]+?)_(?P<days>\d+)d$")
_TREND = re.compile(r"^(?P<base>[a-z0-9_]+?)_trend(?:_(?P<days>\d+)d)?$")
_DAYS_SINCE = re.compile(r"^days_since_(?P<what>[a-z0-9_]+)$")


def _words(base: str) -> str:
    return BASE_WORDS.get(base, base.replace("_", " "))


def readable_feature_name(column: str) -> str:
    """A short description of a feature column for people who never saw the code."""
    if column in READABLE_NAMES:
        return READABLE_NAMES[column]
    if match := _TREND.match(column):
        base, days = _words(match["base"]), match["days"]
        if days:
            return f"change in {base}: last {days} days vs the {days} days before"
        return f"trend in {base}"
    if match := _WINDOW.match(column):
        return f"{_words(match['base'])} in the last {match['days']} days"
    if match := _DAYS_SINCE.match(column):
        return f"days since {match['what'].replace('_', ' ')}"
    if column.endswith("_days"):
        return f"{column[: -len('_days')].replace('_', ' ')} (days)"
    return column.replace("_", " ")


def readable_feature_names(columns: Iterable[str]) -> dict[str, str]:
    """``readable_feature_name`` for each column."""
    return {c: readable_feature_name(c) for c in columns}


def shap_contributions(booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
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
