"""Realised performance: has the champion kept, on matured labels, what it promised?

:func:`assess_performance` recomputes, on a batch whose labels have matured since training, the
metrics the model promised on its test cutoff (ROC AUC, PR AUC, lift at 10%, calibration) with
the same definitions as training (``training.evaluation``), and calls it decay when one falls
past its tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from monitoring.config import MonitoringConfig
from monitoring.drift import json_number

__all__ = ["PERFORMANCE_METRICS", "PerformanceCheck", "assess_performance", "realised_metrics"]

PERFORMANCE_METRICS: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "lift_at_10",
    "ece",
    "mean_probability",
    "positive_rate",
)


def realised_metrics(y: Any, p: Any, *, ece_bins: int = 10) -> dict[str, float]:
    """ROC AUC, PR AUC, lift and capture at 10%, calibration, with training's definitions."""
    from training.evaluation import expected_calibration_error, ranking_metrics

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    metrics = ranking_metrics(y, p, (0.1,))
    metrics["ece"] = expected_calibration_error(y, p, ece_bins)
    metrics["mean_probability"] = float(p.mean())
    metrics["positive_rate"] = float(y.mean())
    metrics["calibration_gap"] = float(abs(p.mean() - y.mean()))
    return metrics


@dataclass(frozen=True)
class PerformanceCheck:
    """Realised against promised performance on a batch whose labels have matured."""

    cutoff: str | None
    n_rows: int
    n_positive: int
    sufficient: bool
    realised: dict[str, float]
    promised: dict[str, float]
    decayed: bool
    reasons: tuple[str, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["realised"] = {k: json_number(v) for k, v in self.realised.items()}
        payload["promised"] = {k: json_number(v) for k, v in self.promised.items()}
        payload["reasons"] = list(self.reasons)
        return payload


def assess_performance(
    y: Any,
    p: Any,
    promised: dict[str, float],
    config: MonitoringConfig,
    *,
    cutoff: object | None = None,
    ece_bins: int = 10,
) -> PerformanceCheck:
    """Has the model kept its promise? Decay when a metric falls past its tolerance.

    ``promised``: the champion run's test metrics (``roc_auc``, ``pr_auc``, ``lift_at_10``,
    ``ece``; missing ones are not judged). Too few rows or positives: not judged, said so.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels for {p.size} probabilities")
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    n_positive = int(y.sum())
    cutoff_text = None if cutoff is None else str(pd.Timestamp(cutoff).date())
    promised = {k: float(v) for k, v in promised.items() if k in PERFORMANCE_METRICS}
    if (
        len(y) < config.min_labelled_rows
        or n_positive < config.min_positives
        or n_positive == len(y)
    ):
        return PerformanceCheck(
            cutoff=cutoff_text,
            n_rows=len(y),
            n_positive=n_positive,
            sufficient=False,
            realised={},
            promised=promised,
            decayed=False,
            note=(
                f"not judged: {len(y)} matured rows with {n_positive} positives (need at "
                f"least {config.min_labelled_rows} rows, {config.min_positives} positives and "
                "both classes)"
            ),
        )
    realised = realised_metrics(y, p, ece_bins=ece_bins)
    reasons: list[str] = []
    if (
        "roc_auc" in promised
        and promised["roc_auc"] - realised["roc_auc"] > config.max_roc_auc_drop
    ):
        reasons.append(
            f"ROC AUC {realised['roc_auc']:.3f} is more than {config.max_roc_auc_drop:g} below "
            f"the promised {promised['roc_auc']:.3f}"
        )
    for key, label, tolerance in (
        ("pr_auc", "PR AUC", config.max_pr_auc_drop),
        ("lift_at_10", "lift at 10%", config.max_lift_drop),
    ):
        if key in promised and promised[key] > 0:
            drop = 1 - realised[key] / promised[key]
            if drop > tolerance:
                reasons.append(
                    f"{label} {realised[key]:.3f} is {drop:.0%} below the promised "
                    f"{promised[key]:.3f} (tolerance {tolerance:.0%})"
                )
    if realised["calibration_gap"] > config.max_calibration_gap:
        reasons.append(
            f"mean predicted probability {realised['mean_probability']:.3f} vs observed rate "
            f"{realised['positive_rate']:.3f}: off by more than {config.max_calibration_gap:g}"
        )
    if "ece" in promised and realised["ece"] - promised["ece"] > config.max_ece_increase:
        reasons.append(
            f"expected calibration error {realised['ece']:.3f} vs promised {promised['ece']:.3f}"
        )
    return PerformanceCheck(
        cutoff=cutoff_text,
        n_rows=len(y),
        n_positive=n_positive,
        sufficient=True,
        realised=realised,
        promised=promised,
        decayed=bool(reasons),
        reasons=tuple(reasons),
    )
