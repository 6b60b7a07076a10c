"""Realised performance on matured labels: kept, decayed, miscalibrated, or not judged."""

from __future__ import annotations

import numpy as np

from monitoring.config import MonitoringConfig
from monitoring.performance import assess_performance


def _scored(n=3000, seed=8):
    rng = np.random.default_rng(seed)
    p = rng.beta(1.5, 12, n)
    y = (rng.random(n) < p).astype(float)
    return y, p


def test_performance_kept_when_the_model_ranks_and_calibrates_as_promised():
    from monitoring.performance import realised_metrics

    y, p = _scored()
    promised = realised_metrics(*_scored(seed=9))
    check = assess_performance(y, p, promised, MonitoringConfig(), cutoff="2025-04-02")
    assert check.sufficient and not check.decayed, check.reasons
    assert check.cutoff == "2025-04-02"


def test_performance_decay_is_flagged_with_reasons():
    from monitoring.performance import realised_metrics

    y, p = _scored()
    promised = realised_metrics(y, p)
    shuffled = np.random.default_rng(10).permutation(p)  # the ranking is lost
    check = assess_performance(y, shuffled, promised, MonitoringConfig())
    assert check.decayed
    assert any("ROC AUC" in r for r in check.reasons)
    assert any("lift" in r for r in check.reasons)


def test_miscalibration_alone_is_decay():
    from monitoring.performance import realised_metrics

    y, p = _scored()
    check = assess_performance(y, p * 0.4, realised_metrics(y, p), MonitoringConfig())
    assert check.decayed and any("mean predicted" in r for r in check.reasons)


def test_too_few_matured_rows_are_not_judged():
    y, p = _scored(n=100)
    check = assess_performance(y, p, {"roc_auc": 0.9}, MonitoringConfig())
    assert not check.sufficient and not check.decayed and "not judged" in check.note
