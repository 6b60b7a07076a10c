"""The retention report: one self-contained HTML page a retention team reads, charts first.

What the page answers, in the CRM vocabulary of the background reading (``../shared/seeds``:
value tiers A-D with the 20/30/30/20 split, lifecycle stages exploration -> formation ->
stability -> decline, IBM's value-growth groups, win-back):

1. How many customers do we lose, and is it getting worse? Churn rate by month.
2. How long do customers stay? Retention curves of signup-month cohorts.
3. Who carries the business? The Pareto curve of value: the share of revenue the top 20% bring.
4. Where is the value at risk? RFM segments, value tiers, lifecycle stages and value-growth
   groups with their churn rate and value at risk.
5. Which behaviours go with churn? Churn rate by decile of each key metric.
6. Would the model's earlier risk lists have worked? A backtest: the champion scores the earlier
   matured snapshot cutoffs and its top decile is compared with what happened.
7. Whom to call this week, why, and what to offer: the top at-risk customers with reasons and
   suggested actions, and cross-sell candidates (from the risk list ``churn score`` writes).

Analyses are pure functions of DataFrames (``churn_rate_over_time``, ``cohort_retention``,
``value_concentration``, ``segment_summary``, ``behaviour_deciles``, ``backtest_top_fraction``,
...), charts are functions returning matplotlib figures (``plot_*``), so the exploration
notebook (``notebooks/02_exploration.ipynb``) shows exactly what the report shows.
:func:`render_retention_report` turns a :class:`RetentionReportData` into HTML with the charts
inlined as SVG; :func:`run_report` is the I/O edge (data, champion model, risk list, file).
"""

from __future__ import annotations

import html
import io
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.config import LabelParams
from features.segments import LIFECYCLE_STAGES, VALUE_TIERS

logger = logging.getLogger(__name__)

__all__ = [
    "KEY_BEHAVIOUR_METRICS",
    "action_legend",
    "CohortRetention",
    "RetentionReportData",
    "active_population",
    "backtest_top_fraction",
    "behaviour_deciles",
    "build_report_data",
    "champion_scorer",
    "churn_rate_over_time",
    "co_purchase_shares",
    "cohort_retention",
    "cross_sell_summary",
    "cutoff_roles",
    "figure_svg",
    "month_starts",
    "plot_backtest",
    "plot_behaviour_deciles",
    "plot_churn_over_time",
    "plot_cohort_curves",
    "plot_cohort_heatmap",
    "plot_co_purchase",
    "plot_pareto",
    "plot_segments",
    "render_retention_report",
    "run_report",
    "segment_summary",
    "signup_months",
    "top_at_risk",
    "top_share",
    "value_concentration",
]

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

# Colours: one accent for "bad" (churn), one for value, greys for context.
_RED = "#c0392b"
_BLUE = "#2c6fbb"
_GREY = "#8a94a6"
_GREEN = "#2f7d4f"


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
# Charts (matplotlib figures; the report inlines them as SVG, the notebook shows them)
# --------------------------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 3.6):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure


def _style(ax, *, percent_y: bool = False) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e4e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    if percent_y:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def plot_churn_over_time(rates: pd.DataFrame):
    """Monthly churn rate (line) over the number of active customers (bars)."""
    figure = _figure()
    ax = figure.add_subplot()
    if rates.empty:
        ax.text(0.5, 0.5, "no matured cutoff yet", ha="center", va="center")
        ax.set_axis_off()
        return figure
    x = pd.to_datetime(rates["cutoff"])
    bars = ax.twinx()
    bars.bar(x, rates["active_customers"], width=20, color="#dfe6ee", zorder=0)
    bars.set_ylabel("active customers", color=_GREY)
    bars.tick_params(axis="y", colors=_GREY)
    bars.spines[["top"]].set_visible(False)
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(x, rates["churn_rate"], color=_RED, marker="o", linewidth=2)
    ax.set_ylabel("churn rate in the next horizon")
    ax.set_ylim(0, max(0.05, float(rates["churn_rate"].max()) * 1.25))
    ax.set_title("Share of active customers who churned, by month", loc="left")
    _style(ax, percent_y=True)
    return figure


