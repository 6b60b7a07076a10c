"""Drift checks: the scores, their noise floors, and the generator's drift injection caught.

The injection tests generate a small CRM history three times with the same seed: without
drift, with a new sales channel from 2025-03-01, and with a 30% price rise from then. The
reference is the churn population's features at 2025-01-01 (the test cutoff of a model trained
then), the current batch the features at 2025-06-25 (the same weekday), segments computed with
the reference's global statistics, as the monitor does.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.drift import (
    DEFAULT_INFORMATIONAL_FEATURES,
    MonitoringConfig,
    assess_performance,
    categorical_noise_floor,
    category_medians,
    detect_drift,
    event_window,
    numeric_noise_floor,
    psi_score,
    same_weekday_cutoff,
    task_population,
    wasserstein_distance,
    wasserstein_score,
)

N_CUSTOMERS = 3000
SEED = 1
REFERENCE_CUTOFF = pd.Timestamp("2025-01-01")
CURRENT_CUTOFF = pd.Timestamp("2025-06-25")
DRIFT_START = date(2025, 3, 1)
NEW_CHANNEL = "marketplace"

#: Features a new channel shows up in, and the event column it shows up in.
CHANNEL_FEATURES = {"last_purchase_channel", "acquisition_channel"}
#: Features no drift of the generator touches (customer mix, support, campaigns, plans).
UNRELATED_FEATURES = {
    "customer_type",
    "country",
    "support_tickets_90d",
    "days_since_last_support_ticket",
    "unresolved_tickets",
    "campaign_opens_180d",
    "campaign_clicks_180d",
    "campaign_click_rate_180d",
    "has_subscription",
    "plan",
    "value_tier",
}


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------


def test_wasserstein_distance_matches_scipy():
    from scipy.stats import wasserstein_distance as scipy_distance

    rng = np.random.default_rng(0)
    u, v = rng.lognormal(size=500), rng.normal(size=300)
    assert wasserstein_distance(u, v) == pytest.approx(scipy_distance(u, v), rel=1e-12)


def test_wasserstein_score_is_a_shift_in_standard_deviations_on_the_log_scale():
    rng = np.random.default_rng(1)
    amounts = rng.lognormal(4.0, 1.0, 20_000)  # log1p(amount) ~ log(amount) for large amounts
    score = wasserstein_score(amounts, amounts * np.exp(0.5))
    assert score == pytest.approx(0.5, abs=0.03)


def test_wasserstein_score_sees_a_shift_of_everyone_that_a_few_huge_accounts_hide():
    """On the raw scale the standard deviation of heavy-tailed money is set by a few big
    accounts, and a 30% rise of every amount looks small; on the log scale it does not."""
    rng = np.random.default_rng(2)
    spend = np.concatenate([rng.lognormal(4, 0.6, 5000), rng.lognormal(10, 0.5, 20)])
    raised = spend * 1.3
    raw = wasserstein_distance(spend, raised) / np.std(spend)
    assert raw < 0.05
    assert wasserstein_score(spend, raised) > 0.3


def test_psi_is_zero_for_equal_shares_and_large_for_a_new_level():
    reference = pd.Series(["web"] * 500 + ["app"] * 300 + ["store"] * 200)
    assert psi_score(reference, reference.sample(frac=1, random_state=0)) == pytest.approx(0.0)
    current = pd.Series(["web"] * 400 + ["app"] * 250 + ["store"] * 200 + ["marketplace"] * 150)
    assert psi_score(reference, current) > 0.5


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=60),
    st.lists(st.sampled_from(["a", "b", "d", None]), min_size=1, max_size=60),
)
def test_psi_is_never_negative(reference, current):
    assert psi_score(pd.Series(reference), pd.Series(current)) >= 0.0


def _false_alarm_rate(draw, score, floor, trials=300, seed=3):
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(trials):
        reference, current = draw(rng), draw(rng)
        alarms += score(reference, current) >= floor(reference, current)
    return alarms / trials


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: rng.lognormal(3, 1, 400),  # continuous, heavy tailed
        lambda rng: rng.choice([0, 1, 2], p=[0.85, 0.1, 0.05], size=400),  # a count, mostly 0
        lambda rng: rng.choice([0.0, 1.0], p=[0.9, 0.1], size=400),  # a flag
    ],
    ids=["continuous", "count", "flag"],
)
def test_numeric_noise_floor_keeps_false_alarms_rare_on_small_samples(draw):
    rate = _false_alarm_rate(
        draw,
        wasserstein_score,
        lambda reference, current: numeric_noise_floor(reference, len(current), alpha=0.001),
    )
    assert rate <= 0.01


def test_categorical_noise_floor_keeps_false_alarms_rare_on_small_samples():
    levels, shares = ["web", "app", "store", "phone"], [0.5, 0.3, 0.15, 0.05]
    rate = _false_alarm_rate(
        lambda rng: pd.Series(rng.choice(levels, p=shares, size=300)),
        psi_score,
        lambda reference, current: categorical_noise_floor(5, len(reference), len(current)),
    )
    assert rate <= 0.01


def test_a_large_sample_alone_raises_no_alarm():
    """A 0.04-SD shift on 100,000 rows is statistically certain and practically irrelevant:
    the effect-size threshold, not a p-value, decides."""
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"spend_90d": rng.lognormal(4, 1, 100_000)})
    current = pd.DataFrame({"spend_90d": rng.lognormal(4.04, 1, 100_000)})
    from scipy.stats import ks_2samp

    assert ks_2samp(reference["spend_90d"], current["spend_90d"]).pvalue < 1e-6
    report = detect_drift(reference, current, config=MonitoringConfig())
    column = report.column("spend_90d")
    assert column.noise_floor < column.threshold  # on large samples the threshold decides
    assert not column.drifted and report.alarms == []


def test_missing_share_change_drifts_even_when_the_present_values_do_not():
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"days_to_renewal": rng.uniform(0, 30, 2000)})
    current = reference.copy()
    current.loc[current.index[:600], "days_to_renewal"] = np.nan
    column = detect_drift(reference, current, config=MonitoringConfig()).column("days_to_renewal")
    assert column.missing_drifted and column.alarm and not column.drifted


def test_a_column_empty_on_one_side_is_reported_not_scored():
    reference = pd.DataFrame({"mrr": np.linspace(0, 50, 300)})
    current = pd.DataFrame({"mrr": np.full(300, np.nan)})
    column = detect_drift(reference, current, config=MonitoringConfig()).column("mrr")
    assert column.method == "none" and "no values in the current batch" in column.note
    assert column.missing_drifted  # the missing-share check catches it


def test_informational_columns_are_scored_but_never_alarm():
    rng = np.random.default_rng(6)
    reference = pd.DataFrame({"tenure_days": rng.uniform(0, 500, 3000)})
    current = pd.DataFrame({"tenure_days": rng.uniform(0, 500, 3000) + 150})
    report = detect_drift(
        reference, current, config=MonitoringConfig(), informational=["tenure_days"]
    )
    assert report.drifted == ["tenure_days"] and report.alarms == []


def test_inputs_are_not_modified():
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"x": rng.normal(size=200), "c": ["a", None] * 100})
    current = reference.copy()
    before = (reference.copy(), current.copy())
    detect_drift(reference, current, config=MonitoringConfig())
    pd.testing.assert_frame_equal(reference, before[0])
    pd.testing.assert_frame_equal(current, before[1])


# --------------------------------------------------------------------------------------------
# populations, windows, weekdays
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# the generator's drift injection
# --------------------------------------------------------------------------------------------


def _features(crm, cutoff, stats=None):
    from features.config import FeatureParams, LabelParams
    from features.snapshots import build_features

    table, stats = build_features(
        crm.events,
        cutoff,
        customers=crm.customers,
        subscriptions=crm.subscriptions,
        params=FeatureParams(),
        stats=stats,
        label_params=LabelParams(),
    )
    return task_population(table.reset_index(), "churn"), stats


@pytest.fixture(scope="module")
def worlds():
    """Reference features, and the current batch of three worlds from the same seed."""
    from features.synthetic import DriftSpec, GeneratorParams, generate_crm_data

    def generate(drift=None):
        return generate_crm_data(GeneratorParams(n_customers=N_CUSTOMERS, seed=SEED, drift=drift))

    stable = generate()
    reference, stats = _features(stable, REFERENCE_CUTOFF)
    worlds = {
        "stable": stable,
        "new_channel": generate(DriftSpec(start=DRIFT_START, new_channel=NEW_CHANNEL)),
        "price_rise": generate(DriftSpec(start=DRIFT_START, price_increase=0.3)),
    }
    current = {name: _features(crm, CURRENT_CUTOFF, stats)[0] for name, crm in worlds.items()}
    return reference, current, worlds


def _feature_drift(reference, current):
    columns = [c for c in reference.columns if c not in ("customer_id", "cutoff")]
    return detect_drift(
        reference,
        current,
        config=MonitoringConfig(),
        columns=columns,
        informational=DEFAULT_INFORMATIONAL_FEATURES,
    )


def _event_drift(worlds, name):
    crms = worlds[2]
    stable = crms["stable"].events
    before = stable.loc[
        (stable["timestamp"] < REFERENCE_CUTOFF)
        & (stable["timestamp"] >= REFERENCE_CUTOFF - pd.Timedelta(days=90))
    ]
    medians = category_medians(before)
    reference = event_window(stable, REFERENCE_CUTOFF, 90, reference_medians=medians)
    current = event_window(crms[name].events, CURRENT_CUTOFF, 90, reference_medians=medians)
    return detect_drift(
        reference, current, config=MonitoringConfig(), missing_as_level=False, check_missing=False
    )


def test_two_batches_of_the_same_process_raise_no_alarm(worlds):
    reference, current, _ = worlds
    report = _feature_drift(reference, current["stable"])
    assert report.alarms == [], report.to_dict()["columns"][:3]
    assert _event_drift(worlds, "stable").alarms == []


def test_a_new_channel_is_flagged_in_the_channel_features_and_nowhere_else(worlds):
    reference, current, _ = worlds
    report = _feature_drift(reference, current["new_channel"])
    assert set(report.alarms) == CHANNEL_FEATURES
    assert report.column("last_purchase_channel").score > 0.3
    events = _event_drift(worlds, "new_channel")
    assert events.alarms == ["channel"]


def test_a_price_rise_is_flagged_in_purchase_amounts_and_not_in_unrelated_features(worlds):
    reference, current, _ = worlds
    events = _event_drift(worlds, "price_rise")
    assert {"purchase_amount", "purchase_amount_vs_category"} <= set(events.alarms)
    assert "channel" not in events.alarms and "purchase_category" not in events.alarms
    # +30% on every purchase: about log(1.3) = 0.26 on the log scale
    assert events.column("purchase_amount_vs_category").score > 0.15
    report = _feature_drift(reference, current["price_rise"])
    assert not set(report.alarms) & (CHANNEL_FEATURES | UNRELATED_FEATURES)
    # price-sensitive customers buy less and complain: the generator's behavioural response
    assert set(report.alarms) & {"complaints_90d", "purchases_90d", "purchases_30d"}


# --------------------------------------------------------------------------------------------
# realised performance
# --------------------------------------------------------------------------------------------


def _scored(n=3000, seed=8):
    rng = np.random.default_rng(seed)
    p = rng.beta(1.5, 12, n)
    y = (rng.random(n) < p).astype(float)
    return y, p


def test_performance_kept_when_the_model_ranks_and_calibrates_as_promised():
    from training.drift import realised_metrics

    y, p = _scored()
    promised = realised_metrics(*_scored(seed=9))
    check = assess_performance(y, p, promised, MonitoringConfig(), cutoff="2025-04-02")
    assert check.sufficient and not check.decayed, check.reasons
    assert check.cutoff == "2025-04-02"


def test_performance_decay_is_flagged_with_reasons():
    from training.drift import realised_metrics

    y, p = _scored()
    promised = realised_metrics(y, p)
    shuffled = np.random.default_rng(10).permutation(p)  # the ranking is lost
    check = assess_performance(y, shuffled, promised, MonitoringConfig())
    assert check.decayed
    assert any("ROC AUC" in r for r in check.reasons)
    assert any("lift" in r for r in check.reasons)


def test_miscalibration_alone_is_decay():
    from training.drift import realised_metrics

    y, p = _scored()
    check = assess_performance(y, p * 0.4, realised_metrics(y, p), MonitoringConfig())
    assert check.decayed and any("mean predicted" in r for r in check.reasons)


def test_too_few_matured_rows_are_not_judged():
    y, p = _scored(n=100)
    check = assess_performance(y, p, {"roc_auc": 0.9}, MonitoringConfig())
    assert not check.sufficient and not check.decayed and "not judged" in check.note


# --------------------------------------------------------------------------------------------
# Evidently
# --------------------------------------------------------------------------------------------


def test_evidently_computes_the_same_scores_and_renders_one_page():
    from training.drift import attach_evidently_report, render_monitor_html

    rng = np.random.default_rng(11)
    reference = pd.DataFrame(
        {"spend_90d": rng.lognormal(4, 1, 800), "channel": rng.choice(["web", "app"], 800)}
    )
    current = pd.DataFrame(
        {
            "spend_90d": rng.lognormal(4.4, 1, 700),
            "channel": rng.choice(["web", "app", "marketplace"], 700),
        }
    )
    report = detect_drift(reference, current, config=MonitoringConfig())
    with_evidently = attach_evidently_report(report, reference, current)
    from training.drift import _drift_scores, _drift_statuses

    scores = _drift_scores(with_evidently.snapshot)
    statuses = _drift_statuses(with_evidently.snapshot)
    for column in report.columns:
        assert scores[column.column] == pytest.approx(column.score, rel=1e-9)
        assert statuses[column.column] == column.drifted
    page = render_monitor_html(
        {"model": "churn v1", "alarm": True, "alarm_reasons": ["2 feature(s) drifted"],
         "feature_drift": report.to_dict()},
        [("Customer features", with_evidently.snapshot)],
    )  # fmt: skip
    assert page.count("<!DOCTYPE html>") == 1 or page.lstrip().lower().startswith("<!doctype")
    assert "id='crm-summary'" in page and "2 feature(s) drifted" in page
    assert "drawDashboard" in page  # Evidently's charts, once
