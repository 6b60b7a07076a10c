"""Array primitives of the feature engine: time buckets, per-customer counts, distinct pairs.

Shared by ``features.lifecycle`` (the lifecycle features), ``features.vocabulary`` (per event
type features) and ``features.labels``. Everything works on int64 codes and nanosecond
timestamps with numpy only, no group-bys (see the performance notes in ``features.lifecycle``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NS_PER_DAY = 86_400 * 10**9
_INT64_MIN = np.iinfo(np.int64).min
_INT64_MAX = np.iinfo(np.int64).max

#: A (customer, value) presence bitmap is used while it stays below this many cells; above it,
#: distinct pairs are found by sorting int64 keys instead.
_BITMAP_MAX_CELLS = 400_000_000


def _buckets(ts: np.ndarray, cutoff_ns: int, boundaries_days: Sequence[int]) -> np.ndarray:
    """Time bucket per event: 0 = at/after the cutoff, k = between boundaries k-1 and k.

    With boundaries ``d_1 < ... < d_m`` days, bucket 1 is ``[cutoff - d_1, cutoff)``, bucket
    ``k`` is ``[cutoff - d_k, cutoff - d_(k-1))`` and bucket ``m + 1`` is everything older. A
    window of ``d_k`` days is buckets ``1..k``.
    """
    bucket = (ts < cutoff_ns).view(np.int8).copy()
    for days in boundaries_days:
        bucket += ts < cutoff_ns - int(days) * NS_PER_DAY
    return bucket


def _boundaries(*groups: Sequence[int]) -> tuple[int, ...]:
    days = sorted({int(d) for group in groups for d in group})
    if not days or days[0] <= 0:
        raise ValueError(f"windows must be positive numbers of days, got {days}")
    return tuple(days)


def _cumulative(counts: np.ndarray) -> np.ndarray:
    """Per-bucket sums (last axis, bucket 0 = future dropped) to within-window sums."""
    return np.cumsum(counts[..., 1:], axis=-1)


def _pair_counts(
    codes: np.ndarray, values: np.ndarray, n: int, n_values: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``values`` per customer code, and the set of (code, value) pairs present.

    The set is a bool bitmap of shape (n, n_values) while that is small enough, else the sorted
    distinct int64 keys ``code * n_values + value``; :func:`_count_new` accepts either.
    """
    if n * n_values <= _BITMAP_MAX_CELLS:
        bitmap = np.zeros(n * n_values, dtype=bool)
        bitmap[codes * n_values + values] = True
        bitmap = bitmap.reshape(n, n_values)
        return np.count_nonzero(bitmap, axis=1), bitmap
    keys = _distinct_keys(codes * n_values + values)
    return np.bincount(keys // n_values, minlength=n), keys


def _distinct_keys(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct int64 keys (sort + diff: much faster than np.unique here)."""
    ordered = np.sort(keys)
    if ordered.size == 0:
        return ordered
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _count_new(recent: np.ndarray, older: np.ndarray, n: int, n_values: int) -> np.ndarray:
    """Per customer: pairs present in ``recent`` but not in ``older`` (both from _pair_counts)."""
    if recent.ndim == 2:
        return np.count_nonzero(recent & ~older, axis=1)
    new = recent[~np.isin(recent, older, assume_unique=True)]
    return np.bincount(new // n_values, minlength=n)


def _first_of_groups(sorted_codes: np.ndarray) -> np.ndarray:
    first = np.empty(sorted_codes.size, dtype=bool)
    if sorted_codes.size:
        first[0] = True
        np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=first[1:])
    return first


def weighted_bincount(keys: np.ndarray, *, weights: np.ndarray, minlength: int) -> np.ndarray:
    """``np.bincount`` with weights, always float64 (numpy returns int64 for empty input)."""
    return np.bincount(keys, weights=weights, minlength=minlength).astype(np.float64, copy=False)


def _days(delta_ns: np.ndarray) -> np.ndarray:
    return delta_ns / NS_PER_DAY


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (an undefined ratio)."""
    positive = denominator > 0
    return np.where(positive, numerator / np.where(positive, denominator, 1), np.nan)