def plot_cohort_heatmap(cohorts: CohortRetention, max_cohorts: int = 30):
    """Cohort table: share of each signup month active N months later."""
    shares = cohorts.shares.tail(max_cohorts)
    figure = _figure(9.0, max(3.0, 0.22 * len(shares) + 1.2))
    ax = figure.add_subplot()
    if shares.empty:
        ax.text(0.5, 0.5, "no cohort with a full month yet", ha="center", va="center")
        ax.set_axis_off()
        return figure
    image = ax.imshow(
        shares.to_numpy(dtype=np.float64), aspect="auto", cmap="Blues", vmin=0, vmax=1
    )
    ax.set_yticks(range(len(shares)), [f"{c} ({cohorts.sizes[c]:,})" for c in shares.index])
    ax.set_xticks(range(0, shares.shape[1], 3))
    ax.set_xlabel("months since signup")
    ax.set_title("Signup cohorts: share active each month (customers per cohort)", loc="left")
    ax.tick_params(axis="y", labelsize=7)
    from matplotlib.ticker import PercentFormatter

    colorbar = figure.colorbar(image, ax=ax, fraction=0.03)
    colorbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return figure


def plot_cohort_curves(cohorts: CohortRetention):
    """Retention curves of signup quarters, with the customer-weighted average."""
    figure = _figure()
    ax = figure.add_subplot()
    shares = cohorts.shares
    if shares.empty:
        ax.text(0.5, 0.5, "no cohort with a full month yet", ha="center", va="center")
        ax.set_axis_off()
        return figure
    quarters = pd.PeriodIndex(shares.index, freq="M").asfreq("Q")
    weights = cohorts.sizes.reindex(shares.index).to_numpy(dtype=np.float64)
    import matplotlib

    colours = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.9, len(set(quarters))))
    for colour, quarter in zip(colours, sorted(set(quarters)), strict=False):
        rows = quarters == quarter
        part = shares.loc[rows]
        w = weights[rows]
        known = part.notna()
        curve = (part.fillna(0).mul(w, axis=0)).sum() / known.mul(w, axis=0).sum()
        curve = curve[known.any()]
        ax.plot(curve.index, curve.to_numpy(), color=colour, linewidth=1.2, label=str(quarter))
    average = cohorts.average_curve().dropna()
    ax.plot(average.index, average.to_numpy(), color="black", linewidth=2.5, label="all cohorts")
    ax.set_xlabel("months since signup")
    ax.set_ylabel("share of the cohort active")
    ax.set_ylim(0, 1.02)
    ax.set_title("Retention curves by signup quarter", loc="left")
    ax.legend(ncol=2, fontsize=7, frameon=False, loc="upper right")
    _style(ax, percent_y=True)
    return figure


def plot_pareto(curve: pd.DataFrame, *, fraction: float = 0.2):
    """The Pareto curve of value, the top ``fraction`` marked."""
    figure = _figure(6.0, 4.2)
    ax = figure.add_subplot()
    ax.plot(curve["customer_share"], curve["value_share"], color=_BLUE, linewidth=2.2)
    ax.plot([0, 1], [0, 1], color=_GREY, linestyle="--", linewidth=1, label="every customer equal")
    share = float(np.interp(fraction, curve["customer_share"], curve["value_share"]))
    ax.axvline(fraction, color=_RED, linewidth=1, linestyle=":")
    ax.scatter([fraction], [share], color=_RED, zorder=3)
    ax.annotate(
        f"top {fraction:.0%} of customers\nbring {share:.0%} of the value",
        (fraction, share),
        xytext=(fraction + 0.08, share - 0.2),
        arrowprops={"arrowstyle": "->", "color": _RED},
    )
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("customers, most valuable first")
    ax.set_ylabel("share of the value (last 12 months)")
    ax.set_title("Pareto curve of customer value", loc="left")
    ax.legend(frameon=False, loc="lower right")
    _style(ax, percent_y=True)
    return figure


def plot_segments(summary: pd.DataFrame, *, title: str | None = None):
    """Churn rate and value at risk per segment, side by side."""
    figure = _figure(9.0, max(2.6, 0.38 * len(summary) + 1.2))
    left, right = figure.subplots(1, 2, sharey=True)
    labels = [str(i) for i in summary.index][::-1]
    if "churn_rate" in summary.columns:
        left.barh(labels, summary["churn_rate"].to_numpy()[::-1], color=_RED)
        from matplotlib.ticker import PercentFormatter

        left.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        left.set_title("churn rate (last matured cutoff)", loc="left", fontsize=10)
    risk_column = next(
        (c for c in ("value_at_risk", "value_at_risk_at_past_rate") if c in summary.columns), None
    )
    if risk_column is not None:
        right.barh(labels, summary[risk_column].fillna(0).to_numpy()[::-1], color=_BLUE)
        right.set_title(
            "expected value at risk"
            if risk_column == "value_at_risk"
            else "value at risk at the past churn rate",
            loc="left",
            fontsize=10,
        )
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x", color="#e4e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
    if title:
        figure.suptitle(title, x=0.01, ha="left", fontsize=12)
    return figure


