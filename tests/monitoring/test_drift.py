"""Per-column drift verdicts, and the generator's drift injection caught where it was put.

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

from monitoring.batches import category_medians, event_window, task_population
from monitoring.config import DEFAULT_INFORMATIONAL_FEATURES, MonitoringConfig
from monitoring.drift import detect_drift

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
# per-column verdicts
# --------------------------------------------------------------------------------------------


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
