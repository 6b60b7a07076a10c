"""Per-column drift of a current batch against a reference, each column held to its own bar.

**Why not Evidently's defaults.** Drift detectors cry wolf: a p-value test (KS, chi-square) on
tens of thousands of customers flags differences far too small to matter, and a score with a
fixed threshold flags sampling noise on small columns (a feature only 150 customers have).
The monitor therefore scores effect sizes (``monitoring.scores``: Wasserstein distance on the
signed-log scale in reference standard deviations, PSI for categories) and calibrates each
column's threshold to its size:

* a column drifts when its score reaches ``max(threshold, noise_floor)``. The threshold is the
  effect size worth acting on (0.1 SD; PSI 0.1, the classic "moderate shift"); the noise floor
  is what sampling alone exceeds with probability at most ``noise_alpha`` at the sizes
  compared (:func:`~monitoring.scores.numeric_noise_floor`: a bound from the normal
  approximation of the empirical CDFs; :func:`~monitoring.scores.categorical_noise_floor`:
  PSI's chi-square approximation). On large samples the floor vanishes and the effect-size
  threshold decides, so large n alone never raises an alarm, and a column 150 customers have
  is not flagged for its sampling noise;
* missing values: a separate check per numerical column (share missing changed by at least
  ``missing_share_threshold`` and beyond noise), since Evidently drops them before scoring.

Lifetime counters and ages (``DEFAULT_INFORMATIONAL_FEATURES`` in ``monitoring.config``, and the
generated columns :func:`is_generated_ageing_column` recognises) grow with the age of the
customer base by construction; they are scored and shown but do not raise the alarm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monitoring.config import MonitoringConfig
from monitoring.scores import (
    CATEGORICAL_METHOD,
    NUMERIC_METHOD,
    RATE_METHOD,
    categorical_levels,
    categorical_noise_floor,
    level_counts,
    numeric_noise_floor,
    positive_rate,
    psi_score,
    rate_noise_floor,
    wasserstein_score,
)

__all__ = [
    "ColumnDrift",
    "DriftReport",
    "column_kinds",
    "default_report_columns",
    "detect_drift",
    "is_generated_ageing_column",
    "json_number",
    "label_rate_drift",
]

#: Generated columns that age the same way: lifetime counts and amounts of an export's own
#: event types (``ev_<type>_total``, ``ev_<type>_amount_total``; the lifetime *rate*
#: ``ev_<type>_per_day_total`` is comparable across dates and stays monitored) and the days
#: since a date attribute (``attr_<name>_days``, e.g. an age).
_AGEING_GENERATED = re.compile(r"^(ev_.+(?<!_per_day)_total|attr_.+_days)$")


def is_generated_ageing_column(name: str) -> bool:
    """A generated column that moves with the calendar by construction (never alarms)."""
    return bool(_AGEING_GENERATED.match(name))


def column_kinds(frame: pd.DataFrame, columns: Iterable[str]) -> dict[str, str]:
    """``numerical`` for numeric (non-boolean) columns, ``categorical`` for everything else."""
    kinds = {}
    for column in columns:
        dtype = frame[column].dtype
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        kinds[column] = "numerical" if numeric else "categorical"
    return kinds


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift: score, the threshold it was held to, and the verdict."""

    column: str
    kind: str
    method: str
    score: float
    threshold: float
    noise_floor: float
    effective_threshold: float
    drifted: bool
    informational: bool = False
    n_reference: int = 0
    n_current: int = 0
    missing_reference: float = 0.0
    missing_current: float = 0.0
    missing_drifted: bool = False
    note: str = ""

    @property
    def relative_score(self) -> float:
        """Score over the threshold it was held to (>= 1 means drift; 0 when not scored)."""
        if not (np.isfinite(self.score) and self.effective_threshold > 0):
            return 0.0
        return float(self.score / self.effective_threshold)

    @property
    def alarm(self) -> bool:
        """Drifted (values or missing share) and not an informational column."""
        return (self.drifted or self.missing_drifted) and not self.informational

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["alarm"] = self.alarm
        return {k: json_number(v) for k, v in payload.items()}


