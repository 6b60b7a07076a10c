from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.config import BaselineRule, CampaignEconomics
from training.evaluation import (
    baseline_metrics,
    capture_at,
    choose_naive_baseline,
    contact_profit,
    customer_values,
    expected_calibration_error,
    fraction_label,
    lift_at,
    probability_metrics,
    profit_curve,
    suspicious_features,
    top_k_count,
)

Y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
PERFECT = np.linspace(1.0, 0.0, 10)


def test_lift_and_capture_on_a_perfect_ranking():
    # top 10% is 1 row (a positive): precision 1 vs base rate 0.2
    assert lift_at(Y, PERFECT, 0.1) == pytest.approx(5.0)
    assert capture_at(Y, PERFECT, 0.1) == pytest.approx(0.5)
    assert lift_at(Y, PERFECT, 0.2) == pytest.approx(5.0)
    assert capture_at(Y, PERFECT, 0.2) == pytest.approx(1.0)


def test_lift_and_capture_on_the_worst_ranking():
    assert lift_at(Y, -PERFECT, 0.2) == 0.0
    assert capture_at(Y, -PERFECT, 0.5) == 0.0


def test_top_k_count_rounds_up_and_covers_at_least_one_row():
    assert top_k_count(10, 0.05) == 1
    assert top_k_count(1000, 0.05) == 50
    assert top_k_count(999, 0.1) == 100
    assert fraction_label(0.05) == "5" and fraction_label(0.1) == "10"


def test_expected_calibration_error_on_toy_inputs():
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.1, 0.1, 0.9, 0.9])) == pytest.approx(0.1)
    # one bin holding everything: |mean p - rate| = |0.5 - 0.5|
    assert expected_calibration_error(y, np.full(4, 0.5)) == pytest.approx(0.0)
    # overconfident: p = 1 for all, rate 0.5
    assert expected_calibration_error(y, np.ones(4)) == pytest.approx(0.5)


def test_profit_curve_finds_the_best_contact_depth():
    economics = CampaignEconomics(contact_cost=1.0, offer_cost=0.0, save_rate=0.5)
    y = np.array([1, 1, 0, 1, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    # a contacted positive: 0.5 * 10 - 1 = 4; a contacted negative: -1
    curve = profit_curve(y, score, np.full(6, 10.0), economics)
    assert curve.profit.tolist() == [0.0, 4.0, 8.0, 7.0, 11.0, 10.0, 9.0]
    assert curve.best_n == 4
    assert curve.best_depth == pytest.approx(4 / 6)
    assert curve.best_profit == pytest.approx(11.0)


def test_profit_curve_contacts_nobody_when_every_contact_loses_money():
    economics = CampaignEconomics(contact_cost=100.0, offer_cost=0.0, save_rate=0.1)
    curve = profit_curve(
        np.array([1, 0, 1]), np.array([0.9, 0.5, 0.1]), np.full(3, 10.0), economics
    )
    assert curve.best_n == 0 and curve.best_profit == 0.0


def test_contact_profit_charges_the_offer_to_negatives_only_when_they_redeem_it():
    y, values = np.array([1, 0]), np.array([100.0, 100.0])
    redeem = CampaignEconomics(contact_cost=1, offer_cost=10, save_rate=0.5)
    no_redeem = redeem.model_copy(update={"negatives_redeem_offer": False})
    assert contact_profit(y, values, redeem).tolist() == [0.5 * 90 - 1, -11.0]
    assert contact_profit(y, values, no_redeem).tolist() == [0.5 * 90 - 1, -1.0]


def test_customer_values_fill_gaps_with_the_default_and_refuse_unknown_columns():
    table = pd.DataFrame({"clv": [50.0, np.nan]})
    economics = CampaignEconomics(customer_value_column="clv", default_customer_value=7.0)
    assert customer_values(table, economics).tolist() == [50.0, 7.0]
    with pytest.raises(ValueError, match="nope"):
        customer_values(table, economics.model_copy(update={"customer_value_column": "nope"}))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=20, max_size=60), st.integers(0, 10_000))
def test_capture_never_decreases_with_depth(labels, seed):
    y = np.array(labels, dtype=float)
    if y.sum() == 0:
        y[0] = 1
    score = np.random.default_rng(seed).random(len(y))
    captures = [capture_at(y, score, f) for f in (0.05, 0.1, 0.2, 0.5, 1.0)]
    assert captures == sorted(captures)
    assert captures[-1] == pytest.approx(1.0)


