"""The retention report's pure parts: its analyses on hand-made data, and the page they make.

The report's flow (``pipelines.report``) and the page drawn by a real browser are tested in
``tests/pipelines/test_report.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from features.config import LabelParams
from reporting.analyses import (
    CohortRetention,
    action_legend,
    backtest_top_fraction,
    behaviour_deciles,
    churn_rate_over_time,
    co_purchase_shares,
    cohort_retention,
    cross_sell_summary,
    month_starts,
    segment_summary,
    top_at_risk,
    top_share,
    value_concentration,
)
from reporting.page import RetentionReportData, render_retention_report


def _events(rows):
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["amount"] = np.where(frame["event_type"] == "purchase", 10.0, np.nan)
    return frame


# --------------------------------------------------------------------------------------------
# analyses
# --------------------------------------------------------------------------------------------


def test_value_concentration_and_the_share_of_the_top_20_percent():
    assert top_share([100, 0, 0, 0, 0], 0.2) == pytest.approx(1.0)
    assert top_share([5] * 10, 0.2) == pytest.approx(0.2)
    curve = value_concentration([3, 1, 0, np.nan])
    assert curve["value_share"].tolist() == pytest.approx([0, 0.75, 1, 1, 1])
    assert curve["customer_share"].iloc[-1] == 1.0


def test_month_starts():
    assert month_starts("2024-01-15", "2024-04-01") == [
        pd.Timestamp("2024-02-01"),
        pd.Timestamp("2024-03-01"),
        pd.Timestamp("2024-04-01"),
    ]


def test_churn_rate_over_time_uses_the_training_label_definition():
    params = LabelParams(horizon_days=30, active_window_days=30)
    events = _events(
        [
            ("a", "2024-01-15", "visit"),
            ("a", "2024-02-10", "visit"),
            ("b", "2024-01-20", "purchase"),  # silent after the cutoff: churned
            ("c", "2024-01-25", "purchase"),
            ("c", "2024-02-20", "visit"),
            ("d", "2023-11-01", "visit"),  # not active at the cutoff: not counted
            ("d", "2024-02-05", "visit"),
        ]
    )
    rates = churn_rate_over_time(
        events, params, data_end="2024-04-01", cutoffs=[pd.Timestamp("2024-02-01")]
    )
    assert rates.to_dict("records") == [
        {
            "cutoff": pd.Timestamp("2024-02-01"),
            "active_customers": 3,
            "churned": 1,
            "churn_rate": pytest.approx(1 / 3),
        }
    ]


def test_churn_rate_over_time_leaves_out_unmatured_cutoffs():
    params = LabelParams(horizon_days=30, active_window_days=30)
    events = _events([("a", "2024-01-15", "visit"), ("a", "2024-03-20", "visit")])
    rates = churn_rate_over_time(
        events, params, data_end="2024-03-21", cutoffs=[pd.Timestamp("2024-03-01")]
    )
    assert rates.empty


def test_cohort_retention_counts_active_months_and_leaves_the_future_unknown():
    params = LabelParams()
    customers = pd.DataFrame(
        {"customer_id": ["a", "b"], "signup_date": pd.to_datetime(["2024-01-03", "2024-01-20"])}
    )
    events = _events(
        [
            ("a", "2024-01-05", "visit"),
            ("a", "2024-02-07", "purchase"),
            ("b", "2024-01-21", "visit"),
            ("b", "2024-03-02", "support_ticket"),  # not a qualifying event
            ("a", "2024-03-30", "visit"),
        ]
    )
    cohorts = cohort_retention(
        events, params, data_end="2024-04-01", customers=customers, max_months=4, min_cohort_size=1
    )
    assert cohorts.sizes.to_dict() == {"2024-01": 2}
    row = cohorts.shares.loc["2024-01"]
    assert row.iloc[:3].tolist() == [1.0, 0.5, 0.5]
    assert row.iloc[3:].isna().all()  # April has not passed
    assert cohorts.average_curve().iloc[:3].tolist() == [1.0, 0.5, 0.5]


def test_behaviour_deciles_show_the_relation_and_bin_counts_by_value():
    rng = np.random.default_rng(0)
    n = 4000
    recency = rng.uniform(0, 100, n)
    complaints = rng.choice([0, 1, 2], p=[0.8, 0.15, 0.05], size=n)
    churn = (rng.random(n) < 0.05 + recency / 200 + 0.1 * complaints).astype(float)
    table = pd.DataFrame(
        {"recency_days": recency, "complaints_90d": complaints, "churn_label": churn}
    )
    deciles = behaviour_deciles(table, ["recency_days", "complaints_90d"])
    recency_rates = deciles.loc[deciles["metric"] == "recency_days", "churn_rate"].to_numpy()
    assert len(recency_rates) == 10 and recency_rates[-1] > recency_rates[0] + 0.3
    by_value = deciles.loc[deciles["metric"] == "complaints_90d"]
    assert by_value["high"].tolist() == [0, 1, 2]
    assert by_value["churn_rate"].is_monotonic_increasing


def test_backtest_of_a_perfect_ranking_catches_every_churner_in_the_top_decile():
    scored = pd.DataFrame(
        {
            "cutoff": pd.Timestamp("2025-01-01"),
            "label": [1.0] * 10 + [0.0] * 90,
            "probability": np.linspace(1, 0, 100),
        }
    )
    result = backtest_top_fraction(
        scored, fraction=0.1, roles={pd.Timestamp("2025-01-01"): "test (held out)"}
    )
    row = result.iloc[0]
    assert row["flagged"] == 10 and row["flagged_churn_rate"] == 1.0
    assert row["others_churn_rate"] == 0.0 and row["capture"] == 1.0 and row["lift"] == 10.0
    assert row["role"] == "test (held out)"


def test_segment_summary_in_crm_order_with_value_at_risk():
    table = pd.DataFrame(
        {
            "value_tier": ["D", "A", "B", "A", "C"],
            "is_active": [True, True, False, True, True],
            "value_365d": [1.0, 100.0, 10.0, 300.0, 5.0],
            "churn_label": [1.0, 0.0, np.nan, 1.0, 0.0],
        }
    )
    at_risk = pd.Series([0.5, 10.0, np.nan, 30.0, 1.0], index=table.index)
    summary = segment_summary(table, "value_tier", value_at_risk=at_risk)
    assert list(summary.index) == [
        "A: key customers (top 20%)",
        "B: major (next 30%)",
        "C: ordinary (next 30%)",
        "D: small (bottom 20%)",
    ]
    a = summary.iloc[0]
    assert a["customers"] == 2 and a["value"] == 400.0 and a["churn_rate"] == 0.5
    assert a["value_at_risk"] == 40.0 and a["value_share"] == pytest.approx(400 / 416)


def _risk_list() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rank": [2, 1, 3],
            "customer_id": ["C2", "C1", "C3"],
            "churn_probability": [0.4, 0.9, 0.2],
            "risk_band": ["high", "high", "medium"],
            "customer_value": [100.0, 500.0, 50.0],
            "expected_value_at_risk": [40.0, 450.0, 10.0],
            "value_tier": ["B", "A", "C"],
            "lifecycle_stage": ["decline", "decline", "stability"],
            "suggested_action": ["retain", "retain", "nurture"],
            "action_reason": ["call them", "call them", "follow up"],
            "reason_1": ["no activity for 60 days (raises risk)", "2 complaints", None],
            "reason_2": [None, "no visit for 40 days", None],
            "cross_sell_candidates": [
                [{"category": "books", "propensity": 0.3}],
                [{"category": "home", "propensity": 0.5}, {"category": "books", "propensity": 0.2}],
                [],
            ],
        }
    )


def test_top_at_risk_reads_like_a_call_list():
    table = top_at_risk(_risk_list(), n=2)
    assert table["Customer"].tolist() == ["C1", "C2"]
    assert table["Reasons"].tolist() == [
        "2 complaints; no visit for 40 days",
        "no activity for 60 days (raises risk)",
    ]
    assert table["Value tier"].iloc[0] == "A: key customers (top 20%)"
    assert table["Lifecycle stage"].iloc[0] == "Decline: fading away"


def test_action_legend_and_cross_sell_summary():
    legend = action_legend(_risk_list())
    assert legend.to_dict("records")[0] == {
        "Suggested action": "retain",
        "Customers": 2,
        "Why": "call them",
    }
    summary = cross_sell_summary(_risk_list())
    assert summary.set_index("category")["first_choice_for"].to_dict() == {"books": 1, "home": 1}


def test_co_purchase_shares():
    events = _events(
        [
            ("a", "2024-05-01", "purchase"),
            ("a", "2024-05-02", "purchase"),
            ("b", "2024-05-03", "purchase"),
        ]
    )
    events["category"] = ["books", "home", "books"]
    shares = co_purchase_shares(events, as_of="2024-06-01")
    assert shares.loc["home", "books"] == 1.0  # every home buyer also bought books
    assert shares.loc["books", "home"] == 0.5
    assert shares.loc["books", "books"] == 1.0 and shares.loc["home", "home"] == 0.5


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------


def _minimal_report(**changes) -> RetentionReportData:
    rng = np.random.default_rng(1)
    base = dict(
        as_of=pd.Timestamp("2025-07-01"),
        data_start=pd.Timestamp("2023-01-01"),
        n_customers=100,
        n_active=70,
        churn_over_time=pd.DataFrame(
            {
                "cutoff": pd.date_range("2024-01-01", periods=6, freq="MS"),
                "active_customers": [60, 62, 65, 66, 70, 71],
                "churned": [6, 7, 6, 8, 7, 9],
                "churn_rate": [0.1, 0.11, 0.09, 0.12, 0.1, 0.13],
            }
        ),
        cohorts=CohortRetention(
            shares=pd.DataFrame(
                [[1.0, 0.7, 0.6], [1.0, 0.8, np.nan]], index=["2025-04", "2025-05"]
            ),
            sizes=pd.Series([20, 25], index=["2025-04", "2025-05"]),
        ),
        values=pd.Series(rng.lognormal(5, 1, 100)),
        segments={},
        deciles=pd.DataFrame(),
        overall_churn_rate=0.12,
    )
    base.update(changes)
    return RetentionReportData(**base)


def test_the_page_says_what_is_missing():
    page = render_retention_report(
        _minimal_report(
            notes={"risk_list": "No risk list at out/risk_list.parquet: run `churn score`"}
        )
    )
    assert "No risk list at out/risk_list.parquet" in page
    assert "no churn champion" in page or "no champion model" in page
    assert page.count("<svg") >= 4 and "<script" not in page  # self-contained, no JavaScript
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # fetches nothing


def test_the_page_lists_the_customers_to_call_from_the_risk_list():
    page = render_retention_report(_minimal_report(risk_list=_risk_list()))
    assert page.index("C1") < page.index("C2")  # ranked
    assert "2 complaints; no visit for 40 days" in page
    assert "Offers for the top of the risk list" in page
