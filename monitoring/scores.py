"""Drift scores of one column, and the noise floor sampling alone reaches at the sizes compared.

Plain numpy and SciPy, no Evidently: ``monitoring.drift`` calls them directly (100 columns in
milliseconds) and ``monitoring.evidently_report`` registers the same functions with Evidently
under the method names below, so both compute the same numbers.

* numerical columns: the Wasserstein distance between the two samples after a signed log
  transform (``sign(x) log(1 + |x|)``), divided by the reference's standard deviation on that
  scale, i.e. "how far the distribution moved, in standard deviations". The transform matters:
  money and count features are heavy-tailed, and on the raw scale a few large B2B accounts set
  the standard deviation, hiding a shift of everyone else (Evidently's ``wasserstein`` uses
  the raw scale);
* categorical columns: the population stability index (PSI) over the reference's levels plus
  one bin for levels the reference never saw (a new channel), with +0.5 smoothing of counts,
  missing values as a level of their own;
* 0/1 columns (the label): the absolute change of the share of positives.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CATEGORICAL_METHOD",
    "MISSING_LEVEL",
    "NUMERIC_METHOD",
    "RATE_METHOD",
    "UNSEEN_LEVEL",
    "categorical_levels",
    "categorical_noise_floor",
    "level_counts",
    "numeric_noise_floor",
    "positive_rate",
    "psi_score",
    "rate_change_score",
    "rate_noise_floor",
    "signed_log",
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


def categorical_levels(values: Any) -> pd.Series:
    """Values as text levels, missing values as the level ``(missing)`` (information too)."""
    series = pd.Series(values)
    text = series.astype(object).where(series.notna(), MISSING_LEVEL)
    return text.map(str)


def level_counts(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Counts per reference level plus one ``(unseen)`` bin for levels new in ``current``."""
    ref = categorical_levels(reference)
    cur = categorical_levels(current)
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
