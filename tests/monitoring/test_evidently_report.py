"""Evidently computes the monitor's scores and verdicts, and the page draws them once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.config import MonitoringConfig
from monitoring.drift import detect_drift


def test_evidently_computes_the_same_scores_and_renders_one_page():
    from monitoring.evidently_report import attach_evidently_report
    from monitoring.page import render_monitor_html

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
    from monitoring.evidently_report import _drift_scores, _drift_statuses

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
