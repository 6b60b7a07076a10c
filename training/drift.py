"""Drift and realised-performance checks of a deployed model, computed with Evidently.

The monitor compares a current scoring batch with the reference data logged with the
champion's training run (``reference/`` artifacts of ``training.train``: the test cutoff's
feature rows and out-of-sample predictions). Everything here is a pure function of DataFrames;
``pipelines.monitoring`` does the loading, scoring, MLflow logging and file writing.

**Why not Evidently's defaults.** Drift detectors cry wolf: a p-value test (KS, chi-square) on
tens of thousands of customers flags differences far too small to matter, and a score with a
fixed threshold flags sampling noise on small columns (a feature only 150 customers have).
The monitor therefore scores effect sizes and calibrates each column's threshold to its size:

* numerical columns: the Wasserstein distance between the two samples after a signed log
  transform (``sign(x) log(1 + |x|)``), divided by the reference's standard deviation on that
  scale, i.e. "how far the distribution moved, in standard deviations". The transform matters:
  money and count features are heavy-tailed, and on the raw scale a few large B2B accounts set
  the standard deviation, hiding a shift of everyone else (Evidently's ``wasserstein`` uses
  the raw scale);
* categorical columns: the population stability index (PSI) over the reference's levels plus
  one bin for levels the reference never saw (a new channel), with +0.5 smoothing of counts,
  missing values as a level of their own;
* a column drifts when its score reaches ``max(threshold, noise_floor)``. The threshold is the
  effect size worth acting on (0.1 SD; PSI 0.1, the classic "moderate shift"); the noise floor
  is what sampling alone exceeds with probability at most ``noise_alpha`` at the sizes
  compared (:func:`numeric_noise_floor`: a bound from the normal approximation of the
  empirical CDFs; :func:`categorical_noise_floor`: PSI's chi-square approximation). On large
  samples the floor vanishes and the effect-size threshold decides, so large n alone never
  raises an alarm, and a column 150 customers have is not flagged for its sampling noise;
* missing values: a separate check per numerical column (share missing changed by at least
  ``missing_share_threshold`` and beyond noise), since Evidently drops them before scoring.

**Compare like with like.** The current batch is restricted to the population the model is
trained on (active customers for churn and up-sell, lapsed ones for win-back), and segment
columns are computed with the champion's global statistics (``pipelines.monitoring``), so a
changed world shows up as more customers in tier A instead of being re-normalised away.
Lifetime counters and ages (``DEFAULT_INFORMATIONAL_FEATURES``) grow with the age of the
customer base by construction; they are scored and shown but do not raise the alarm.

Event-level checks (:func:`event_window`) compare the raw events of equal-length windows before
the reference cutoff and before the current one: event-type and channel mix, product mix, and
purchase amounts (also relative to each category's reference median, the like-for-like price
signal a price rise shows up in).

Realised performance (:func:`assess_performance`) recomputes, on a batch whose labels have
matured since training, the metrics the model promised on its test cutoff (ROC AUC, PR AUC,
lift at 10%, calibration) with the same definitions as training (``training.evaluation``).
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.config import LabelParams

logger = logging.getLogger(__name__)

__all__ = [
    "CATEGORICAL_METHOD",
    "DEFAULT_INFORMATIONAL_FEATURES",
    "NUMERIC_METHOD",
    "RATE_METHOD",
    "ColumnDrift",
    "DriftReport",
    "MonitoringConfig",
    "PerformanceCheck",
    "assess_performance",
    "attach_evidently_report",
    "categorical_noise_floor",
    "category_medians",
    "column_kinds",
    "default_report_columns",
    "detect_drift",
    "event_window",
    "is_generated_ageing_column",
    "numeric_noise_floor",
    "performance_report",
    "psi_score",
    "realised_metrics",
    "register_drift_methods",
    "render_monitor_html",
    "same_weekday_cutoff",
    "signed_log",
    "task_population",
    "wasserstein_distance",
    "wasserstein_score",
]

#: Names under which the monitor's drift scores are registered with Evidently.
NUMERIC_METHOD = "crm_wasserstein_log"
CATEGORICAL_METHOD = "crm_psi"
RATE_METHOD = "crm_rate_change"

#: Level standing for a missing categorical value, and for levels the reference never saw.
MISSING_LEVEL = "(missing)"
UNSEEN_LEVEL = "(unseen)"

#: Columns that move with the calendar by construction. Lifetime counts and tenures rise for
#: every surviving customer as time passes, so two dates always differ (the customer base ages);
#: behaviour changes show in the windowed features (30/90/180/365 days), which are comparable
#: across dates. The days to the next monthly renewal rotate with the cutoff's day of month.
DEFAULT_INFORMATIONAL_FEATURES: tuple[str, ...] = (
    "tenure_days",
    "subscription_tenure_days",
    "events_total",
    "purchases_total",
    "purchase_days_total",
    "spend_total",
    "categories_total",
    "clv_frequency",
    "clv_recency_weeks",
    "clv_T_weeks",
    "rfm_f",  # quintiles of lifetime purchases and spend, with the reference's cut points
    "rfm_m",
    "rfm_score",
    "days_to_renewal",  # position in the billing cycle: moves with the cutoff's day of month
)

#: Generated columns that age the same way: lifetime counts and amounts of an export's own
#: event types (``ev_<type>_total``, ``ev_<type>_amount_total``; the lifetime *rate*
#: ``ev_<type>_per_day_total`` is comparable across dates and stays monitored) and the days
#: since a date attribute (``attr_<name>_days``, e.g. an age).
_AGEING_GENERATED = re.compile(r"^(ev_.+(?<!_per_day)_total|attr_.+_days)$")


def is_generated_ageing_column(name: str) -> bool:
    """A generated column that moves with the calendar by construction (never alarms)."""
    return bool(_AGEING_GENERATED.match(name))


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


class MonitoringConfig(BaseModel):
    """Thresholds of the drift and performance checks (the ``monitoring:`` config section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Literal["churn", "upsell", "winback"] = Field(
        "churn", description="Task whose champion `churn monitor` checks by default."
    )
    numeric_threshold: float = Field(
        0.1,
        gt=0,
        description=(
            "Drift of a numerical column worth acting on: Wasserstein distance on the signed-log "
            "scale in reference standard deviations."
        ),
    )
    categorical_threshold: float = Field(
        0.1, gt=0, description="Drift of a categorical column worth acting on: PSI."
    )
    prediction_threshold: float = Field(
        0.1,
        gt=0,
        description="Prediction drift: the numerical score of the predicted probabilities.",
    )
    noise_alpha: float = Field(
        0.001,
        gt=0,
        lt=0.5,
        description=(
            "A score must also exceed what sampling alone reaches with this probability at the "
            "sizes compared (the noise floor), so small columns do not raise false alarms."
        ),
    )
    missing_share_threshold: float = Field(
        0.1, gt=0, le=1, description="Change in a column's share of missing values that drifts."
    )
    min_drifted_features: int = Field(
        1, ge=1, description="Alarm when at least this many monitored features drift."
    )
    informational_features: tuple[str, ...] = Field(
        DEFAULT_INFORMATIONAL_FEATURES,
        description="Scored and reported, but never raise the alarm (ageing columns).",
    )
    event_window_days: int = Field(
        90, gt=0, description="Length of the event windows compared before each cutoff."
    )
    max_rows: int = Field(
        50_000, ge=100, description="Seeded sample of the current batch used for drift."
    )
    report_columns: int = Field(
        20,
        ge=0,
        description=(
            "Columns drawn in detail by Evidently in the HTML report (drifted first, then the "
            "closest to drifting); every column is scored and listed in the summary."
        ),
    )
    seed: int = 0

    # --- matured labels: target drift and realised performance ------------------------------
    label_rate_change: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Absolute change of the label rate (e.g. 0.05 = 5 points) that drifts.",
    )
    max_roc_auc_drop: float = Field(
        0.05, ge=0, description="Absolute ROC AUC drop below the promised one that decays."
    )
    max_pr_auc_drop: float = Field(
        0.2, ge=0, le=1, description="Relative PR AUC drop (0.2 = -20%) that decays."
    )
    max_lift_drop: float = Field(
        0.2, ge=0, le=1, description="Relative drop of the lift at 10% that decays."
    )
    max_calibration_gap: float = Field(
        0.05,
        ge=0,
        description="|mean predicted probability - observed rate| that decays.",
    )
    max_ece_increase: float = Field(
        0.05, ge=0, description="Increase of the expected calibration error that decays."
    )
    min_labelled_rows: int = Field(
        200, ge=1, description="Fewer matured rows than this: performance is not judged."
    )
    min_positives: int = Field(
        20, ge=1, description="Fewer positives than this: performance is not judged."
    )

    # --- what happens on an alarm -----------------------------------------------------------
    report_dir: str | None = Field(
        None, description="Where reports go; default <output_dir>/monitoring."
    )
    retrain_on_alarm: bool = Field(
        False, description="Retrain (churn retrain) when the monitor raises the alarm."
    )
    reload_url: str | None = Field(
        None,
        description=(
            "POSTed after a promotion so a running service reloads at once (e.g. "
            "http://127.0.0.1:3000/admin/reload); the service also polls the alias."
        ),
    )

    @field_validator("informational_features")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def signed_log(values: Any) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``: tames heavy tails, keeps order and sign, defined at 0."""
    array = np.asarray(values, dtype=np.float64)
    return np.sign(array) * np.log1p(np.abs(array))


def _finite(values: Any) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    return array[np.isfinite(array)]


#: Smallest scale a numerical column is measured in (a constant reference column).
_MIN_SCALE = 1e-3


def wasserstein_distance(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two 1-D samples: the area between their CDFs.

    The algorithm of ``scipy.stats.wasserstein_distance`` in plain numpy: SciPy's version ends
    in a BLAS dot product whose thread pool stalls for milliseconds per call on a busy machine.
    """
    u = np.sort(np.asarray(u, dtype=np.float64))
    v = np.sort(np.asarray(v, dtype=np.float64))
    values = np.sort(np.concatenate([u, v]))
    widths = np.diff(values)
    u_cdf = np.searchsorted(u, values[:-1], side="right") / u.size
    v_cdf = np.searchsorted(v, values[:-1], side="right") / v.size
    return float(np.sum(np.abs(u_cdf - v_cdf) * widths))