def plot_behaviour_deciles(deciles: pd.DataFrame, *, overall_rate: float | None = None):
    """Small multiples: churn rate by decile of each behaviour."""
    from training.explain import readable_feature_name

    metrics = list(dict.fromkeys(deciles["metric"]))
    n_cols = 3
    n_rows = max(1, math.ceil(len(metrics) / n_cols))
    figure = _figure(10.0, 2.3 * n_rows + 0.6)
    axes = np.atleast_1d(figure.subplots(n_rows, n_cols, squeeze=False)).ravel()
    top = float(deciles["churn_rate"].max()) if len(deciles) else 1.0
    for ax, metric in zip(axes, metrics, strict=False):
        part = deciles.loc[(deciles["metric"] == metric) & (deciles["decile"] >= 0)]
        ax.bar(range(len(part)), part["churn_rate"], color=_RED, width=0.8)
        ax.set_xticks(
            range(len(part)),
            [_short_number(v) for v in part["high"]],
            fontsize=6,
            rotation=45,
        )
        ax.set_title(readable_feature_name(metric), fontsize=8, loc="left", wrap=True)
        ax.set_ylim(0, max(top * 1.1, 0.01))
        if overall_rate is not None:
            ax.axhline(overall_rate, color=_GREY, linewidth=0.8, linestyle="--")
        _style(ax, percent_y=True)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    figure.suptitle(
        "Churn rate by decile of each behaviour (x: upper end of the decile; dashed: overall)",
        x=0.01,
        ha="left",
        fontsize=11,
    )
    return figure


def _short_number(value: float) -> str:
    if not np.isfinite(value):
        return ""
    if abs(value) >= 1000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 10 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.2f}"


def plot_backtest(backtest: pd.DataFrame, *, fraction: float = 0.1):
    """Churn among the customers each earlier risk list flagged vs all the others."""
    figure = _figure()
    ax = figure.add_subplot()
    if backtest.empty:
        ax.text(0.5, 0.5, "no matured cutoff to backtest", ha="center", va="center")
        ax.set_axis_off()
        return figure
    x = np.arange(len(backtest))
    ax.bar(
        x - 0.2,
        backtest["flagged_churn_rate"],
        width=0.4,
        color=_RED,
        label=f"top {fraction:.0%} flagged",
    )
    ax.bar(x + 0.2, backtest["others_churn_rate"], width=0.4, color=_GREY, label="everyone else")
    labels = [
        f"{pd.Timestamp(c).date()}\n{role}" if role else str(pd.Timestamp(c).date())
        for c, role in zip(backtest["cutoff"], backtest["role"], strict=True)
    ]
    ax.set_xticks(x, labels, fontsize=7)
    for xi, (rate, capture) in enumerate(
        zip(backtest["flagged_churn_rate"], backtest["capture"], strict=True)
    ):
        ax.annotate(f"caught {capture:.0%}", (xi - 0.2, rate), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("realised churn rate")
    ax.set_title("Backtest: churn among the flagged customers vs the rest", loc="left")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _style(ax, percent_y=True)
    return figure


def plot_co_purchase(shares: pd.DataFrame):
    """Heatmap: share of the buyers of a category (row) who also bought another (column)."""
    figure = _figure(6.5, 5.0)
    ax = figure.add_subplot()
    if shares.empty:
        ax.text(0.5, 0.5, "no purchases with categories", ha="center", va="center")
        ax.set_axis_off()
        return figure
    image = ax.imshow(shares.to_numpy(dtype=np.float64), cmap="Greens", vmin=0, vmax=1)
    ax.set_xticks(range(shares.shape[1]), shares.columns, rotation=45, ha="right")
    ax.set_yticks(range(shares.shape[0]), shares.index)
    for i in range(shares.shape[0]):
        for j in range(shares.shape[1]):
            value = shares.iat[i, j]
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 else "black")  # fmt: skip
    ax.set_xlabel("... also bought")
    ax.set_ylabel("buyers of")
    ax.set_title("Who buys what else (diagonal: share of all buyers)", loc="left")
    from matplotlib.ticker import PercentFormatter

    colorbar = figure.colorbar(image, ax=ax, fraction=0.04)
    colorbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return figure


