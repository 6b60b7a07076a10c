"""The retention report's analyses: pure functions from CRM tables to the numbers it shows.

Each answers one question of the retention team (see :mod:`reporting`) from DataFrames it does
not change: churn over time (:func:`churn_rate_over_time`), cohort retention
(:func:`cohort_retention`), value concentration (:func:`value_concentration`,
:func:`top_share`), segments (:func:`segment_summary`, :func:`segment_summaries`), behaviours
(:func:`behaviour_deciles`), the backtest of earlier risk lists (:func:`backtest_top_fraction`,
:func:`backtest_champion`), and the risk list in words (:func:`top_at_risk`,
:func:`action_legend`, :func:`cross_sell_summary`, :func:`co_purchase_shares`). A model enters
only as a scoring function passed in, so nothing here loads one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.config import LabelParams
from features.segments import LIFECYCLE_STAGES, VALUE_TIERS

__all__ = [
    "KEY_BEHAVIOUR_METRICS",
    "SEGMENT_COLUMNS",
    "SEGMENT_LABELS",
    "SEGMENT_ORDER",
    "SEGMENT_TITLES",
    "CohortRetention",
    "action_legend",
    "active_population",
    "active_rows",
    "backtest_champion",
    "backtest_top_fraction",
    "behaviour_deciles",
    "churn_rate_over_time",
    "co_purchase_shares",
    "cohort_retention",
    "cross_sell_summary",
    "cutoff_roles",
    "latest_matured_rows",
    "matured_rows",
    "model_value_at_risk",
    "month_starts",
    "risk_list_value_at_risk",
    "segment_label",
    "segment_summaries",
    "segment_summary",
    "signup_months",
    "top_at_risk",
    "top_share",
    "value_concentration",
]

#: A scoring function: feature rows in, one probability per row out.
Scorer = Callable[[pd.DataFrame], np.ndarray]

#: Behaviours shown as churn rate by decile (those present in the table are used).
KEY_BEHAVIOUR_METRICS: tuple[str, ...] = (
    "recency_days",
    "visits_90d",
    "purchases_90d",
    "spend_90d",
    "activity_trend",
    "active_days_90d",
    "complaints_90d",
    "unresolved_tickets",
    "support_tickets_90d",
    "campaign_click_rate_180d",
    "categories_total",
    "tenure_days",
)

#: Readable names of the CRM segments (the vocabulary of the seeds).
SEGMENT_LABELS: dict[str, dict[str, str]] = {
    "value_tier": {
        "A": "A: key customers (top 20%)",
        "B": "B: major (next 30%)",
        "C": "C: ordinary (next 30%)",
        "D": "D: small (bottom 20%)",
    },
    "lifecycle_stage": {
        "exploration": "Exploration: trying us out",
        "formation": "Formation: growing with us",
        "stability": "Stability: established",
        "decline": "Decline: fading away",
    },
    "value_growth_segment": {
        "loyal": "Loyal: secure their service",
        "fast_growing": "Fast-growing: more sales attention",
        "sleeping": "Sleeping: create a new need",
        "worth_nurturing": "Worth nurturing: active follow-up",
    },
}

#: Order segments are shown in (others follow alphabetically): tiers and stages in their own
#: order, RFM and value-growth segments from most to least valuable.
SEGMENT_ORDER: dict[str, tuple[str, ...]] = {
    "value_tier": VALUE_TIERS,
    "lifecycle_stage": LIFECYCLE_STAGES,
    "value_growth_segment": ("loyal", "fast_growing", "worth_nurturing", "sleeping"),
    "rfm_segment": (
        "champions",
        "loyal",
        "potential_loyalist",
        "new_customers",
        "promising",
        "need_attention",
        "about_to_sleep",
        "cannot_lose_them",
        "at_risk",
        "hibernating",
        "lost",
    ),
}

SEGMENT_TITLES: dict[str, str] = {
    "value_tier": "Value tier",
    "lifecycle_stage": "Lifecycle stage",
    "value_growth_segment": "Value-growth group",
    "rfm_segment": "RFM segment",
}

#: The CRM segment columns the report shows, in the order it shows them.
SEGMENT_COLUMNS: tuple[str, ...] = (
    "value_tier",
    "lifecycle_stage",
    "value_growth_segment",
    "rfm_segment",
)


def segment_label(column: str, value: Any) -> str:
    """Readable name of a segment value (``A`` -> ``A: key customers (top 20%)``)."""
    text = str(value)
    mapped = SEGMENT_LABELS.get(column, {}).get(text)
    if mapped:
        return mapped
    return text.replace("_", " ").capitalize()


# --------------------------------------------------------------------------------------------
# Churn over time
# --------------------------------------------------------------------------------------------


def month_starts(first: object, last: object) -> list[pd.Timestamp]:
    """Every first day of a month in ``[first, last]`` (both rounded to days)."""
    first, last = pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize()
    start = first if first.day == 1 else (first + pd.offsets.MonthBegin(1))
    if start > last:
        return []
    return list(pd.date_range(start, last, freq="MS"))


def active_population(
    events: pd.DataFrame, cutoff: object, label_params: LabelParams
) -> pd.DataFrame:
    """Customers with an event before ``cutoff`` and whether they are active at it.

    Active = a qualifying event (``label_params.qualifying_event_types``) in the
    ``active_window_days`` before the cutoff: the definition of the feature ``is_active``.
    """
    cutoff = pd.Timestamp(cutoff)
    before = events.loc[events["timestamp"] < cutoff]
    ids = before["customer_id"].astype(str)
    qualifying = before["event_type"].astype(str).isin(label_params.qualifying_event_types)
    recent = qualifying & (
        before["timestamp"] >= cutoff - pd.Timedelta(days=label_params.active_window_days)
    )
    active_ids = set(ids[recent.to_numpy()].unique())
    population = pd.Index(ids.unique())
    return pd.DataFrame(
        {
            "customer_id": population.to_numpy(dtype=object),
            "is_active": population.isin(list(active_ids)),
        }
    )


def churn_rate_over_time(
    events: pd.DataFrame,
    label_params: LabelParams,
    *,
    data_end: object,
    subscriptions: pd.DataFrame | None = None,
    cutoffs: Sequence[object] | None = None,
) -> pd.DataFrame:
    """Churn rate of the eligible (active) customers at each cutoff whose labels have matured.

    Default cutoffs: every month start from one active window after the first event to the
    last matured cutoff. Labels come from ``features.labels.build_labels`` (the training
    definitions). Columns: ``cutoff``, ``active_customers``, ``churned``, ``churn_rate``.
    """
    from features.labels import build_labels

    data_end = pd.Timestamp(data_end)
    span = pd.Timedelta(days=label_params.lead_days + label_params.horizon_days)
    if cutoffs is None:
        first = events["timestamp"].min() + pd.Timedelta(days=label_params.active_window_days)
        cutoffs = month_starts(first, data_end - span)
    rows = []
    for cutoff in cutoffs:
        population = active_population(events, cutoff, label_params)
        if population.empty:
            continue
        labels = build_labels(
            events,
            cutoff,
            population=population,
            subscriptions=subscriptions,
            params=label_params,
            data_end=data_end,
        )
        churn = labels["churn_label"].dropna()
        if not bool(labels["label_matured"].all()) or churn.empty:
            continue
        rows.append(
            {
                "cutoff": pd.Timestamp(cutoff),
                "active_customers": len(churn),
                "churned": int(churn.sum()),
                "churn_rate": float(churn.mean()),
            }
        )
    return pd.DataFrame(rows, columns=["cutoff", "active_customers", "churned", "churn_rate"])


# --------------------------------------------------------------------------------------------
# Cohorts
# --------------------------------------------------------------------------------------------


def _month_index(timestamps: pd.Series) -> np.ndarray:
    """Months since year 0 (``year * 12 + month - 1``): month arithmetic on plain integers."""
    return (timestamps.dt.year * 12 + timestamps.dt.month - 1).to_numpy(dtype=np.int64)


def _month_name(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def signup_months(events: pd.DataFrame, customers: pd.DataFrame | None = None) -> pd.Series:
    """Signup month (``YYYY-MM``) of each customer: ``customers.signup_date``, else the month of
    the first event (also for customers whose signup date is missing)."""
    ids = events["customer_id"].astype(str)
    first_event = events["timestamp"].groupby(ids.to_numpy()).min()
    signup = first_event
    if customers is not None and "signup_date" in customers.columns:
        dates = pd.Series(
            pd.to_datetime(customers["signup_date"]).to_numpy(),
            index=customers["customer_id"].astype(str).to_numpy(),
        )
        dates = dates[~dates.index.duplicated()].dropna()
        signup = dates.combine_first(first_event)
    signup = signup.dropna()
    return pd.Series(
        [_month_name(m) for m in _month_index(signup)], index=signup.index, name="signup_month"
    )


@dataclass(frozen=True)
class CohortRetention:
    """Share of each signup-month cohort active in each month after signup.

    ``shares``: rows = signup month, columns = months since signup (0 = the signup month), NaN
    where that month has not fully passed; ``sizes``: customers per cohort.
    """

    shares: pd.DataFrame
    sizes: pd.Series

    def average_curve(self) -> pd.Series:
        """Customer-weighted mean retention by months since signup (observed cohorts only)."""
        weights = self.shares.notna().mul(self.sizes, axis=0)
        total = (self.shares.fillna(0) * weights).sum()
        return (total / weights.sum()).where(weights.sum() > 0)


def cohort_retention(
    events: pd.DataFrame,
    label_params: LabelParams,
    *,
    data_end: object,
    customers: pd.DataFrame | None = None,
    max_months: int = 24,
    min_cohort_size: int = 10,
) -> CohortRetention:
    """Retention curves of signup-month cohorts: active = a qualifying event in that month.

    A month counts only once it has fully passed before ``data_end``; cohorts smaller than
    ``min_cohort_size`` are left out (their curves are noise).
    """
    data_end = pd.Timestamp(data_end)
    last_day = data_end - pd.Timedelta(days=1)
    last_full = last_day.year * 12 + last_day.month - 1  # month of the last observed day ...
    if (last_day + pd.Timedelta(days=1)).day != 1:
        last_full -= 1  # ... unless that month has not ended yet
    signup = signup_months(events, customers)
    signup_index = pd.Series(
        [int(m[:4]) * 12 + int(m[5:]) - 1 for m in signup], index=signup.index, dtype="int64"
    )
    qualifying = events.loc[
        events["event_type"].astype(str).isin(label_params.qualifying_event_types)
    ]
    activity = pd.DataFrame(
        {
            "customer_id": qualifying["customer_id"].astype(str).to_numpy(),
            "month": _month_index(qualifying["timestamp"]),
        }
    ).drop_duplicates()
    activity["cohort"] = activity["customer_id"].map(signup_index)
    activity = activity.dropna(subset=["cohort"])
    activity["months_since"] = activity["month"] - activity["cohort"].astype("int64")
    activity = activity.loc[
        (activity["months_since"] >= 0)
        & (activity["months_since"] <= max_months)
        & (activity["month"] <= last_full)
    ]
    sizes = signup_index.value_counts().sort_index()
    sizes = sizes[(sizes >= min_cohort_size) & (sizes.index <= last_full)]
    counts = (
        activity.loc[activity["cohort"].isin(sizes.index)]
        .groupby(["cohort", "months_since"])["customer_id"]
        .nunique()
        .unstack(fill_value=0)
        .reindex(index=sizes.index, columns=range(max_months + 1), fill_value=0)
    )
    shares = counts.div(sizes, axis=0).astype("float64")
    for cohort in shares.index:  # months that have not fully passed are unknown, not zero
        shares.loc[cohort, shares.columns > last_full - cohort] = np.nan
    names = [_month_name(int(c)) for c in shares.index]
    shares.index = pd.Index(names, name="signup_month")
    sizes.index = pd.Index(names, name="signup_month")
    return CohortRetention(shares=shares, sizes=sizes.rename("customers"))


# --------------------------------------------------------------------------------------------
# Value concentration and segments
# --------------------------------------------------------------------------------------------


def value_concentration(values: Iterable[float]) -> pd.DataFrame:
    """The Pareto (Lorenz) curve: share of customers (largest first) vs share of value."""
    array = pd.to_numeric(pd.Series(list(values) if not hasattr(values, "__len__") else values),
                          errors="coerce").to_numpy(dtype=np.float64)  # fmt: skip
    array = np.clip(np.nan_to_num(array, nan=0.0, posinf=0.0), 0.0, None)
    ordered = np.sort(array)[::-1]
    total = ordered.sum()
    n = ordered.size
    customer_share = np.arange(0, n + 1) / max(n, 1)
    value_share = (
        np.concatenate([[0.0], np.cumsum(ordered) / total]) if total > 0 else customer_share
    )
    return pd.DataFrame({"customer_share": customer_share, "value_share": value_share})


def top_share(values: Iterable[float], fraction: float = 0.2) -> float:
    """Share of the total value brought by the top ``fraction`` of customers."""
    curve = value_concentration(values)
    n = len(curve) - 1
    if n == 0:
        return float("nan")
    k = int(math.ceil(fraction * n - 1e-9))
    return float(curve["value_share"].iloc[k])


def segment_summary(
    table: pd.DataFrame,
    column: str,
    *,
    value_column: str = "value_365d",
    churn_label: str | None = "churn_label",
    value_at_risk: pd.Series | None = None,
) -> pd.DataFrame:
    """Per segment: customers, share active, churn rate, value and value at risk.

    ``table``: one row per customer with the segment column, ``is_active``, the value column
    and (optionally) a realised churn label (NaN where not eligible). ``value_at_risk``: the
    expected value at risk per row (churn probability x value, e.g. from the risk list);
    without it the realised churn rate x the segment's active value is shown and the column is
    named accordingly. Rows are ordered like :data:`SEGMENT_ORDER`.
    """
    if column not in table.columns:
        raise ValueError(f"segment column {column!r} is not in the table")
    frame = pd.DataFrame(
        {
            "segment": table[column].astype(object).where(table[column].notna(), "(none)"),
            "active": table["is_active"].fillna(False).astype(bool)
            if "is_active" in table.columns
            else True,
            "value": pd.to_numeric(table[value_column], errors="coerce").fillna(0.0)
            if value_column in table.columns
            else 0.0,
        },
        index=table.index,
    )
    if churn_label and churn_label in table.columns:
        frame["churn"] = pd.to_numeric(table[churn_label], errors="coerce")
    if value_at_risk is not None:
        frame["at_risk"] = pd.to_numeric(value_at_risk.reindex(table.index), errors="coerce")
    groups = frame.groupby("segment", observed=True)
    summary = pd.DataFrame(
        {
            "customers": groups.size(),
            "active_share": groups["active"].mean(),
            "value": groups["value"].sum(),
            "value_per_customer": groups["value"].mean(),
        }
    )
    summary["value_share"] = summary["value"] / max(summary["value"].sum(), 1e-12)
    if "churn" in frame.columns:
        summary["churn_rate"] = groups["churn"].mean()
        summary["churn_eligible"] = groups["churn"].count()
    if "at_risk" in frame.columns:
        summary["value_at_risk"] = groups["at_risk"].sum(min_count=1)
    elif "churn_rate" in summary.columns:
        active_value = frame.loc[frame["active"]].groupby("segment", observed=True)["value"].sum()
        summary["value_at_risk_at_past_rate"] = summary["churn_rate"].fillna(
            0
        ) * active_value.reindex(summary.index).fillna(0)
    order = SEGMENT_ORDER.get(column, ())
    rank = {name: i for i, name in enumerate(order)}
    summary = summary.loc[sorted(summary.index, key=lambda s: (rank.get(s, len(rank)), str(s)))]
    summary.index = [segment_label(column, s) for s in summary.index]
    summary.index.name = SEGMENT_TITLES.get(column, column)
    return summary


# --------------------------------------------------------------------------------------------
# Behavioural cohorts and the backtest
# --------------------------------------------------------------------------------------------


def behaviour_deciles(
    table: pd.DataFrame,
    metrics: Sequence[str] = KEY_BEHAVIOUR_METRICS,
    *,
    label_column: str = "churn_label",
    n_bins: int = 10,
) -> pd.DataFrame:
    """Churn rate by decile of each metric, among rows with a label (eligible, matured).

    Deciles with tied values merge (a metric that is 0 for 70% of customers has fewer bins);
    missing values form their own group (``decile`` = -1). Columns: ``metric``, ``decile``,
    ``low``, ``high``, ``customers``, ``churn_rate``.
    """
    labelled = table.loc[pd.to_numeric(table[label_column], errors="coerce").notna()]
    y = pd.to_numeric(labelled[label_column], errors="coerce")
    rows = []
    for metric in metrics:
        if metric not in labelled.columns:
            continue
        values = pd.to_numeric(labelled[metric], errors="coerce")
        present = values.notna()
        if present.sum() < n_bins:
            continue
        bins = _behaviour_bins(values[present], n_bins)
        grouped = pd.DataFrame({"bin": bins, "value": values[present], "y": y[present]})
        for decile, part in grouped.groupby("bin", observed=True):
            rows.append(
                {
                    "metric": metric,
                    "decile": int(decile),
                    "low": float(part["value"].min()),
                    "high": float(part["value"].max()),
                    "customers": len(part),
                    "churn_rate": float(part["y"].mean()),
                }
            )
        if (~present).any():
            rows.append(
                {
                    "metric": metric,
                    "decile": -1,
                    "low": float("nan"),
                    "high": float("nan"),
                    "customers": int((~present).sum()),
                    "churn_rate": float(y[~present].mean()),
                }
            )
    return pd.DataFrame(
        rows, columns=["metric", "decile", "low", "high", "customers", "churn_rate"]
    )


def _behaviour_bins(values: pd.Series, n_bins: int, min_rows: int = 20) -> pd.Series:
    """Decile numbers; a metric with few distinct values (complaints: 0, 1, 2) is binned by
    value instead, rare values joining the bin below, so ties do not collapse the deciles."""
    distinct = np.sort(values.unique())
    if len(distinct) > n_bins:
        return pd.qcut(values, n_bins, labels=False, duplicates="drop")
    counts = values.value_counts().reindex(distinct).to_numpy()
    bin_of_value, current, filled = {}, 0, 0
    for value, count in zip(distinct, counts, strict=True):
        if filled >= min_rows:
            current, filled = current + 1, 0
        bin_of_value[value] = current
        filled += count
    if filled < min_rows and current > 0:  # a thin last bin joins the one before
        bin_of_value = {v: min(b, current - 1) for v, b in bin_of_value.items()}
    return values.map(bin_of_value)


def backtest_top_fraction(
    scored: pd.DataFrame,
    *,
    fraction: float = 0.1,
    roles: Mapping[Any, str] | None = None,
) -> pd.DataFrame:
    """What earlier risk lists would have achieved: top ``fraction`` flagged vs realised churn.

    ``scored``: rows with ``cutoff``, ``label`` (realised 1/0) and ``probability`` (the model's
    score at that cutoff). Per cutoff: customers, flagged, churn rate among the flagged and the
    others, the share of all churners the list caught (capture) and the lift. ``roles`` names
    the cutoff's role for the model (trained on it, validation, test, after training).
    """
    from training.evaluation import top_k_count

    rows = []
    for cutoff, part in scored.groupby("cutoff", sort=True):
        part = part.loc[part["label"].notna() & part["probability"].notna()]
        if part.empty:
            continue
        y = part["label"].to_numpy(dtype=np.float64)
        order = np.argsort(-part["probability"].to_numpy(dtype=np.float64), kind="stable")
        k = top_k_count(len(part), fraction)
        flagged = np.zeros(len(part), dtype=bool)
        flagged[order[:k]] = True
        overall = float(y.mean())
        rows.append(
            {
                "cutoff": pd.Timestamp(cutoff),
                "role": (roles or {}).get(pd.Timestamp(cutoff), ""),
                "customers": len(part),
                "flagged": int(k),
                "flagged_churn_rate": float(y[flagged].mean()),
                "others_churn_rate": float(y[~flagged].mean()) if (~flagged).any() else np.nan,
                "overall_churn_rate": overall,
                "capture": float(y[flagged].sum() / y.sum()) if y.sum() else np.nan,
                "lift": float(y[flagged].mean() / overall) if overall else np.nan,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Risk list: who to call, what to offer
# --------------------------------------------------------------------------------------------


def _reason_texts(row: pd.Series) -> str:
    texts = [row.get(f"reason_{k}") for k in (1, 2, 3)]
    texts = [t for t in texts if isinstance(t, str) and t]
    if not texts and isinstance(row.get("reasons"), list):
        texts = [r.get("text", "") for r in row["reasons"] if isinstance(r, dict)]
    return "; ".join(texts)


def top_at_risk(risk_list: pd.DataFrame, n: int = 25) -> pd.DataFrame:
    """The first ``n`` rows of a risk list, in words: who, how likely, how much, why, what to do."""
    frame = risk_list
    if "rank" in frame.columns:
        frame = frame.sort_values("rank")
    elif "expected_value_at_risk" in frame.columns:
        frame = frame.sort_values("expected_value_at_risk", ascending=False)
    frame = frame.head(n)
    columns = {
        "customer_id": "Customer",
        "churn_probability": "Churn probability",
        "risk_band": "Risk band",
        "customer_value": "Value (last year)",
        "expected_value_at_risk": "Value at risk",
        "value_tier": "Value tier",
        "lifecycle_stage": "Lifecycle stage",
        "suggested_action": "Suggested action",
    }
    table = pd.DataFrame(
        {label: frame[c].to_numpy() for c, label in columns.items() if c in frame.columns}
    )
    table["Reasons"] = [_reason_texts(row) for _, row in frame.iterrows()]
    for column, title in (("value_tier", "Value tier"), ("lifecycle_stage", "Lifecycle stage")):
        if title in table.columns:
            table[title] = [segment_label(column, v) for v in table[title]]
    return table


def action_legend(risk_list: pd.DataFrame) -> pd.DataFrame:
    """What each suggested action in the risk list means (its rule's reason), and how often."""
    if "suggested_action" not in risk_list.columns:
        return pd.DataFrame(columns=["Suggested action", "Customers", "Why"])
    reasons = (
        risk_list["action_reason"]
        if "action_reason" in risk_list.columns
        else pd.Series("", index=risk_list.index)
    )
    frame = pd.DataFrame({"action": risk_list["suggested_action"], "why": reasons})
    legend = frame.groupby("action", dropna=False).agg(
        Customers=("why", "size"), Why=("why", lambda r: r.mode().iat[0] if len(r.dropna()) else "")
    )
    legend.index.name = "Suggested action"
    return legend.sort_values("Customers", ascending=False).reset_index()


def cross_sell_summary(risk_list: pd.DataFrame) -> pd.DataFrame:
    """Categories offered first in the risk list's cross-sell candidates: how often, how likely."""
    if "cross_sell_candidates" not in risk_list.columns:
        return pd.DataFrame(columns=["category", "first_choice_for", "mean_propensity"])
    firsts = [
        c[0]
        for c in risk_list["cross_sell_candidates"]
        if isinstance(c, list | tuple) and c and isinstance(c[0], dict)
    ]
    if not firsts:
        return pd.DataFrame(columns=["category", "first_choice_for", "mean_propensity"])
    frame = pd.DataFrame(firsts)
    summary = frame.groupby("category").agg(
        first_choice_for=("category", "size"), mean_propensity=("propensity", "mean")
    )
    return summary.sort_values("first_choice_for", ascending=False).reset_index()


def co_purchase_shares(
    events: pd.DataFrame, *, as_of: object, window_days: int = 365
) -> pd.DataFrame:
    """ "Customers who bought X also bought Y": share of X's buyers who bought Y (same window).

    Rows X, columns Y; the diagonal is each category's share of all buying customers.
    """
    as_of = pd.Timestamp(as_of)
    start = as_of - pd.Timedelta(days=window_days)
    mask = (
        (events["event_type"].astype(str) == "purchase")
        & (events["timestamp"] >= start)
        & (events["timestamp"] < as_of)
    )
    if "category" not in events.columns or not mask.any():
        return pd.DataFrame()
    purchases = events.loc[mask & events["category"].notna(), ["customer_id", "category"]]
    owned = pd.crosstab(purchases["customer_id"].astype(str), purchases["category"].astype(str)) > 0
    counts = owned.T.astype(int) @ owned.astype(int)
    buyers = np.diag(counts).astype(np.float64)
    shares = counts.div(buyers, axis=0)
    np.fill_diagonal(shares.values, buyers / max(len(owned), 1))
    return shares


# --------------------------------------------------------------------------------------------
# Putting the parts together: which rows, whose value at risk, the champion's backtest
# --------------------------------------------------------------------------------------------


def matured_rows(snapshots: pd.DataFrame) -> pd.DataFrame:
    """Snapshot rows whose label window has fully passed: the only ones with a known outcome."""
    return snapshots.loc[snapshots["label_matured"].fillna(False).astype(bool)]


def latest_matured_rows(matured: pd.DataFrame) -> pd.DataFrame:
    """The rows of the latest matured cutoff: where "the churn rate now" is measured."""
    if not len(matured):
        return matured
    return matured.loc[matured["cutoff"] == matured["cutoff"].max()]


def active_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Customers active at the table's cutoff (``is_active``), the ones who can churn."""
    return table.loc[table["is_active"].fillna(False).astype(bool)]


def cutoff_roles(info: Mapping[str, Any]) -> Callable[[pd.Timestamp], str]:
    """The role a cutoff played for the model (from its run's params)."""
    train = {pd.Timestamp(c) for c in info.get("train_cutoffs", [])}
    validation = pd.Timestamp(info["validation_cutoff"]) if info.get("validation_cutoff") else None
    test = pd.Timestamp(info["test_cutoff"]) if info.get("test_cutoff") else None

    def role(cutoff: pd.Timestamp) -> str:
        if cutoff in train:
            return "trained on"
        if validation is not None and cutoff == validation:
            return "validation"
        if test is not None and cutoff == test:
            return "test (held out)"
        if test is not None and cutoff > test:
            return "after training"
        return "before training"

    return role


def backtest_champion(
    matured: pd.DataFrame,
    score: Scorer,
    info: Mapping[str, Any],
    *,
    fraction: float = 0.1,
) -> pd.DataFrame:
    """:func:`backtest_top_fraction` of a model on every matured cutoff it can be graded on.

    ``score`` is the model's scoring function and ``info`` its run's split (``train_cutoffs``,
    ``validation_cutoff``, ``test_cutoff``), so each cutoff is labelled with the role it played:
    the cutoffs the model learnt from flatter it, the test cutoff and later ones do not.
    """
    eligible = matured.loc[matured["churn_label"].notna()]
    scored = pd.DataFrame(
        {
            "cutoff": eligible["cutoff"].to_numpy(),
            "label": eligible["churn_label"].to_numpy(dtype=np.float64),
            "probability": score(eligible) if len(eligible) else np.array([]),
        }
    )
    role = cutoff_roles(info)
    roles = {pd.Timestamp(c): role(pd.Timestamp(c)) for c in scored["cutoff"].unique()}
    return backtest_top_fraction(scored, fraction=fraction, roles=roles)


def model_value_at_risk(active_today: pd.DataFrame, score: Scorer) -> pd.Series:
    """Churn probability x a year's value (``value_365d``) of each active customer, by row.

    What the report shows when there is a model but no risk list from ``churn score`` yet.
    """
    values = pd.to_numeric(active_today.get("value_365d"), errors="coerce").fillna(0.0)
    return pd.Series(score(active_today) * values.to_numpy(), index=active_today.index)


def risk_list_value_at_risk(risk_list: pd.DataFrame, today: pd.DataFrame) -> pd.Series:
    """The risk list's ``expected_value_at_risk`` of each row of ``today`` (NaN when unlisted).

    Matched on ``customer_id`` as text; a customer listed twice counts once (the first row).
    """
    by_customer = risk_list.set_index(risk_list["customer_id"].astype(str))[
        "expected_value_at_risk"
    ]
    by_customer = by_customer[~by_customer.index.duplicated()]
    return pd.Series(
        today["customer_id"].astype(str).map(by_customer).to_numpy(dtype=np.float64),
        index=today.index,
    )


def segment_summaries(
    today: pd.DataFrame,
    latest: pd.DataFrame,
    *,
    value_at_risk: pd.Series | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`segment_summary` of every segment column of ``today`` (:data:`SEGMENT_COLUMNS`).

    Segments are today's; the churn rate is the realised one of the latest matured cutoff
    (``latest``), joined on ``customer_id``: today's segment, last cutoff's outcome.
    """
    latest_labels = None
    if len(latest):
        latest_labels = latest.set_index(latest["customer_id"].astype(str))["churn_label"]
    segment_table = today.assign(
        churn_label=(
            today["customer_id"].astype(str).map(latest_labels).to_numpy(dtype=np.float64)
            if latest_labels is not None
            else np.nan
        )
    )
    return {
        column: segment_summary(
            segment_table, column, churn_label="churn_label", value_at_risk=value_at_risk
        )
        for column in SEGMENT_COLUMNS
        if column in segment_table.columns
    }