def wasserstein_score(reference: Any, current: Any) -> float:
    """Wasserstein distance on the signed-log scale, in reference standard deviations."""
    ref = signed_log(_finite(reference))
    cur = signed_log(_finite(current))
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    scale = max(float(np.std(ref)), _MIN_SCALE)
    return wasserstein_distance(ref, cur) / scale


def _levels(values: Any) -> pd.Series:
    series = pd.Series(values)
    text = series.astype(object).where(series.notna(), MISSING_LEVEL)
    return text.map(str)


def level_counts(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Counts per reference level plus one ``(unseen)`` bin for levels new in ``current``."""
    ref = _levels(reference)
    cur = _levels(current)
    ref_counts = ref.value_counts()
    levels = sorted(ref_counts.index)
    cur_counts = cur.value_counts()
    unseen = int(cur_counts[~cur_counts.index.isin(levels)].sum())
    ref_array = np.append(ref_counts.reindex(levels).to_numpy(dtype=np.float64), 0.0)
    cur_array = np.append(
        cur_counts.reindex(levels, fill_value=0).to_numpy(dtype=np.float64), unseen
    )
    return ref_array, cur_array, [*levels, UNSEEN_LEVEL]


def psi_score(reference: Any, current: Any) -> float:
    """Population stability index over the reference levels (+ unseen), counts smoothed +0.5."""
    ref_counts, cur_counts, _ = level_counts(reference, current)
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return float("nan")
    k = len(ref_counts)
    ref_share = (ref_counts + 0.5) / (ref_counts.sum() + 0.5 * k)
    cur_share = (cur_counts + 0.5) / (cur_counts.sum() + 0.5 * k)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def positive_rate(values: Any) -> float:
    """Share of 1 among the finite values of a 0/1 column (NaN when there are none)."""
    finite = _finite(values)
    return float(finite.mean()) if finite.size else float("nan")


def rate_change_score(reference: Any, current: Any) -> float:
    """Absolute change of the share of positives (label drift of a 0/1 column)."""
    return abs(positive_rate(current) - positive_rate(reference))


def numeric_noise_floor(
    reference: Any, n_current: int, *, n_reference: int | None = None, alpha: float = 0.001
) -> float:
    """The score that sampling alone exceeds with probability at most ``alpha``.

    The Wasserstein distance is the area between the two empirical CDFs,
    ``W = integral |F_n(x) - G_m(x)| dx``. With no change, ``F_n(x) - G_m(x)`` is
    approximately normal with variance ``F(x)(1 - F(x))(1/n + 1/m)`` at every ``x``; the sum
    of the absolute values of such variables has its largest upper quantiles when they move
    together, which bounds the ``1 - alpha`` quantile of ``W`` by
    ``z(1 - alpha/2) sqrt(1/n + 1/m) integral sqrt(F(1 - F)) dx``. ``F`` is the reference's
    empirical CDF on the signed-log scale; the bound is divided by the reference's standard
    deviation like the score. It is conservative for continuous features and tight for
    discrete ones (few distinct values), where a fixed multiple of the typical noise would
    raise false alarms.
    """
    from scipy.stats import norm

    ref = np.sort(signed_log(_finite(reference)))
    n_reference = ref.size if n_reference is None else n_reference
    if ref.size < 2 or n_current < 1 or n_reference < 1:
        return float("inf")
    values, first = np.unique(ref, return_index=True)
    if values.size < 2:
        return 0.0
    cdf = (np.append(first[1:], ref.size) / ref.size)[:-1]  # F just right of each value
    spread = float(np.sum(np.sqrt(cdf * (1 - cdf)) * np.diff(values)))
    scale = max(float(np.std(ref)), _MIN_SCALE)
    z = float(norm.ppf(1 - alpha / 2))
    return z * math.sqrt(1.0 / n_reference + 1.0 / n_current) * spread / scale


def categorical_noise_floor(
    n_levels: int, n_reference: int, n_current: int, *, alpha: float = 0.001
) -> float:
    """PSI that sampling alone exceeds with probability ``alpha`` (chi-square approximation).

    Under no change, ``PSI / (1/n + 1/m)`` is approximately chi-square with ``levels - 1``
    degrees of freedom.
    """
    from scipy.stats import chi2

    if n_reference < 1 or n_current < 1:
        return float("inf")
    dof = max(n_levels - 1, 1)
    return float(chi2.ppf(1 - alpha, dof) * (1.0 / n_reference + 1.0 / n_current))


def rate_noise_floor(rate: float, n_reference: int, n_current: int, *, alpha: float) -> float:
    """Change of a share that sampling alone exceeds with probability ``alpha`` (two-sided)."""
    from scipy.stats import norm

    if n_reference < 1 or n_current < 1 or not np.isfinite(rate):
        return float("inf")
    rate = min(max(rate, 1.0 / (n_reference + 1)), 1 - 1.0 / (n_reference + 1))
    se = math.sqrt(rate * (1 - rate) * (1.0 / n_reference + 1.0 / n_current))
    return float(norm.ppf(1 - alpha / 2) * se)


# --------------------------------------------------------------------------------------------
# Evidently integration
# --------------------------------------------------------------------------------------------


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

    Called by :func:`detect_drift` and :func:`performance_report`, never at import.
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


def column_kinds(frame: pd.DataFrame, columns: Iterable[str]) -> dict[str, str]:
    """``numerical`` for numeric (non-boolean) columns, ``categorical`` for everything else."""
    kinds = {}
    for column in columns:
        dtype = frame[column].dtype
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        kinds[column] = "numerical" if numeric else "categorical"
    return kinds


def _as_evidently_frame(
    frame: pd.DataFrame, kinds: dict[str, str], *, missing_as_level: bool
) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for column, kind in kinds.items():
        series = frame[column]
        if kind == "numerical":
            columns[column] = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
        elif missing_as_level:
            columns[column] = _levels(series).to_numpy(dtype=object)
        else:
            text = series.astype(object).where(series.notna(), None)
            columns[column] = text.map(lambda v: None if v is None else str(v)).to_numpy(
                dtype=object
            )
    return pd.DataFrame(columns)


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
        return {k: _json_number(v) for k, v in payload.items()}


def _json_number(value: Any) -> Any:
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
        return _levels(reference), _levels(current)
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

    The scores are the functions registered with Evidently (:func:`register_drift_methods`),
    computed directly so that scoring 100 columns takes milliseconds;
    :func:`attach_evidently_report` runs Evidently on the columns worth a chart.

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


# --------------------------------------------------------------------------------------------
# Populations and event windows
# --------------------------------------------------------------------------------------------


def task_population(
    features: pd.DataFrame, task: str, label_params: LabelParams | None = None
) -> pd.DataFrame:
    """The rows a task's model is trained on: who the current batch is compared for.

    Churn (activity) and up-sell: active customers; churn (subscription): customers with a
    subscription at the cutoff; win-back: lapsed customers (history, not active).
    """
    label_params = label_params or LabelParams()
    if "is_active" not in features.columns:
        raise ValueError("the feature table lacks is_active; it cannot be split by population")
    active = features["is_active"].fillna(False).astype(bool)
    if task == "winback":
        mask = ~active
    elif task == "churn" and label_params.churn_definition == "subscription":
        if "has_subscription" not in features.columns:
            raise ValueError("subscription churn needs has_subscription in the feature table")
        mask = features["has_subscription"].fillna(0).astype(float) > 0
    elif task in ("churn", "upsell"):
        mask = active
    else:
        raise ValueError(f"unknown task {task!r}")
    return features.loc[mask.to_numpy()]


def same_weekday_cutoff(latest: object, reference: object) -> pd.Timestamp:
    """The latest day at or before ``latest`` on the weekday of ``reference``.

    Weekly rhythms (campaign mails sent on Tuesdays, quiet weekends, B2B weekdays) move
    features like ``days_since_last_campaign_open`` or ``recency_days`` by the day of the week
    alone, so the current batch is taken on the reference cutoff's weekday.
    """
    latest = pd.Timestamp(latest).normalize()
    reference = pd.Timestamp(reference).normalize()
    return latest - pd.Timedelta(days=(latest - reference).days % 7)


def category_medians(events: pd.DataFrame) -> pd.Series:
    """Median purchase amount per product category (the reference price level)."""
    purchases = events.loc[
        (events["event_type"].astype(str) == "purchase") & events["amount"].notna()
    ]
    if "category" not in purchases.columns or purchases.empty:
        return pd.Series(dtype="float64")
    amounts = purchases["amount"].astype("float64")
    medians = amounts.groupby(purchases["category"].astype(str).to_numpy()).median()
    return medians[medians > 0]


def event_window(
    events: pd.DataFrame,
    cutoff: object,
    window_days: int,
    *,
    reference_medians: pd.Series | None = None,
) -> pd.DataFrame:
    """The events of ``[cutoff - window_days, cutoff)`` as a frame of comparable columns.

    Columns: ``event_type``, ``channel``, ``purchase_category`` and ``purchase_amount`` (only
    purchases carry them, NaN otherwise) and ``purchase_amount_vs_category`` (the amount
    divided by the category's median amount in ``reference_medians``: a price index that a
    changed product mix does not move).
    """
    cutoff = pd.Timestamp(cutoff)
    start = cutoff - pd.Timedelta(days=window_days)
    timestamps = events["timestamp"]
    window = events.loc[(timestamps >= start) & (timestamps < cutoff)]
    is_purchase = window["event_type"].astype(str).to_numpy() == "purchase"
    frame = pd.DataFrame(
        {"event_type": window["event_type"].astype(str).to_numpy()}, index=range(len(window))
    )
    if "channel" in window.columns:
        channel = window["channel"].astype(object)
        frame["channel"] = channel.where(channel.notna(), None).to_numpy()
    if "category" in window.columns:
        category = window["category"].astype(object).where(window["category"].notna(), None)
        frame["purchase_category"] = np.where(is_purchase, category.to_numpy(), None)
    if "amount" in window.columns:
        amount = pd.to_numeric(window["amount"], errors="coerce").to_numpy(dtype=np.float64)
        frame["purchase_amount"] = np.where(is_purchase, amount, np.nan)
        if reference_medians is not None and "category" in window.columns:
            median = (
                window["category"].astype(str).map(reference_medians).to_numpy(dtype=np.float64)
            )
            frame["purchase_amount_vs_category"] = np.where(is_purchase, amount / median, np.nan)
    return frame


# --------------------------------------------------------------------------------------------
# Realised performance
# --------------------------------------------------------------------------------------------

#: Metrics compared between the promise (training's test cutoff) and the matured batch.
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
        payload["realised"] = {k: _json_number(v) for k, v in self.realised.items()}
        payload["promised"] = {k: _json_number(v) for k, v in self.promised.items()}
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
    (the retention list), not at 0.5. Returns the label's drift and the Evidently snapshot.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset

    register_drift_methods()
    frames = []
    for frame in (reference, current):
        y = pd.to_numeric(frame[label], errors="coerce")
        keep = y.notna() & frame[probability].notna()
        frames.append(
            pd.DataFrame(
                {
                    "label": y[keep].astype(int).to_numpy(),
                    "probability": frame.loc[keep, probability].astype("float64").to_numpy(),
                }
            )
        )
    ref, cur = frames
    if ref.empty or cur.empty:
        raise ValueError("performance needs labelled rows in the reference and the current batch")
    ref_rate, cur_rate = positive_rate(ref["label"]), positive_rate(cur["label"])
    pooled = (ref_rate * len(ref) + cur_rate * len(cur)) / (len(ref) + len(cur))
    floor = rate_noise_floor(pooled, len(ref), len(cur), alpha=config.noise_alpha)
    effective = max(config.label_rate_change, floor)
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
            ValueDrift(column="label", method=RATE_METHOD, threshold=effective),
            ClassificationPreset(probas_threshold=threshold),
        ],
        include_tests=True,
    ).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    score = abs(cur_rate - ref_rate)
    drift = ColumnDrift(
        column=label,
        kind="categorical",
        method=RATE_METHOD,
        score=score,
        threshold=config.label_rate_change,
        noise_floor=floor,
        effective_threshold=effective,
        drifted=bool(score >= effective),
        n_reference=len(ref),
        n_current=len(cur),
        note=f"positive rate {ref_rate:.3f} at the test cutoff, {cur_rate:.3f} now",
    )
    return drift, snapshot


# --------------------------------------------------------------------------------------------
# The monitor's HTML page
# --------------------------------------------------------------------------------------------

#: Styles of the monitor's summary, scoped to its own section so Evidently's page is untouched.
_SUMMARY_STYLE = """
#crm-summary{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;
  margin:0 0 16px}