def figure_svg(figure) -> str:
    """The figure as an inline ``<svg>`` element (text kept as text, no XML prologue)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionReportData:
    """Everything the page shows; each part may be missing (the page then says why)."""

    as_of: pd.Timestamp
    data_start: pd.Timestamp
    n_customers: int
    n_active: int
    churn_over_time: pd.DataFrame
    cohorts: CohortRetention
    values: pd.Series  # value of each customer (last 12 months), for the Pareto curve
    segments: dict[str, pd.DataFrame]
    deciles: pd.DataFrame
    overall_churn_rate: float | None
    backtest: pd.DataFrame | None = None
    co_purchase: pd.DataFrame | None = None
    risk_list: pd.DataFrame | None = None
    risk_list_source: str = ""
    model: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    currency: str = ""
    title: str = "Customer retention report"


_PAGE_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
  color:#1f2933;background:#f5f7fa;line-height:1.45}
header{background:#1f3a5f;color:#fff;padding:22px 36px}
header h1{margin:0 0 6px;font-size:26px} header p{margin:0;opacity:.85}
nav{background:#fff;border-bottom:1px solid #e4e7eb;padding:8px 36px;font-size:14px}
nav a{margin-right:16px;color:#2c6fbb;text-decoration:none}
main{max-width:1100px;margin:0 auto;padding:12px 24px 48px}
section{background:#fff;border:1px solid #e4e7eb;border-radius:8px;margin:18px 0;padding:18px 24px}
h2{margin:0 0 6px;font-size:20px} p.lead{margin:0 0 12px;color:#52606d}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.kpi{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:12px 18px;min-width:150px}
.kpi b{display:block;font-size:24px;color:#1f3a5f} .kpi span{font-size:13px;color:#52606d}
figure{margin:8px 0} figure svg{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f5f7fa} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{background:#fff8e1;border-left:4px solid #f0b429;padding:8px 12px;font-size:14px}
footer{color:#7b8794;font-size:12px;text-align:center;padding:12px}
"""


def _format_cell(value: Any, column: str, currency: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<td class='num'></td>"
    name = column.lower()
    if isinstance(value, bool | np.bool_):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | np.integer):
        return f"<td class='num'>{int(value):,}</td>"
    if isinstance(value, float | np.floating):
        if any(k in name for k in ("rate", "share", "probability", "capture")):
            return f"<td class='num'>{value:.1%}</td>"
        if any(k in name for k in ("value", "risk", "revenue")):
            return f"<td class='num'>{currency}{value:,.0f}</td>"
        return f"<td class='num'>{value:,.2f}</td>"
    if isinstance(value, pd.Timestamp):
        return f"<td>{value.date()}</td>"
    return f"<td>{html.escape(str(value))}</td>"


_COLUMN_TITLES: dict[str, str] = {
    "customers": "Customers",
    "active_share": "Active",
    "value": "Value (12 months)",
    "value_per_customer": "Value per customer",
    "value_share": "Share of value",
    "churn_rate": "Churn rate",
    "churn_eligible": "Active at cutoff",
    "value_at_risk": "Expected value at risk",
    "value_at_risk_at_past_rate": "Value at risk (past churn rate)",
    "flagged_churn_rate": "Churn rate, flagged",
    "others_churn_rate": "Churn rate, others",
    "overall_churn_rate": "Churn rate, all",
    "capture": "Churners caught",
    "lift": "Lift",
    "flagged": "Flagged",
    "cutoff": "Cutoff",
    "role": "For the model",
    "first_choice_for": "First choice for (customers)",
    "mean_propensity": "Mean propensity",
    "category": "Category",
}


def html_table(frame: pd.DataFrame, *, index: bool = True, currency: str = "") -> str:
    """A small, formatted HTML table (rates as %, money with the currency prefix)."""
    head = "".join(
        f"<th>{html.escape(_COLUMN_TITLES.get(str(c), str(c)))}</th>"
        for c in ([frame.index.name or ""] if index else []) + list(frame.columns)
    )
    rows = []
    columns = [(str(c), frame[c].tolist()) for c in frame.columns]  # keeps each column's type
    for i, label in enumerate(frame.index):
        cells = f"<td>{html.escape(str(label))}</td>" if index else ""
        cells += "".join(_format_cell(values[i], name, currency) for name, values in columns)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _section(anchor: str, title: str, lead: str, body: str) -> str:
    return (
        f"<section id='{anchor}'><h2>{html.escape(title)}</h2>"
        f"<p class='lead'>{lead}</p>{body}</section>"
    )


