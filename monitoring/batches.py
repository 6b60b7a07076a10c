"""What the monitor compares: the task's population, the cutoff's weekday, the event windows.

**Compare like with like.** The current batch is restricted to the population the model is
trained on (active customers for churn and up-sell, lapsed ones for win-back), and taken on the
reference cutoff's weekday; segment columns are computed with the champion's global statistics
(``pipelines.monitoring``), so a changed world shows up as more customers in tier A instead of
being re-normalised away.

Event-level checks (:func:`event_window`) compare the raw events of equal-length windows before
the reference cutoff and before the current one: event-type and channel mix, product mix, and
purchase amounts (also relative to each category's reference median, the like-for-like price
signal a price rise shows up in).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import LabelParams

__all__ = ["category_medians", "event_window", "same_weekday_cutoff", "task_population"]


def task_population(
    features: pd.DataFrame, task: str, label_params: LabelParams | None = None
) -> pd.DataFrame:
    """The rows a task's model is trained on: who the current batch is compared for.

    Churn (activity) and up-sell: active customers; churn (subscription): customers with a
    subscription at the cutoff; win-back: lapsed customers (history, not active).
    """
    label_params = label_params or LabelParams()
    if "is_active" not in features.columns:
        raise ValueError("the feature table lacks is_active; it cannot be split by population")
    active = features["is_active"].fillna(False).astype(bool)
    if task == "winback":
        mask = ~active
    elif task == "churn" and label_params.churn_definition == "subscription":
        if "has_subscription" not in features.columns:
            raise ValueError("subscription churn needs has_subscription in the feature table")
        mask = features["has_subscription"].fillna(0).astype(float) > 0
    elif task in ("churn", "upsell"):
        mask = active
    else:
        raise ValueError(f"unknown task {task!r}")
    return features.loc[mask.to_numpy()]


def same_weekday_cutoff(latest: object, reference: object) -> pd.Timestamp:
    """The latest day at or before ``latest`` on the weekday of ``reference``.

    Weekly rhythms (campaign mails sent on Tuesdays, quiet weekends, B2B weekdays) move
    features like ``days_since_last_campaign_open`` or ``recency_days`` by the day of the week
    alone, so the current batch is taken on the reference cutoff's weekday.
    """
    latest = pd.Timestamp(latest).normalize()
    reference = pd.Timestamp(reference).normalize()
    return latest - pd.Timedelta(days=(latest - reference).days % 7)


def category_medians(events: pd.DataFrame) -> pd.Series:
    """Median purchase amount per product category (the reference price level)."""
    purchases = events.loc[
        (events["event_type"].astype(str) == "purchase") & events["amount"].notna()
    ]
    if "category" not in purchases.columns or purchases.empty:
        return pd.Series(dtype="float64")
    amounts = purchases["amount"].astype("float64")
    medians = amounts.groupby(purchases["category"].astype(str).to_numpy()).median()
    return medians[medians > 0]


def event_window(
    events: pd.DataFrame,
    cutoff: object,
    window_days: int,
    *,
    reference_medians: pd.Series | None = None,
) -> pd.DataFrame:
    """The events of ``[cutoff - window_days, cutoff)`` as a frame of comparable columns.

    Columns: ``event_type``, ``channel``, ``purchase_category`` and ``purchase_amount`` (only
    purchases carry them, NaN otherwise) and ``purchase_amount_vs_category`` (the amount
    divided by the category's median amount in ``reference_medians``: a price index that a
    changed product mix does not move).
    """
    cutoff = pd.Timestamp(cutoff)
    start = cutoff - pd.Timedelta(days=window_days)
    timestamps = events["timestamp"]
    window = events.loc[(timestamps >= start) & (timestamps < cutoff)]
    is_purchase = window["event_type"].astype(str).to_numpy() == "purchase"
    frame = pd.DataFrame(
        {"event_type": window["event_type"].astype(str).to_numpy()}, index=range(len(window))
    )
    if "channel" in window.columns:
        channel = window["channel"].astype(object)
        frame["channel"] = channel.where(channel.notna(), None).to_numpy()
    if "category" in window.columns:
        category = window["category"].astype(object).where(window["category"].notna(), None)
        frame["purchase_category"] = np.where(is_purchase, category.to_numpy(), None)
    if "amount" in window.columns:
        amount = pd.to_numeric(window["amount"], errors="coerce").to_numpy(dtype=np.float64)
        frame["purchase_amount"] = np.where(is_purchase, amount, np.nan)
        if reference_medians is not None and "category" in window.columns:
            median = (
                window["category"].astype(str).map(reference_medians).to_numpy(dtype=np.float64)
            )
            frame["purchase_amount_vs_category"] = np.where(is_purchase, amount / median, np.nan)
    return frame
