"""What the monitor compares: the task's population, the weekday, the event windows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring.batches import category_medians, event_window, same_weekday_cutoff, task_population


def test_task_population_compares_like_with_like():
    features = pd.DataFrame({"is_active": [True, False, True], "has_subscription": [1, 1, 0]})
    from features.config import LabelParams

    assert task_population(features, "churn").index.tolist() == [0, 2]
    assert task_population(features, "winback").index.tolist() == [1]
    subscription = LabelParams(churn_definition="subscription")
    assert task_population(features, "churn", subscription).index.tolist() == [0, 1]


def test_same_weekday_cutoff():
    assert same_weekday_cutoff("2025-07-01", "2025-01-01") == pd.Timestamp("2025-06-25")
    assert same_weekday_cutoff("2025-07-01", "2025-04-01") == pd.Timestamp("2025-07-01")


def test_event_window_is_half_open_and_prices_purchases_against_the_reference():
    events = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b"],
            "timestamp": pd.to_datetime(
                ["2024-12-01 00:00", "2024-12-31 23:59", "2025-01-01 00:00", "2024-12-15 00:00"]
            ),
            "event_type": ["purchase", "purchase", "purchase", "visit"],
            "amount": [10.0, 30.0, 99.0, np.nan],
            "category": ["books", "books", "books", None],
            "channel": ["web", "app", "web", "web"],
        }
    )
    medians = category_medians(events.iloc[:2])
    window = event_window(events, "2025-01-01", 31, reference_medians=medians)
    assert len(window) == 3  # the event at the cutoff is not before it
    purchases = window.loc[window["event_type"] == "purchase"]
    assert purchases["purchase_amount_vs_category"].tolist() == [0.5, 1.5]
    assert window.loc[window["event_type"] == "visit", "purchase_amount"].isna().all()