def json_number(value: Any) -> Any:
    """A non-finite float as None, so a summary with unscored columns is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class DriftReport:
    """Per-column drift of a current batch against a reference, with the Evidently snapshot."""

    columns: tuple[ColumnDrift, ...]
    title: str = "Data drift"
    missing_as_level: bool = True
    snapshot: Any = field(default=None, repr=False, compare=False)
    evidently_columns: tuple[str, ...] = ()

    def column(self, name: str) -> ColumnDrift:
        for result in self.columns:
            if result.column == name:
                return result
        raise KeyError(f"no drift result for column {name!r}")

    @property
    def drifted(self) -> list[str]:
        """Columns whose values or missing share drifted (informational ones included)."""
        return [c.column for c in self.columns if c.drifted or c.missing_drifted]

    @property
    def alarms(self) -> list[str]:
        """Drifted columns that count towards the alarm."""
        return [c.column for c in self.columns if c.alarm]

    def scores(self) -> dict[str, float]:
        return {c.column: c.score for c in self.columns}

    def to_dict(self) -> dict[str, Any]:
        """Columns ordered alarms first, then by score relative to the threshold held to."""
        ordered = sorted(self.columns, key=lambda c: (not c.alarm, -c.relative_score))
        return {
            "title": self.title,
            "n_columns": len(self.columns),
            "drifted": self.drifted,
            "alarms": self.alarms,
            "evidently_columns": list(self.evidently_columns),
            "columns": [c.to_dict() for c in ordered],
        }

    def html(self) -> str:
        """The Evidently report as a standalone HTML document (empty without a snapshot)."""
        return "" if self.snapshot is None else self.snapshot.get_html_str(as_iframe=False)


def _numeric_or_raw(values: pd.Series, kind: str) -> pd.Series:
    if kind != "numerical":
        return values
    return pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan)


def _present_values(
    reference: pd.Series, current: pd.Series, kind: str, *, missing_as_level: bool
) -> tuple[pd.Series, pd.Series]:
    """The values a column is scored on (what Evidently passes to the score function)."""
    if kind == "numerical":
        return (
            _numeric_or_raw(reference, kind).dropna(),
            _numeric_or_raw(current, kind).dropna(),
        )
    if missing_as_level:
        return categorical_levels(reference), categorical_levels(current)
    return reference.dropna(), current.dropna()


def _share_changed(
    share_reference: float, share_current: float, n_reference: int, n_current: int, config
) -> bool:
    """A share (of missing values) moved by the threshold and beyond sampling noise."""
    pooled = (share_reference * n_reference + share_current * n_current) / (n_reference + n_current)
    floor = rate_noise_floor(pooled, n_reference, n_current, alpha=config.noise_alpha)
    return abs(share_current - share_reference) >= max(config.missing_share_threshold, floor)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    config: MonitoringConfig,
    columns: Sequence[str] | None = None,
    informational: Iterable[str] = (),
    thresholds: dict[str, float] | None = None,
    missing_as_level: bool = True,
    check_missing: bool = True,
    title: str = "Data drift",
) -> DriftReport:
    """Score every column of ``current`` against ``reference`` (see the module doc).

    The scores are the functions registered with Evidently
    (:func:`~monitoring.evidently_report.register_drift_methods`), computed directly so that
    scoring 100 columns takes milliseconds;
    :func:`~monitoring.evidently_report.attach_evidently_report` runs Evidently on the columns
    worth a chart.

    ``columns``: what to compare (default: the columns both frames share). ``thresholds``
    overrides the effect-size threshold of single columns (e.g. the prediction column).
    ``missing_as_level``: categorical NaN is a level of its own (features: "no plan" is
    information); with False missing values are left out (event columns that only purchases
    carry). ``check_missing``: also flag numerical columns whose share of missing values
    changed (off for columns that are missing by construction, e.g. amounts of non-purchases).
    Columns without any value on one side are not scored (the missing-share check catches
    them). Inputs are not modified.
    """
    if columns is None:
        columns = [c for c in current.columns if c in reference.columns]
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        raise ValueError(f"columns missing from the reference or the current batch: {missing}")
    if len(reference) == 0 or len(current) == 0:
        raise ValueError(
            f"drift needs rows on both sides: reference {len(reference)}, current {len(current)}"
        )
    informational = set(informational)
    thresholds = dict(thresholds or {})
    kinds = column_kinds(reference, columns)
    for column in columns:  # a column numeric on one side only is compared as categorical
        if kinds[column] == "numerical" and column_kinds(current, [column])[column] != "numerical":
            kinds[column] = "categorical"

    results: dict[str, ColumnDrift] = {}
    for column in columns:
        kind = kinds[column]
        ref_values, cur_values = _present_values(
            reference[column], current[column], kind, missing_as_level=missing_as_level
        )
        missing_ref = float(_numeric_or_raw(reference[column], kind).isna().mean())
        missing_cur = float(_numeric_or_raw(current[column], kind).isna().mean())
        missing_drifted = check_missing and kind == "numerical"
        if missing_drifted:
            missing_drifted = _share_changed(
                missing_ref, missing_cur, len(reference), len(current), config
            )
        threshold = thresholds.get(
            column,
            config.numeric_threshold if kind == "numerical" else config.categorical_threshold,
        )
        common = {
            "column": column,
            "kind": kind,
            "threshold": threshold,
            "informational": column in informational or is_generated_ageing_column(column),
            "n_reference": len(ref_values),
            "n_current": len(cur_values),
            "missing_reference": missing_ref,
            "missing_current": missing_cur,
            "missing_drifted": bool(missing_drifted),
        }
        if len(ref_values) == 0 or len(cur_values) == 0:
            side = "the reference" if len(ref_values) == 0 else "the current batch"
            results[column] = ColumnDrift(
                method="none",
                score=float("nan"),
                noise_floor=float("nan"),
                effective_threshold=threshold,
                drifted=False,
                note=f"not scored: no values in {side}",
                **common,
            )
            continue
        if kind == "numerical":
            method = NUMERIC_METHOD
            floor = numeric_noise_floor(ref_values, len(cur_values), alpha=config.noise_alpha)
        else:
            method = CATEGORICAL_METHOD
            n_levels = len(level_counts(ref_values, cur_values)[2])
            floor = categorical_noise_floor(
                n_levels, len(ref_values), len(cur_values), alpha=config.noise_alpha
            )
        effective = max(threshold, floor)
        if kind == "numerical":
            score = wasserstein_score(ref_values, cur_values)
        else:
            score = psi_score(ref_values, cur_values)
        results[column] = ColumnDrift(
            method=method,
            score=score,
            noise_floor=floor,
            effective_threshold=effective,
            drifted=bool(np.isfinite(score) and score >= effective),
            **common,
        )

    return DriftReport(
        columns=tuple(results[c] for c in columns),
        title=title,
        missing_as_level=missing_as_level,
    )


def default_report_columns(report: DriftReport, limit: int) -> list[str]:
    """The columns worth a detailed chart: drifted ones first, then the closest to drifting."""
    scored = [c for c in report.columns if c.method != "none"]
    ranked = sorted(scored, key=lambda c: (not (c.drifted or c.alarm), -c.relative_score))
    return [c.column for c in ranked[:limit]]


def label_rate_drift(
    reference: pd.Series,
    current: pd.Series,
    config: MonitoringConfig,
    *,
    column: str = "label",
) -> ColumnDrift:
    """Target drift: did the share of positives of a 0/1 label move past its threshold?

    Held, like every column, to ``max(label_rate_change, noise floor)``, the floor being the
    change sampling alone reaches at the pooled rate and the two sizes.
    """
    ref_rate, cur_rate = positive_rate(reference), positive_rate(current)
    pooled = (ref_rate * len(reference) + cur_rate * len(current)) / (len(reference) + len(current))
    floor = rate_noise_floor(pooled, len(reference), len(current), alpha=config.noise_alpha)
    effective = max(config.label_rate_change, floor)
    score = abs(cur_rate - ref_rate)
    return ColumnDrift(
        column=column,
        kind="categorical",
        method=RATE_METHOD,
        score=score,
        threshold=config.label_rate_change,
        noise_floor=floor,
        effective_threshold=effective,
        drifted=bool(score >= effective),
        n_reference=len(reference),
        n_current=len(current),
        note=f"positive rate {ref_rate:.3f} at the test cutoff, {cur_rate:.3f} now",
    )