def test_probability_metrics_report_every_test_metric():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 500), 0.01, 0.99)
    metrics = probability_metrics(
        y,
        p,
        fractions=(0.05, 0.1, 0.2),
        ece_bins=10,
        values=np.full(500, 100.0),
        economics=CampaignEconomics(),
    )
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10", "capture_at_20"):
        assert np.isfinite(metrics[key])
    assert 0 <= metrics["profit_best_depth"] <= 1


def _rule_table(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    recency = rng.exponential(40, n)
    noise = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(recency - 40) / 10))).astype(int)
    return pd.DataFrame({"recency_days": recency, "noise": noise}), y


def test_naive_baseline_picks_the_informative_rule_and_a_threshold_on_validation():
    validation, y_val = _rule_table(seed=1)
    rules = (
        BaselineRule(column="noise"),
        BaselineRule(column="recency_days"),
        BaselineRule(column="absent_column"),
    )
    baseline = choose_naive_baseline(validation, y_val, rules)
    assert baseline is not None and baseline.rule.column == "recency_days"
    assert baseline.describe().startswith("recency_days >= ")
    test, y_test = _rule_table(seed=2)
    metrics = baseline_metrics(
        baseline,
        test,
        y_test,
        fractions=(0.1,),
        values=np.full(len(test), 100.0),
        economics=CampaignEconomics(),
    )
    assert metrics["baseline_roc_auc"] > 0.75
    flagged = test["recency_days"] >= baseline.threshold
    assert metrics["baseline_rule_contacted_share"] == pytest.approx(flagged.mean())


def test_naive_baseline_is_none_without_any_rule_column():
    validation, y_val = _rule_table()
    assert choose_naive_baseline(validation, y_val, (BaselineRule(column="x"),)) is None


def test_lower_means_positive_rules_rank_missing_values_last():
    rule = BaselineRule(column="recency_days", higher_means_positive=False)
    validation = pd.DataFrame({"recency_days": [1.0, 5.0, 50.0, np.nan]})
    baseline = choose_naive_baseline(validation, np.array([1, 1, 0, 0]), (rule,))
    assert baseline is not None
    assert baseline.validation_roc_auc == pytest.approx(1.0)
    assert baseline.describe().startswith("recency_days <= ")


def test_suspicious_features_flag_a_copy_of_the_label():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    X = pd.DataFrame({"leak": y.astype(float), "honest": rng.normal(size=300) + 0.5 * y})
    assert list(suspicious_features(X, y, 0.95)) == ["leak"]


def _scored_segments() -> pd.DataFrame:
    # segment a: 4 customers, 3 churners; b: 4 customers, 1 churner; one unlabelled row
    return pd.DataFrame(
        {
            "rfm_segment": ["a", "a", "a", "a", "b", "b", "b", "b", "b"],
            "churn_label": [1, 1, 1, 0, 1, 0, 0, 0, np.nan],
            "probability": [0.9, 0.8, 0.3, 0.2, 0.7, 0.6, 0.1, 0.05, 0.5],
        }
    )


def test_segment_lift_table_reports_rates_lift_and_the_models_top_slice():
    from training.evaluation import segment_lift_table

    table = segment_lift_table(_scored_segments(), "rfm_segment", top_fraction=0.25)
    assert list(table.index) == ["a", "b"]  # highest churn-rate lift first
    assert table.index.name == "rfm_segment"
    assert table["customers"].tolist() == [4, 4]  # the unlabelled row is left out
    assert table["rate"].tolist() == [0.75, 0.25]
    assert table["rate_lift"].tolist() == [1.5, 0.5]  # overall rate 0.5
    assert table.loc["a", "mean_score"] == pytest.approx(0.55)
    # overall top 25% = 2 rows: 0.9 and 0.8, both churners of segment a
    assert table["in_top_25_share"].tolist() == [0.5, 0.0]
    assert table["captured_in_top_25_share"].tolist() == [0.5, 0.0]
    # inside b the top 25% (one row, 0.7) is its one churner: lift 1 / 0.25
    assert table.loc["b", "model_lift_at_25"] == pytest.approx(4.0)


def test_segment_lift_table_names_missing_segments_and_checks_its_input():
    from training.evaluation import MISSING_SEGMENT, segment_lift_table

    scored = _scored_segments().assign(value_tier=["A", None, "A", "B", "B", None, "B", "A", "A"])
    table = segment_lift_table(scored, "value_tier")
    assert set(table.index) == {"A", "B", MISSING_SEGMENT}
    assert table["customers"].sum() == 8
    with pytest.raises(ValueError, match="lifecycle_stage"):
        segment_lift_table(scored, "lifecycle_stage")
    with pytest.raises(ValueError, match="non-finite"):
        segment_lift_table(scored.assign(probability=np.nan), "value_tier")