def _figure_html(figure, caption: str = "") -> str:
    svg = figure_svg(figure)
    caption_html = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{caption_html}</figure>"


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def render_retention_report(data: RetentionReportData) -> str:
    """The whole page as one HTML string; charts are inline SVG, nothing is fetched."""
    currency = data.currency
    sections: list[tuple[str, str, str]] = []  # anchor, nav title, html

    # --- churn over time ---------------------------------------------------------------------
    rates = data.churn_over_time
    lead = (
        "Each point: of the customers active at the start of the month, the share who had no "
        "purchase or visit in the following label window."
    )
    body = _figure_html(plot_churn_over_time(rates))
    if not rates.empty:
        last = rates.iloc[-1]
        trend = ""
        if len(rates) >= 4:
            before = rates["churn_rate"].iloc[-4:-1].mean()
            trend = (
                f" The latest rate is {'above' if last['churn_rate'] > before else 'below'} "
                f"the three months before ({before:.1%})."
            )
        body += (
            f"<p>Latest matured month {pd.Timestamp(last['cutoff']).date()}: "
            f"{last['churn_rate']:.1%} of {int(last['active_customers']):,} active customers "
            f"churned.{html.escape(trend)}</p>"
        )
    sections.append(("churn", "Churn over time", _section("churn", "Churn over time", lead, body)))

    # --- cohorts ----------------------------------------------------------------------------
    lead = (
        "Customers grouped by the month they signed up; each cell is the share of the cohort "
        "with a purchase or visit in that month of their life with us. Steep early drops point "
        "at onboarding; later cohorts below earlier ones point at acquisition quality."
    )
    body = _figure_html(plot_cohort_curves(data.cohorts)) + _figure_html(
        plot_cohort_heatmap(data.cohorts)
    )
    curve = data.cohorts.average_curve()
    tiles = "".join(
        f"<div class='kpi'><b>{curve[month]:.0%}</b><span>active {month} month(s) after "
        "signup</span></div>"
        for month in (1, 3, 6, 12)
        if month in curve.index and np.isfinite(curve.get(month, np.nan))
    )
    body += f"<div class='kpis'>{tiles}</div>" if tiles else ""
    sections.append(("cohorts", "Cohorts", _section("cohorts", "Cohort retention", lead, body)))

    # --- value concentration ----------------------------------------------------------------
    pareto = value_concentration(data.values)
    share20 = top_share(data.values, 0.2)
    lead = (
        "Customers ranked by their value over the last 12 months (purchases plus 12 x the "
        "monthly subscription). The steeper the curve, the more the business depends on a few "
        "key accounts: those are the customers whose churn hurts most."
    )
    body = _figure_html(plot_pareto(pareto))
    if np.isfinite(share20):
        top_half = float(np.interp(0.5, pareto["customer_share"], pareto["value_share"]))
        body += (
            f"<p>The top 20% of customers bring <b>{share20:.0%}</b> of the value; "
            f"the bottom half brings {1 - top_half:.0%}.</p>"
        )
    sections.append(("value", "Value", _section("value", "Who carries the value", lead, body)))

    # --- segments ---------------------------------------------------------------------------
    lead = (
        "Churn rate: realised at the last cutoff whose labels have matured. Value at risk: "
        "churn probability x value of each active customer today (from the risk list or the "
        "champion model), summed per segment. Value tiers follow the A/B/C/D practice (top 20%, "
        "next 30%, next 30%, bottom 20% by value); lifecycle stages run exploration -> "
        "formation -> stability -> decline; value-growth groups are IBM's four."
    )
    body = ""
    for column in ("value_tier", "lifecycle_stage", "value_growth_segment", "rfm_segment"):
        summary = data.segments.get(column)
        if summary is None or summary.empty:
            continue
        title = SEGMENT_TITLES.get(column, column)
        body += f"<h3>{html.escape(title)}</h3>"
        body += _figure_html(plot_segments(summary))
        body += html_table(summary, currency=currency)
    if not body:
        body = _note("no segment columns in the feature table")
    sections.append(
        (
            "segments",
            "Segments",
            _section("segments", "Segments: churn and value at risk", lead, body),
        )
    )

    # --- behaviours -------------------------------------------------------------------------
    lead = (
        "Active customers at the last matured cutoff, split into ten equal groups by each "
        "behaviour; bars are the share of each group that churned. Rising or falling bars show "
        "which behaviours go with churn (association, not proof of cause)."
    )
    if data.deciles is not None and not data.deciles.empty:
        body = _figure_html(
            plot_behaviour_deciles(data.deciles, overall_rate=data.overall_churn_rate)
        )
    else:
        body = _note(data.notes.get("deciles", "no labelled rows for the behaviour deciles"))
    sections.append(
        (
            "behaviours",
            "Behaviours",
            _section("behaviours", "Behaviours that go with churn", lead, body),
        )
    )

    # --- backtest ---------------------------------------------------------------------------
    lead = (
        "The champion model scores each earlier snapshot cutoff whose outcome is known; the top "
        "10% by score is the risk list it would have produced. Cutoffs the model was trained "
        "or tuned on flatter it; the test cutoff and later ones are the honest check."
    )
    if data.backtest is not None and not data.backtest.empty:
        table = data.backtest.set_index("cutoff")[
            [
                "role",
                "customers",
                "flagged",
                "flagged_churn_rate",
                "others_churn_rate",
                "capture",
                "lift",
            ]
        ]
        table.index = [pd.Timestamp(c).date() for c in table.index]
        table.index.name = "Cutoff"
        body = _figure_html(plot_backtest(data.backtest)) + html_table(table, currency=currency)
    else:
        body = _note(data.notes.get("backtest", "no champion model to backtest"))
    sections.append(
        ("backtest", "Backtest", _section("backtest", "Backtest of earlier risk lists", lead, body))
    )

    # --- who to call ------------------------------------------------------------------------
    lead = (
        "From the latest risk list written by <code>churn score</code>, ranked by expected value "
        "at risk: whom to call first, why the model flags them, and the suggested action."
    )
    if data.risk_list is not None and not data.risk_list.empty:
        body = f"<p>{html.escape(data.risk_list_source)}</p>"
        body += html_table(top_at_risk(data.risk_list), index=False, currency=currency)
        legend = action_legend(data.risk_list)
        if not legend.empty:
            body += "<h3>What the suggested actions mean (whole risk list)</h3>"
            body += html_table(legend, index=False, currency=currency)
    else:
        body = _note(data.notes.get("risk_list", "no risk list found: run `churn score` first"))
    sections.append(
        ("at-risk", "At risk", _section("at-risk", "Top customers at risk", lead, body))
    )

    # --- cross-sell -------------------------------------------------------------------------
    lead = (
        "Cross-sell: categories a customer has not bought yet, most likely first (up-sell "
        "model x category popularity, from the risk list). Below, which categories the buyers "
        "of each category also buy."
    )
    body = ""
    if data.risk_list is not None and "cross_sell_candidates" in data.risk_list.columns:
        summary = cross_sell_summary(data.risk_list)
        if not summary.empty:
            body += html_table(summary.set_index("category"), currency=currency)
            with_candidates = data.risk_list.loc[
                data.risk_list["cross_sell_candidates"].map(
                    lambda c: isinstance(c, list) and bool(c)
                )
            ]
            if len(with_candidates):
                top = with_candidates.head(15)
                offers = pd.DataFrame(
                    {
                        "Customer": top["customer_id"].to_numpy(),
                        "Offer first": [c[0]["category"] for c in top["cross_sell_candidates"]],
                        "Then": [
                            ", ".join(x["category"] for x in c[1:])
                            for c in top["cross_sell_candidates"]
                        ],
                    }
                )
                body += "<h3>Offers for the top of the risk list</h3>"
                body += html_table(offers, index=False, currency=currency)
    if not body:
        default = (
            "the risk list holds no cross-sell candidates: they need an up-sell champion "
            "(`churn train --task upsell`), then `churn score` again"
            if data.risk_list is not None
            else "no cross-sell candidates: run `churn score`"
        )
        body = _note(data.notes.get("cross_sell", default))
    if data.co_purchase is not None and not data.co_purchase.empty:
        body += _figure_html(plot_co_purchase(data.co_purchase))
    sections.append(
        ("cross-sell", "Cross-sell", _section("cross-sell", "Cross-sell candidates", lead, body))
    )

    # --- page -------------------------------------------------------------------------------
    kpis = [
        (f"{data.n_customers:,}", "customers with history"),
        (f"{data.n_active:,}", "active today"),
    ]
    if data.overall_churn_rate is not None and np.isfinite(data.overall_churn_rate):
        kpis.append((f"{data.overall_churn_rate:.1%}", "churn rate, last matured cutoff"))
    if np.isfinite(share20):
        kpis.append((f"{share20:.0%}", "of value from the top 20%"))
    if data.risk_list is not None and "expected_value_at_risk" in data.risk_list.columns:
        total = float(
            pd.to_numeric(data.risk_list["expected_value_at_risk"], errors="coerce").sum()
        )
        kpis.append((f"{currency}{total:,.0f}", "expected value at risk"))
    kpi_html = "".join(
        f"<div class='kpi'><b>{v}</b><span>{html.escape(t)}</span></div>" for v, t in kpis
    )
    nav = "".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t, _ in sections)
    subtitle = f"Data {data.data_start.date()} to {(data.as_of - pd.Timedelta(days=1)).date()}" + (
        f" &middot; model {html.escape(data.model)}" if data.model else ""
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(data.title)}</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<header><h1>{html.escape(data.title)}</h1><p>{subtitle}</p></header>"
        f"<nav>{nav}</nav><main><div class='kpis'>{kpi_html}</div>"
        + "".join(s for _, _, s in sections)
        + "</main><footer>Generated by churn-crm (`churn report`). Churn = no purchase or visit "
        "in the label window after a cutoff.</footer></body></html>"
    )


