"""The Evidently reports: the monitor's scores registered with Evidently, and the charts drawn.

Evidently draws the detailed charts of the HTML page. It computes the same scores as
``monitoring.drift`` because the monitor's score functions (``monitoring.scores``) are
registered with it under their method names, and each column is held to the threshold the
monitor used; a disagreement is logged. Evidently is imported inside the functions, never at
import of the module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from monitoring.config import MonitoringConfig
from monitoring.drift import (
    ColumnDrift,
    DriftReport,
    default_report_columns,
    label_rate_drift,
)
from monitoring.scores import (
    CATEGORICAL_METHOD,
    NUMERIC_METHOD,
    RATE_METHOD,
    categorical_levels,
    psi_score,
    rate_change_score,
    wasserstein_score,
)

logger = logging.getLogger(__name__)

__all__ = ["attach_evidently_report", "performance_report", "register_drift_methods"]


def _evidently_numeric(reference, current, feature_type, threshold):
    score = wasserstein_score(reference, current)
    return score, bool(score >= threshold)


def _evidently_categorical(reference, current, feature_type, threshold):
    score = psi_score(reference, current)
    return score, bool(score >= threshold)


def _evidently_rate(reference, current, feature_type, threshold):
    score = rate_change_score(reference, current)
    return score, bool(score >= threshold)


def register_drift_methods() -> None:
    """Register the monitor's scores with Evidently under their method names (idempotent).

    Called by :func:`attach_evidently_report` and :func:`performance_report`, never at import.
    """
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    numerical, categorical = ColumnType.Numerical, ColumnType.Categorical
    methods = (
        (NUMERIC_METHOD, "Wasserstein (signed log, SDs)", [numerical], _evidently_numeric),
        (CATEGORICAL_METHOD, "PSI (+ unseen levels)", [categorical], _evidently_categorical),
        (RATE_METHOD, "Change of the positive rate", [categorical, numerical], _evidently_rate),
    )
    for name, display_name, types, function in methods:
        register_stattest(
            StatTest(
                name=name,
                display_name=display_name,
                allowed_feature_types=types,
                default_threshold=0.1,
            ),
            function,
        )


def _as_evidently_frame(
    frame: pd.DataFrame, kinds: dict[str, str], *, missing_as_level: bool
) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for column, kind in kinds.items():
        series = frame[column]
        if kind == "numerical":
            columns[column] = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
        elif missing_as_level:
            columns[column] = categorical_levels(series).to_numpy(dtype=object)
        else:
            text = series.astype(object).where(series.notna(), None)
            columns[column] = text.map(lambda v: None if v is None else str(v)).to_numpy(
                dtype=object
            )
    return pd.DataFrame(columns)


def _drift_statuses(snapshot: Any) -> dict[str, bool]:
    """Column -> drift detected, from the ValueDrift tests of an Evidently snapshot."""
    statuses: dict[str, bool] = {}
    for test in snapshot.dict().get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith("ValueDrift") and "column" in params:
            status = str(test.get("status", "")).upper()
            statuses[params["column"]] = status.endswith("FAIL")
    return statuses


def _drift_scores(snapshot: Any) -> dict[str, float]:
    scores: dict[str, float] = {}
    for metric in snapshot.dict().get("metrics", []):
        config = metric.get("config") or {}
        if config.get("type", "").endswith("ValueDrift") and "column" in config:
            value = metric.get("value")
            scores[config["column"]] = float("nan") if value is None else float(value)
    return scores


def attach_evidently_report(
    report: DriftReport,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    limit: int = 20,
) -> DriftReport:
    """Run Evidently on the scored columns and attach its snapshot (the HTML detail).

    Each column gets an Evidently ``ValueDrift`` with the monitor's method (registered by
    :func:`register_drift_methods`) and the column's effective threshold, so Evidently computes
    the same scores and verdicts; a disagreement is logged. Evidently draws a chart per column
    (~0.1 s each), so by default only ``limit`` columns are detailed: the drifted ones first,
    then those closest to their threshold (``columns`` chooses them explicitly).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    chosen = list(columns) if columns is not None else default_report_columns(report, limit)
    by_name = {c.column: c for c in report.columns}
    chosen = [c for c in chosen if c in by_name and by_name[c].method != "none"]
    if not chosen:
        return report
    register_drift_methods()
    kinds = {c: by_name[c].kind for c in chosen}
    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numerical"],
        categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
    )
    metrics = [
        ValueDrift(column=c, method=by_name[c].method, threshold=by_name[c].effective_threshold)
        for c in chosen
    ]
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(
            _as_evidently_frame(current, kinds, missing_as_level=report.missing_as_level),
            data_definition=definition,
        ),
        Dataset.from_pandas(
            _as_evidently_frame(reference, kinds, missing_as_level=report.missing_as_level),
            data_definition=definition,
        ),
    )
    scores, statuses = _drift_scores(snapshot), _drift_statuses(snapshot)
    for column in chosen:
        ours = by_name[column]
        theirs = scores.get(column, float("nan"))
        if not np.isclose(theirs, ours.score, rtol=1e-6, atol=1e-9) or (
            column in statuses and statuses[column] != ours.drifted
        ):
            logger.warning(
                "Evidently scored %s at %s (drift %s), the monitor at %s (drift %s)",
                column,
                theirs,
                statuses.get(column),
                ours.score,
                ours.drifted,
            )
    return replace(report, snapshot=snapshot, evidently_columns=tuple(chosen))


def _labelled(frame: pd.DataFrame, label: str, probability: str) -> pd.DataFrame:
    """Rows with both a label and a probability, as Evidently's ``label`` and ``probability``."""
    y = pd.to_numeric(frame[label], errors="coerce")
    keep = y.notna() & frame[probability].notna()
    return pd.DataFrame(
        {
            "label": y[keep].astype(int).to_numpy(),
            "probability": frame.loc[keep, probability].astype("float64").to_numpy(),
        }
    )


def performance_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: MonitoringConfig,
    *,
    label: str = "label",
    probability: str = "probability",
    contact_share: float = 0.1,
) -> tuple[ColumnDrift, Any]:
    """Target drift of the label rate, and Evidently's classification quality, side by side.

    ``reference``: the test-cutoff predictions (label, probability); ``current``: the matured
    batch. Precision and recall are shown at the reference's top-``contact_share`` threshold
    (the retention list), not at 0.5. Returns the label's drift
    (:func:`~monitoring.drift.label_rate_drift`) and the Evidently snapshot.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset

    register_drift_methods()
    ref = _labelled(reference, label, probability)
    cur = _labelled(current, label, probability)
    if ref.empty or cur.empty:
        raise ValueError("performance needs labelled rows in the reference and the current batch")
    drift = label_rate_drift(ref["label"], cur["label"], config, column=label)
    threshold = float(np.quantile(ref["probability"], 1 - contact_share))
    definition = DataDefinition(
        numerical_columns=["probability"],
        categorical_columns=["label"],
        classification=[
            BinaryClassification(target="label", prediction_probas="probability", pos_label=1)
        ],
    )
    snapshot = Report(
        [
            ValueDrift(column="label", method=RATE_METHOD, threshold=drift.effective_threshold),
            ClassificationPreset(probas_threshold=threshold),
        ],
        include_tests=True,
    ).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    return drift, snapshot