#crm-summary header{padding:16px 32px;color:#fff}
#crm-summary header.ok{background:#2f7d4f}
#crm-summary header.alarm{background:#b4232a}
#crm-summary .body{padding:4px 32px}
#crm-summary h2{margin:22px 0 8px;font-size:20px}
#crm-summary table{border-collapse:collapse;font-size:14px}
#crm-summary td,#crm-summary th{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:left}
#crm-summary th{background:#f5f7fa}
#crm-summary td.num{text-align:right;font-variant-numeric:tabular-nums}
#crm-summary tr.alarm td{background:#fdecea}
#crm-summary tr.info td{color:#7b8794}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{"" if not math.isfinite(value) else f"{value:.3f}"}</td>'
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _number_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _drift_table(report: dict[str, Any], limit: int = 40) -> str:
    rows = []
    for column in report["columns"][:limit]:
        css = "alarm" if column["alarm"] else ("info" if column["informational"] else "")
        verdict = (
            "drift" if column["drifted"] else ("missing share" if column["missing_drifted"] else "")
        )
        if column["informational"] and verdict:
            verdict += " (informational)"
        score = column["score"] if column["score"] is not None else float("nan")
        limit_value = (
            column["effective_threshold"]
            if column["effective_threshold"] is not None
            else float("nan")
        )
        rows.append(
            f'<tr class="{css}">'
            + _cell(column["column"])
            + _cell(score)
            + _cell(limit_value)
            + _cell(column["method"])
            + _cell(verdict or column.get("note") or "")
            + "</tr>"
        )  # fmt: skip
    more = len(report["columns"]) - limit
    footer = (
        f"<p>{more} more columns without drift are in the JSON summary.</p>" if more > 0 else ""
    )
    return (
        "<table><tr><th>column</th><th>score</th><th>drifts at</th><th>method</th>"
        "<th>verdict</th></tr>" + "".join(rows) + "</table>" + footer
    )


