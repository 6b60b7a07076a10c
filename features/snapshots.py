"""The feature engine end to end: features at one cutoff, and the stacked training table.

:func:`build_features` runs the three phases at one cutoff:

1. ``features.lifecycle.compute_customer_features``: per-customer, point-in-time features
   (pure per customer, so partition-safe);
2. ``features.segments.fit_global_stats``: what needs the whole customer base (CLV model fits,
   RFM and value-tier cut points), skipped when ``stats`` are given (e.g. when scoring with the
   statistics of a training run);
3. ``features.segments.apply_global_stats``: CLV and segment columns, row-wise given the
   statistics.

:func:`build_snapshots` stacks features and labels (``features.labels``) over several cutoffs
into the training table: one row per (customer, cutoff), ``customer_id`` and ``cutoff``
columns first, labels last. Each cutoff's global statistics are fitted on that cutoff's own
features, so no information from a later cutoff reaches an earlier snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pandas as pd

from features.config import FeatureParams, LabelParams
from features.labels import build_labels
from features.lifecycle import as_cutoff, compute_customer_features
from features.segments import GlobalStats, apply_global_stats, fit_global_stats
from features.vocabulary import EventVocabulary, fit_vocabulary

__all__ = ["build_features", "build_snapshots", "stats_key"]


def stats_key(cutoff: object) -> str:
    """Key of a cutoff in the statistics dict of :func:`build_snapshots` (``YYYY-MM-DD``)."""
    return str(as_cutoff(cutoff).date())


def build_features(
    events: pd.DataFrame,
    cutoff: object,
    *,
    customers: pd.DataFrame | None = None,
    subscriptions: pd.DataFrame | None = None,
    params: FeatureParams,
    stats: GlobalStats | None = None,
    label_params: LabelParams | None = None,
    vocabulary: EventVocabulary | None = None,
) -> tuple[pd.DataFrame, GlobalStats]:
    """Phases 1-3 at ``cutoff``: the full feature table (indexed by ``customer_id``) and stats.

    ``stats`` given: phase 2 is skipped and those statistics are applied (returned unchanged),
    with the event vocabulary they carry (a training run's columns). Otherwise the vocabulary
    is ``vocabulary`` or, when None, fitted on the events before ``cutoff``
    (``params.vocabulary``), and stored in the returned statistics.
    ``label_params`` defines ``is_active`` (default ``LabelParams()``).
    """
    if stats is not None:
        vocabulary = stats.event_vocabulary()
    elif vocabulary is None:
        vocabulary = fit_vocabulary(events, as_cutoff(cutoff), params.vocabulary)
    features = compute_customer_features(
        events,
        cutoff,
        customers=customers,
        subscriptions=subscriptions,
        params=params,
        label_params=label_params,
        vocabulary=vocabulary,
    )
    if stats is None:
        stats = fit_global_stats(features, params)
        if vocabulary is not None:
            stats = replace(stats, vocabulary=vocabulary.to_dict())
    return apply_global_stats(features, stats, params), stats


def _cutoff_list(cutoffs: Iterable[object]) -> list[pd.Timestamp]:
    resolved = sorted({as_cutoff(c) for c in cutoffs})
    if not resolved:
        raise ValueError("build_snapshots needs at least one cutoff")
    return resolved


def build_snapshots(
    events: pd.DataFrame,
    cutoffs: Iterable[object],
    *,
    customers: pd.DataFrame | None = None,
    subscriptions: pd.DataFrame | None = None,
    feature_params: FeatureParams,
    label_params: LabelParams,
    data_end: object | None = None,
    stats_cutoff: object | None = None,
) -> tuple[pd.DataFrame, dict[str, GlobalStats]]:
    """Features and labels stacked over ``cutoffs``; returns the table and the stats per cutoff.

    ``data_end`` (end of the observed data, default the latest event timestamp) decides which
    label windows have matured; rows of unmatured cutoffs keep their features with NaN labels
    and ``label_matured`` False, so the same table serves training and scoring.

    ``stats_cutoff``: by default each cutoff's statistics are fitted on its own features. Given
    a date, the statistics are fitted once on the features at that date and applied to every
    cutoff (stable segment definitions across snapshots); it must not be after the earliest
    cutoff, or later information would reach the earlier snapshots. The dict maps
    :func:`stats_key` of each cutoff to the statistics used for it.
    """
    resolved = _cutoff_list(cutoffs)
    # One vocabulary for every cutoff (the same columns), from what was known at the earliest:
    # so no snapshot depends on later data, not even through which columns it has.
    vocabulary = fit_vocabulary(events, resolved[0], feature_params.vocabulary)
    if data_end is None:
        data_end = events["timestamp"].max()
    data_end = pd.Timestamp(data_end)
    if data_end is pd.NaT:
        raise ValueError("data_end is unknown: no events and no data_end given")
    shared_stats: GlobalStats | None = None
    if stats_cutoff is not None:
        stats_cutoff = as_cutoff(stats_cutoff)
        if stats_cutoff > resolved[0]:
            raise ValueError(
                f"stats_cutoff {stats_cutoff.date()} is after the earliest cutoff "
                f"{resolved[0].date()}: its statistics would leak later data into that snapshot"
            )
        _, shared_stats = build_features(
            events,
            stats_cutoff,
            customers=customers,
            subscriptions=subscriptions,
            params=feature_params,
            label_params=label_params,
            vocabulary=vocabulary,
        )

    tables: list[pd.DataFrame] = []
    stats_by_cutoff: dict[str, GlobalStats] = {}
    for cutoff in resolved:
        features, stats = build_features(
            events,
            cutoff,
            customers=customers,
            subscriptions=subscriptions,
            params=feature_params,
            stats=shared_stats,
            label_params=label_params,
            vocabulary=vocabulary,
        )
        stats_by_cutoff[stats_key(cutoff)] = stats
        population = pd.DataFrame(
            {
                "customer_id": features.index.to_numpy(),
                "is_active": features["is_active"].to_numpy(),
            }
        )
        labels = build_labels(
            events,
            cutoff,
            population=population,
            subscriptions=subscriptions,
            params=label_params,
            data_end=data_end,
        )
        columns = {"customer_id": features.index.to_numpy(dtype=object)}
        columns.update({name: features[name].to_numpy() for name in features})
        columns.update({name: labels[name].to_numpy() for name in labels})
        tables.append(pd.DataFrame(columns, copy=False))

    if len(tables) == 1:
        return tables[0], stats_by_cutoff
    return pd.concat(tables, ignore_index=True), stats_by_cutoff
