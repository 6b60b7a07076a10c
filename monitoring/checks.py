"""The monitor's checks put together: customer and event drift, then the alarm and its remedy.

Each check is a pure function of the reference and the current batch; ``pipelines.monitoring``
builds the batches (features, scores, matured labels) and hands them in. The alarm is the one
place that decides what counts: enough drifted features, drifted predictions or raw events, a
changed label rate, or decayed performance. On an alarm the monitor retrains when told to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from monitoring.batches import category_medians, event_window
from monitoring.config import MonitoringConfig
from monitoring.drift import ColumnDrift, DriftReport, default_report_columns, detect_drift
from monitoring.evidently_report import attach_evidently_report
from monitoring.performance import PerformanceCheck

__all__ = ["CustomerDrift", "alarm_reasons", "customer_drift", "event_drift", "retrain_wanted"]


@dataclass(frozen=True)
class CustomerDrift:
    """Drift of the customer features and of the champion's predictions, scored in one pass."""

    both: DriftReport  # features and ``probability``, with the Evidently snapshot
    features: DriftReport
    predictions: DriftReport


def customer_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    feature_columns: Sequence[str],
    config: MonitoringConfig,
) -> CustomerDrift:
    """Drift of the champion's features and of its predictions (column ``probability``).

    ``reference``: the test-cutoff rows logged with the champion; ``current``: today's batch,
    scored. Features the current batch lacks are left out. The predictions are held to
    ``prediction_threshold``; Evidently details them and the ``report_columns`` features
    closest to drifting.
    """
    columns = [c for c in feature_columns if c in current.columns]
    both = detect_drift(
        reference,
        current,
        config=config,
        columns=[*columns, "probability"],
        informational=config.informational_features,
        thresholds={"probability": config.prediction_threshold},
        title="Customer features and predictions",
    )
    evidently_columns = default_report_columns(
        DriftReport(columns=tuple(c for c in both.columns if c.column != "probability")),
        config.report_columns,
    )
    both = attach_evidently_report(
        both, reference, current, columns=["probability", *evidently_columns]
    )
    return CustomerDrift(
        both=both,
        features=DriftReport(
            columns=tuple(c for c in both.columns if c.column != "probability"),
            title="Customer features",
        ),
        predictions=DriftReport(columns=(both.column("probability"),), title="Predictions"),
    )


def event_drift(
    events: pd.DataFrame,
    reference_cutoff: pd.Timestamp,
    current_cutoff: pd.Timestamp,
    config: MonitoringConfig,
) -> DriftReport | None:
    """Drift of the raw events of equal windows before the two cutoffs (None without events).

    Purchase amounts are also priced against each category's median in the reference window,
    so a price rise is told apart from a changed product mix.
    """
    window = config.event_window_days
    reference_start = reference_cutoff - pd.Timedelta(days=window)
    reference_events = events.loc[
        (events["timestamp"] >= reference_start) & (events["timestamp"] < reference_cutoff)
    ]
    if not len(reference_events):
        return None
    medians = category_medians(reference_events)
    event_reference = event_window(events, reference_cutoff, window, reference_medians=medians)
    event_current = event_window(events, current_cutoff, window, reference_medians=medians)
    if not len(event_current):
        return None
    report = detect_drift(
        event_reference,
        event_current,
        config=config,
        missing_as_level=False,
        check_missing=False,
        title="Raw events",
    )
    return attach_evidently_report(
        report, event_reference, event_current, limit=len(report.columns)
    )


def alarm_reasons(
    config: MonitoringConfig,
    feature_drift: DriftReport,
    prediction_drift: DriftReport,
    event_drift: DriftReport | None,
    target_drift: ColumnDrift | None,
    performance: PerformanceCheck | None,
) -> list[str]:
    """Why the monitor raises the alarm, one readable reason per check that failed (or none)."""
    reasons = []
    alarms = feature_drift.alarms
    if len(alarms) >= config.min_drifted_features:
        shown = ", ".join(alarms[:8]) + (f" and {len(alarms) - 8} more" if len(alarms) > 8 else "")
        reasons.append(f"{len(alarms)} feature(s) drifted: {shown}")
    if prediction_drift.alarms:
        column = prediction_drift.columns[0]
        reasons.append(
            f"predictions drifted (score {column.score:.3f} >= {column.effective_threshold:.3f})"
        )
    if event_drift is not None and event_drift.alarms:
        reasons.append(f"raw events drifted: {', '.join(event_drift.alarms)}")
    if target_drift is not None and target_drift.drifted:
        reasons.append(f"label rate changed: {target_drift.note}")
    if performance is not None and performance.decayed:
        reasons.append("performance decayed: " + "; ".join(performance.reasons))
    return reasons


def retrain_wanted(alarm: bool, config: MonitoringConfig, override: bool | None = None) -> bool:
    """Retrain on an alarm when asked to: ``override`` (``--retrain-on-drift``) if given, else
    the ``retrain_on_alarm`` setting. No alarm, no retraining."""
    return alarm and (config.retrain_on_alarm if override is None else override)