# --------------------------------------------------------------------------------------------
# The I/O edge: `churn report`
# --------------------------------------------------------------------------------------------


def champion_scorer(
    cfg: Any,
) -> tuple[Callable[[pd.DataFrame], np.ndarray], dict[str, Any]] | None:
    """The churn champion as a scoring function, with its run's split; None without one."""
    import mlflow

    from training.config import configure_mlflow
    from training.registry import CHAMPION, load_probability_function

    configure_mlflow(cfg.training.mlflow)
    client = mlflow.MlflowClient()
    name = cfg.training.task("churn").registered_model_name
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    score = load_probability_function(f"models:/{name}/{version.version}")
    params = client.get_run(version.run_id).data.params
    info = {
        "description": f"{name} v{version.version}",
        "train_cutoffs": [c for c in params.get("train_cutoffs", "").split(",") if c],
        "validation_cutoff": params.get("validation_cutoff"),
        "test_cutoff": params.get("test_cutoff"),
    }
    return score, info


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


def build_report_data(
    cfg: Any,
    data: Any,
    *,
    snapshots: pd.DataFrame | None = None,
    risk_list_path: Path | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> RetentionReportData:
    """Compute every part of the report from validated data (``pipelines.flows.LoadedData``)."""
    from pipelines.flows import (
        build_training_table,
        features_as_of,
        label_span_days,
        resolve_cutoffs,
    )

    notes: dict[str, str] = {}
    as_of = data.data_end
    say(f"today's features as of {as_of.date()}")
    today, _ = features_as_of(cfg, data, as_of)
    if snapshots is None:
        cutoffs = resolve_cutoffs(cfg.cutoffs, as_of, label_span_days(cfg))
        say(f"snapshots over {', '.join(str(c.date()) for c in cutoffs)}")
        snapshots, _ = build_training_table(cfg, data=data, cutoffs=cutoffs)
    matured = snapshots.loc[snapshots["label_matured"].fillna(False).astype(bool)]
    latest = matured.loc[matured["cutoff"] == matured["cutoff"].max()] if len(matured) else matured
    overall = float(latest["churn_label"].mean()) if len(latest) else None

    say("churn over time and cohorts")
    rates = churn_rate_over_time(
        data.events, cfg.labels, data_end=as_of, subscriptions=data.subscriptions
    )
    cohorts = cohort_retention(data.events, cfg.labels, data_end=as_of, customers=data.customers)

    # --- risk list and champion -------------------------------------------------------------
    risk_list = None
    source = ""
    if risk_list_path is None:
        serving = getattr(cfg, "serving", None)
        risk_list_path = (
            serving.risk_list_location(cfg.output_dir)
            if serving is not None
            else Path(cfg.output_dir) / "risk_list.parquet"
        )
    risk_list_path = Path(risk_list_path)
    if risk_list_path.is_file():
        from serving.scoring import read_risk_list

        read = read_risk_list(risk_list_path)
        risk_list = read.frame
        source = (
            f"Risk list {risk_list_path} as of {read.as_of or 'unknown'} "
            f"({len(risk_list):,} customers)."
        )
    else:
        notes["risk_list"] = (
            f"No risk list at {risk_list_path}: run `churn score` to produce one; until then "
            "this report cannot name the customers to call."
        )
        notes["cross_sell"] = notes["risk_list"]

    champion = None
    try:
        champion = champion_scorer(cfg)
    except Exception as exc:  # the report is still useful without a model
        notes["backtest"] = f"the churn champion could not be loaded ({type(exc).__name__}: {exc})"
    model = ""
    value_at_risk = None
    backtest = None
    active_today = today.loc[today["is_active"].fillna(False).astype(bool)]
    if champion is not None:
        score, info = champion
        model = info["description"]
        say(f"backtest of {model} on {matured['cutoff'].nunique()} matured cutoffs")
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
        backtest = backtest_top_fraction(scored, fraction=0.1, roles=roles)
        if risk_list is None and len(active_today):
            values = pd.to_numeric(active_today.get("value_365d"), errors="coerce").fillna(0.0)
            value_at_risk = pd.Series(
                score(active_today) * values.to_numpy(), index=active_today.index
            )
    elif "backtest" not in notes:
        notes["backtest"] = "no churn champion in the registry: train one (`churn train`)"
    if risk_list is not None and "expected_value_at_risk" in risk_list.columns:
        by_customer = risk_list.set_index(risk_list["customer_id"].astype(str))[
            "expected_value_at_risk"
        ]
        by_customer = by_customer[~by_customer.index.duplicated()]
        value_at_risk = pd.Series(
            today["customer_id"].astype(str).map(by_customer).to_numpy(dtype=np.float64),
            index=today.index,
        )

    # --- segments and behaviours ------------------------------------------------------------
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
    segments = {}
    for column in ("value_tier", "lifecycle_stage", "value_growth_segment", "rfm_segment"):
        if column in segment_table.columns:
            segments[column] = segment_summary(
                segment_table, column, churn_label="churn_label", value_at_risk=value_at_risk
            )
    deciles = behaviour_deciles(latest) if len(latest) else pd.DataFrame()
    if deciles.empty:
        notes["deciles"] = "no matured, labelled cutoff yet for the behaviour deciles"
    values = pd.to_numeric(today.get("value_365d", pd.Series(dtype=float)), errors="coerce")
    serving = getattr(cfg, "serving", None)
    return RetentionReportData(
        as_of=as_of,
        data_start=pd.Timestamp(data.events["timestamp"].min()).normalize(),
        n_customers=len(today),
        n_active=len(active_today),
        churn_over_time=rates,
        cohorts=cohorts,
        values=values.fillna(0.0),
        segments=segments,
        deciles=deciles,
        overall_churn_rate=overall,
        backtest=backtest,
        co_purchase=co_purchase_shares(data.events, as_of=as_of),
        risk_list=risk_list,
        risk_list_source=source,
        model=model,
        notes=notes,
        currency=getattr(serving, "currency", "") if serving is not None else "",
    )


def run_report(
    cfg: Any,
    out: Path | None = None,
    *,
    risk_list_path: Path | None = None,
    data: Any = None,
    snapshots: pd.DataFrame | None = None,
    now: pd.Timestamp | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> Path:
    """Build the retention report from the configured data; write it atomically; return the path.

    ``out`` defaults to ``<output_dir>/retention_report.html``. Uses the churn champion (for the
    backtest and, without a risk list, the value at risk) when the registry has one, and the
    latest risk list of ``churn score`` when present; the page says what is missing.
    """
    from features.files import write_atomically
    from pipelines.flows import load_validated_data

    data = data or load_validated_data(cfg, now=now)
    report = build_report_data(
        cfg, data, snapshots=snapshots, risk_list_path=risk_list_path, say=say
    )
    page = render_retention_report(report)
    out = Path(out) if out is not None else Path(cfg.output_dir) / "retention_report.html"
    write_atomically(out, lambda p: p.write_text(page, encoding="utf-8"))
    say(f"retention report: {out}")
    return out