def _summary_section(summary: dict[str, Any]) -> str:
    alarm = bool(summary.get("alarm"))
    reasons = summary.get("alarm_reasons", [])
    verdict = (
        "ALARM: " + "; ".join(reasons)
        if alarm
        else "No alarm: no drift or decay past the thresholds"
    )
    model = html.escape(str(summary.get("model", "")))
    parts = [
        f"<section id='crm-summary'><style>{_SUMMARY_STYLE}</style>",
        f"<header class='{'alarm' if alarm else 'ok'}'><h1>Model monitor: {model}</h1>",
        f"<p>{html.escape(verdict)}</p>",
        f"<p>Reference: test cutoff {html.escape(str(summary.get('reference_cutoff')))} "
        f"({summary.get('n_reference', 0):,} customers) &middot; current batch: "
        f"{html.escape(str(summary.get('current_cutoff')))} "
        f"({summary.get('n_current', 0):,} customers)</p></header><div class='body'>",
    ]
    for key, title in (
        ("feature_drift", "Customer features"),
        ("prediction_drift", "Predictions"),
        ("event_drift", "Raw events (equal windows before each cutoff)"),
    ):
        if summary.get(key):
            parts.append(f"<h2>{html.escape(title)}</h2>" + _drift_table(summary[key]))
    performance = summary.get("performance")
    if performance and performance.get("sufficient"):
        rows = "".join(
            "<tr>"
            + _cell(name)
            + _cell(_number_or_nan(performance["promised"].get(name)))
            + _cell(_number_or_nan(performance["realised"].get(name)))
            + "</tr>"
            for name in PERFORMANCE_METRICS
        )
        parts.append(
            "<h2>Realised performance on matured labels</h2>"
            f"<p>Cutoff {html.escape(str(performance.get('cutoff')))}: "
            f"{performance['n_rows']:,} customers, {performance['n_positive']:,} positives.</p>"
            "<table><tr><th>metric</th><th>promised (test cutoff)</th><th>realised</th></tr>"
            + rows
            + "</table>"
        )
        for reason in performance.get("reasons", []):
            parts.append(f"<p><strong>Decay:</strong> {html.escape(reason)}</p>")
    else:
        note = (performance or {}).get("note") or summary.get("performance_note")
        if note:
            parts.append(f"<h2>Realised performance</h2><p>{html.escape(str(note))}</p>")
    parts.append(
        "<p>Detailed Evidently charts follow (drifted columns first, then the closest to "
        "drifting); every column's score is in the JSON summary.</p></div></section>"
    )
    return "".join(parts)


def render_monitor_html(summary: dict[str, Any], snapshots: Sequence[tuple[str, Any]]) -> str:
    """One self-contained page: the verdict and tables, then the Evidently reports.

    ``snapshots``: (title, Evidently snapshot) pairs, drawn as titled groups in one Evidently
    dashboard (one copy of its JavaScript, however many reports).
    """
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget

    widgets = []
    for title, snapshot in snapshots:
        if snapshot is not None:
            model = snapshot.to_snapshot_model()
            widgets.append(group_widget(title=title, widgets=list(model.widgets)))
    section = _summary_section(summary)
    if not widgets:
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Model monitor</title></head><body>{section}</body></html>"
        )
    document = render_widgets(widgets, as_iframe=False)
    body = document.index("<body>") + len("<body>")
    return document[:body] + section + document[body:]
