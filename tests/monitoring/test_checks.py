"""The monitor's verdict: which results raise the alarm, and when an alarm retrains."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring.checks import alarm_reasons, retrain_wanted
from monitoring.config import MonitoringConfig
from monitoring.drift import ColumnDrift, DriftReport, label_rate_drift
from monitoring.performance import PerformanceCheck


def _column(name: str, *, drifted: bool, informational: bool = False) -> ColumnDrift:
    return ColumnDrift(
        column=name,
        kind="numerical",
        method="crm_wasserstein_log",
        score=0.5 if drifted else 0.01,
        threshold=0.1,
        noise_floor=0.02,
        effective_threshold=0.1,
        drifted=drifted,
        informational=informational,
    )


def _report(*columns: ColumnDrift) -> DriftReport:
    return DriftReport(columns=columns)


def test_no_drift_and_no_decay_is_no_alarm():
    reasons = alarm_reasons(
        MonitoringConfig(),
        _report(_column("recency_days", drifted=False)),
        _report(_column("probability", drifted=False)),
        None,
        None,
        None,
    )
    assert reasons == []


def test_each_failed_check_gives_its_reason():
    config = MonitoringConfig()
    target = label_rate_drift(
        pd.Series(np.r_[np.ones(100), np.zeros(900)]),
        pd.Series(np.r_[np.ones(300), np.zeros(700)]),
        config,
    )
    decay = PerformanceCheck(
        cutoff="2025-04-02",
        n_rows=1000,
        n_positive=100,
        sufficient=True,
        realised={},
        promised={},
        decayed=True,
        reasons=("ROC AUC fell",),
    )
    features = _report(
        _column("spend_90d", drifted=True),
        _column("tenure_days", drifted=True, informational=True),  # ages: never alarms
    )
    reasons = alarm_reasons(
        config,
        features,
        _report(_column("probability", drifted=True)),
        _report(_column("channel", drifted=True)),
        target,
        decay,
    )
    assert reasons == [
        "1 feature(s) drifted: spend_90d",
        "predictions drifted (score 0.500 >= 0.100)",
        "raw events drifted: channel",
        "label rate changed: positive rate 0.100 at the test cutoff, 0.300 now",
        "performance decayed: ROC AUC fell",
    ]


def test_fewer_drifted_features_than_the_minimum_raise_no_alarm():
    features = _report(_column("spend_90d", drifted=True), _column("visits_30d", drifted=False))
    quiet = _report(_column("probability", drifted=False))
    config = MonitoringConfig(min_drifted_features=2)
    assert alarm_reasons(config, features, quiet, None, None, None) == []


def test_label_rate_drift_is_held_to_the_noise_floor_on_small_batches():
    config = MonitoringConfig()
    small = label_rate_drift(
        pd.Series([1.0] * 2 + [0.0] * 18), pd.Series([1.0] * 4 + [0.0] * 16), config
    )
    assert small.score > config.label_rate_change and not small.drifted  # noise at n=20
    assert small.effective_threshold == small.noise_floor


def test_retrain_only_on_an_alarm_and_when_asked():
    on, off = MonitoringConfig(retrain_on_alarm=True), MonitoringConfig()
    assert retrain_wanted(True, on) and not retrain_wanted(True, off)
    assert retrain_wanted(True, off, override=True) and not retrain_wanted(True, on, override=False)
    assert not retrain_wanted(False, on, override=True)
