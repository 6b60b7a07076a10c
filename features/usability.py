"""Is there enough data for a churn model worth trusting? Checked before any modelling.

A model trained on 30 churners, or on labels whose window has not finished yet, produces numbers
that look like predictions but are noise. ``assess_usability`` looks at the validated tables and
the planned cutoffs and says, in plain words with a recommendation for each finding, whether the
data is usable, usable with warnings, or not usable:

* enough customers with history before each cutoff;
* a history span before the first cutoff of at least twice the label horizon plus lead, so that
  look-back features and the label window are not cut short;
* for each cutoff whose label window has matured (cutoff + lead + horizon <= last event), enough
  active customers who churn and who stay, under the configured churn definition;
* missing-value shares per column and which event types the export covers.

Churners are counted with the training code itself, so the check and the training table agree
exactly: at each cutoff the population is built as ``features.snapshots`` builds it (the
customers with history before the cutoff and their ``is_active`` flag, from
``features.lifecycle.compute_customer_features``) and labelled by
``features.labels.build_labels``. Active customers are the churn-eligible ones (a qualifying
event in the active window, or under ``churn_definition="subscription"`` an active
subscription); churners and stayers are their churn labels 1 and 0. The label window is the
training window (``LabelParams.for_training()``: ``training_horizon_days`` when set).

Recommendations that change the cutoffs or the training window are only made when, applied,
they leave at least :data:`MIN_MATURED_CUTOFFS` cutoffs with matured labels (training needs a
train, a validation and a test cutoff); the setting is in the finding's
``details["setting"]`` (``cutoffs``: ``last``/``count``/``every_days``, and ``labels``:
``training_horizon_days`` when the window has to be shorter).

Thresholds: a count below the minimum at a single cutoff is a warning (training pools the
matured cutoffs); below the minimum over all matured cutoffs together, or no matured cutoff at
all, the data is not usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.config import FeatureParams, LabelParams
from features.contract import EVENT_TYPES
from features.files import jsonable
from features.labels import build_labels, label_window
from features.lifecycle import compute_customer_features

Severity = Literal["error", "warning", "info"]
Verdict = Literal["usable", "usable with warnings", "not usable"]

#: A column missing in more than this share of the rows where it applies gets a warning.
MISSING_SHARE_WARNING = 0.5

#: Event columns that only apply to purchases: their missing share is measured on purchases.
_PURCHASE_COLUMNS = ("amount", "quantity", "category")

#: Training needs a train, a validation and a test cutoff with matured labels.
MIN_MATURED_CUTOFFS = 3

#: Recommended cutoff grids have at most this many cutoffs.
MAX_RECOMMENDED_CUTOFFS = 12

#: Cutoff spacing assumed when it cannot be read from the cutoffs given.
DEFAULT_EVERY_DAYS = 30

#: Recommended cutoffs are never closer together than this (unless configured closer).
MIN_RECOMMENDED_EVERY_DAYS = 7


@dataclass(frozen=True)
class Finding:
    """One observation about the data, with what to do about it."""

    code: str
    severity: Severity  # error: not usable; warning: usable with care; info: for the record
    message: str
    recommendation: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "recommendation": self.recommendation,
            "details": jsonable(self.details),
        }


@dataclass(frozen=True)
class CutoffCounts:
    """Customers and churn outcomes at one cutoff (outcomes ``None`` until the window matures)."""

    cutoff: pd.Timestamp
    customers_with_history: int
    active_customers: int
    label_window_end: pd.Timestamp
    matured: bool
    churners: int | None
    non_churners: int | None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


@dataclass(frozen=True)
class UsabilityReport:
    """The verdict, the findings behind it and the per-cutoff counts."""

    verdict: Verdict
    findings: tuple[Finding, ...]
    cutoffs: tuple[CutoffCounts, ...]
    events: int
    customers_with_events: int
    first_event: pd.Timestamp | None
    last_event: pd.Timestamp | None
    missing_shares: dict[str, dict[str, float]]
    event_type_counts: dict[str, int]

    @property
    def usable(self) -> bool:
        return self.verdict != "not usable"

    def finding(self, code: str) -> Finding | None:
        """The finding with this code, or ``None``."""
        return next((finding for finding in self.findings if finding.code == code), None)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(finding.code for finding in self.findings)

    def cutoff_table(self) -> pd.DataFrame:
        """The per-cutoff counts as a DataFrame, one row per cutoff."""
        return pd.DataFrame([asdict(counts) for counts in self.cutoffs])

    def render(self) -> str:
        """Readable text: verdict, data span, per-cutoff counts, findings with recommendations."""
        lines = [f"Data usability: {self.verdict.upper()}"]
        if self.first_event is not None:
            span = (self.last_event - self.first_event) / pd.Timedelta(days=1)
            lines.append(
                f"  {self.events:,} events of {self.customers_with_events:,} customers, "
                f"{self.first_event:%Y-%m-%d} to {self.last_event:%Y-%m-%d} ({span:,.0f} days)"
            )
        if self.cutoffs:
            lines.append(
                f"  {'cutoff':<12}{'history':>10}{'active':>10}{'churners':>10}"
                f"{'stayers':>10}  label window"
            )
            for counts in self.cutoffs:
                churners = "-" if counts.churners is None else f"{counts.churners:,}"
                stayers = "-" if counts.non_churners is None else f"{counts.non_churners:,}"
                window = "matured" if counts.matured else "not matured"
                lines.append(
                    f"  {counts.cutoff:%Y-%m-%d}  {counts.customers_with_history:>10,}"
                    f"{counts.active_customers:>10,}{churners:>10}{stayers:>10}  "
                    f"{window} (ends {counts.label_window_end:%Y-%m-%d})"
                )
        for finding in self.findings:
            lines.append(f"  [{finding.severity}] {finding.message}")
            if finding.recommendation:
                lines.append(f"      -> {finding.recommendation}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``json.dumps`` works on it as is)."""
        return {
            "verdict": self.verdict,
            "events": int(self.events),
            "customers_with_events": int(self.customers_with_events),
            "first_event": jsonable(self.first_event),
            "last_event": jsonable(self.last_event),
            "cutoffs": [counts.to_dict() for counts in self.cutoffs],
            "findings": [finding.to_dict() for finding in self.findings],
            "missing_shares": jsonable(self.missing_shares),
            "event_type_counts": jsonable(self.event_type_counts),
        }


def assess_usability(
    events: pd.DataFrame,
    labels: LabelParams,
    cutoffs: Sequence[pd.Timestamp],
    customers: pd.DataFrame | None = None,
    min_customers: int = 500,
    min_positives: int = 50,
    min_negatives: int = 50,
    subscriptions: pd.DataFrame | None = None,
    data_end: pd.Timestamp | None = None,
    every_days: int | None = None,
) -> UsabilityReport:
    """Check that the validated tables can support a trustworthy churn model at these cutoffs.

    ``events`` (and ``customers``/``subscriptions``) are the clean tables of
    ``features.validation``. ``subscriptions`` is needed only when
    ``labels.churn_definition == "subscription"``. ``data_end`` is the end of the observed
    history (the pipeline uses the day after the last event, as ``features.labels`` does);
    without it, the last event's timestamp. ``every_days`` is the spacing of recommended
    cutoff grids (default: the spacing of ``cutoffs``, else 30 days).
    """
    cutoff_times = _normalise_cutoffs(cutoffs)
    if every_days is None:
        every_days = _spacing(cutoff_times)
    scoring_labels = labels
    labels = labels.for_training()
    findings: list[Finding] = []
    missing_shares = {"events": _missing_shares_events(events)}
    if customers is not None:
        missing_shares["customers"] = _missing_shares(customers)
    type_counts = _event_type_counts(events)

    if len(events) == 0:
        findings.append(
            Finding(
                "no_events",
                "error",
                "the events table is empty",
                "load the interaction history; nothing can be modelled without it",
            )
        )
        return _report(findings, (), events, 0, None, None, missing_shares, type_counts)

    _, n_customers = _customer_codes(events["customer_id"])
    timestamps = events["timestamp"].to_numpy(dtype="datetime64[ns]")
    first_event, last_event = pd.Timestamp(timestamps.min()), pd.Timestamp(timestamps.max())
    observed_end = last_event if data_end is None else max(last_event, pd.Timestamp(data_end))
    plans = _Plans(first_event, observed_end, labels, every_days)
    if scoring_labels.training_horizon_days is not None:
        findings.append(
            Finding(
                "training_horizon",
                "info",
                f"labels are counted on the training window of {labels.horizon_days} days "
                f"(labels.training_horizon_days); churn is scored for "
                f"{scoring_labels.horizon_days} days (labels.horizon_days)",
                "the model learns churn within the training window: read its scores as that",
                {
                    "training_horizon_days": labels.horizon_days,
                    "horizon_days": scoring_labels.horizon_days,
                },
            )
        )

    if not cutoff_times:
        findings.append(
            Finding(
                "no_cutoffs",
                "error",
                "no cutoffs were given, so no snapshot and no label can be built",
                "configure cutoffs (explicit dates, or last/count/every_days)",
            )
        )
        counts: tuple[CutoffCounts, ...] = ()
    else:
        findings += _history_span(first_event, cutoff_times[0], labels, plans)
        counts, churn_findings = _cutoff_counts(
            events, labels, cutoff_times, observed_end, customers, subscriptions
        )
        findings += churn_findings
        findings += _customer_findings(counts, min_customers)
        findings += _outcome_findings(
            counts, labels, observed_end, min_positives, min_negatives, plans
        )
    findings += _event_type_findings(type_counts, labels)
    findings += _missing_share_findings(missing_shares)
    if customers is not None and "customer_id" in customers.columns:
        findings += _customers_without_events(customers, events)
    return _report(
        findings, counts, events, n_customers, first_event, last_event, missing_shares, type_counts
    )


def count_churn_at_cutoffs(
    events: pd.DataFrame,
    labels: LabelParams,
    cutoffs: Sequence[pd.Timestamp],
    subscriptions: pd.DataFrame | None = None,
    *,
    customers: pd.DataFrame | None = None,
    data_end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Per cutoff: customers with history, active customers, churners and non-churners.

    Counted as ``assess_usability`` counts them (the training population and
    ``build_labels`` on the training window). Churners/non-churners are None for cutoffs whose
    label window has not matured by ``data_end`` (default: the last event's timestamp).
    """
    if len(events) == 0:
        return pd.DataFrame(columns=[f.name for f in CutoffCounts.__dataclass_fields__.values()])
    _customer_codes(events["customer_id"])  # refuses raw tables with missing ids
    last_event = pd.Timestamp(events["timestamp"].max())
    observed_end = last_event if data_end is None else max(last_event, pd.Timestamp(data_end))
    counts, _ = _cutoff_counts(
        events,
        labels.for_training(),
        _normalise_cutoffs(cutoffs),
        observed_end,
        customers,
        subscriptions,
    )
    return pd.DataFrame([asdict(c) for c in counts])


# --------------------------------------------------------------------------------------------
# Counting


def _cutoff_counts(
    events: pd.DataFrame,
    labels: LabelParams,
    cutoffs: list[pd.Timestamp],
    data_end: pd.Timestamp,
    customers: pd.DataFrame | None,
    subscriptions: pd.DataFrame | None,
) -> tuple[tuple[CutoffCounts, ...], list[Finding]]:
    """Population and churn labels at each cutoff, with the snapshot and label code."""
    findings: list[Finding] = []
    by_subscription = labels.churn_definition == "subscription"
    if by_subscription and subscriptions is None:
        findings.append(
            Finding(
                "subscriptions_missing",
                "error",
                "churn_definition is 'subscription' but no subscriptions table was given, so "
                "churners cannot be counted",
                "configure data.subscriptions, or use churn_definition 'activity'",
            )
        )
    tables = _CountingTables.of(events, customers, subscriptions)
    rows = []
    for cutoff in cutoffs:  # a handful of cutoffs
        _, window_end = label_window(cutoff, labels)
        population = tables.population(cutoff, labels)
        active = population["is_active"].to_numpy(dtype=bool)
        churners = non_churners = None
        matured = window_end <= data_end
        if matured and not (by_subscription and subscriptions is None):
            churn = build_labels(
                tables.events,
                cutoff,
                population=population,
                subscriptions=tables.subscriptions,
                params=labels,
                data_end=data_end,
            )["churn_label"].to_numpy()
            churners = int(np.count_nonzero(churn == 1))
            non_churners = int(np.count_nonzero(churn == 0))
        rows.append(
            CutoffCounts(
                cutoff=cutoff,
                customers_with_history=len(population),
                active_customers=int(np.count_nonzero(active)),
                label_window_end=window_end,
                matured=bool(matured),
                churners=churners,
                non_churners=non_churners,
            )
        )
    return tuple(rows), findings


@dataclass(frozen=True)
class _CountingTables:
    """The columns of the clean tables that decide population and churn, nothing more.

    Features other than ``is_active`` are not needed, so the amounts, categories and customer
    attributes are left out (phase 1 then skips their passes).
    """

    events: pd.DataFrame
    customers: pd.DataFrame | None
    subscriptions: pd.DataFrame | None

    @classmethod
    def of(
        cls,
        events: pd.DataFrame,
        customers: pd.DataFrame | None,
        subscriptions: pd.DataFrame | None,
    ) -> _CountingTables:
        slim_events = events[["customer_id", "timestamp", "event_type"]]
        slim_customers = None
        if customers is not None and "signup_date" in customers.columns:
            slim_customers = customers[["customer_id", "signup_date"]]
        slim_subscriptions = None
        if subscriptions is not None:
            slim_subscriptions = pd.DataFrame(
                {
                    "customer_id": subscriptions["customer_id"],
                    "plan": subscriptions.get("plan"),
                    "start_date": subscriptions["start_date"],
                    "end_date": (
                        subscriptions["end_date"]
                        if "end_date" in subscriptions
                        else pd.Series(pd.NaT, index=subscriptions.index, dtype="datetime64[ns]")
                    ),
                    "mrr": (
                        pd.to_numeric(subscriptions["mrr"]).fillna(0.0)
                        if "mrr" in subscriptions
                        else 0.0
                    ),
                },
                index=subscriptions.index,
            )
        return cls(slim_events, slim_customers, slim_subscriptions)

    def population(self, cutoff: pd.Timestamp, labels: LabelParams) -> pd.DataFrame:
        """``customer_id`` and ``is_active`` of the customers with history before ``cutoff``."""
        features = compute_customer_features(
            self.events,
            cutoff,
            customers=self.customers,
            subscriptions=self.subscriptions,
            params=FeatureParams(),
            label_params=labels,
        )
        return pd.DataFrame(
            {
                "customer_id": features.index.to_numpy(dtype=object),
                "is_active": features["is_active"].to_numpy(dtype=bool),
            }
        )


# --------------------------------------------------------------------------------------------
# Recommended settings


class _Plans:
    """Cutoff grids (and, when needed, a shorter training window) that leave enough matured
    cutoffs: every cutoff's label window ends by the end of the data."""

    def __init__(
        self,
        first_event: pd.Timestamp,
        data_end: pd.Timestamp,
        labels: LabelParams,
        every_days: int,
    ) -> None:
        self.first_day = first_event.ceil("D")
        self.data_end = data_end
        self.labels = labels
        self.every_days = max(int(every_days), 1)

    def grid(
        self, horizon_days: int, min_history_days: int, min_every_days: int
    ) -> dict[str, Any] | None:
        """The longest grid (up to the maximum count) of matured cutoffs whose first cutoff has
        ``min_history_days`` of history, ``every_days`` apart (closer, down to
        ``min_every_days``, when the minimum count does not fit otherwise), or None."""
        span = pd.Timedelta(days=self.labels.lead_days + horizon_days)
        latest = (self.data_end - span).floor("D")
        earliest = self.first_day + pd.Timedelta(days=min_history_days)
        room = (latest - earliest).days
        every = self.every_days
        if room < (MIN_MATURED_CUTOFFS - 1) * every:
            every = room // (MIN_MATURED_CUTOFFS - 1)
            if every < max(min_every_days, 1):
                return None
        count = min(room // every + 1, MAX_RECOMMENDED_CUTOFFS)
        return {"last": f"{latest:%Y-%m-%d}", "count": int(count), "every_days": int(every)}

    def _history(self, horizon_days: int, strict: bool) -> int:
        if strict:
            return 2 * (horizon_days + self.labels.lead_days)
        return self.labels.active_window_days

    def suggest(self, *, strict_history: bool) -> dict[str, Any] | None:
        """A setting with at least the minimum matured cutoffs, the first that exists of:

        1. a cutoff grid at the configured training window, with the full history before the
           first cutoff (twice lead + horizon); with ``strict_history`` False, then one with
           only the active window of history;
        2. the longest shorter training window (``labels.training_horizon_days``) that allows a
           grid at the configured spacing, then one with cutoffs down to a week apart.

        None when not even a one-day window does.
        """
        horizon = self.labels.horizon_days
        closest = min(self.every_days, MIN_RECOMMENDED_EVERY_DAYS)
        for strict in (True,) if strict_history else (True, False):
            grid = self.grid(horizon, self._history(horizon, strict), closest)
            if grid is not None:
                return {"cutoffs": grid}
        for min_every in dict.fromkeys((self.every_days, closest)):
            for shorter in range(horizon - 1, 0, -1):
                history = self._history(shorter, strict_history)
                grid = self.grid(shorter, history, min_every)
                if grid is not None:
                    return {"cutoffs": grid, "labels": {"training_horizon_days": shorter}}
        return None


def _describe(setting: dict[str, Any]) -> str:
    grid = setting["cutoffs"]
    text = (
        f"cutoffs: {{last: {grid['last']}, count: {grid['count']}, "
        f"every_days: {grid['every_days']}}}"
    )
    if "labels" in setting:
        text = (
            f"labels.training_horizon_days: {setting['labels']['training_horizon_days']} and "
            + text
        )
    return text


# --------------------------------------------------------------------------------------------
# Findings


def _history_span(
    first_event: pd.Timestamp, first_cutoff: pd.Timestamp, labels: LabelParams, plans: _Plans
) -> list[Finding]:
    span_days = (first_cutoff - first_event) / pd.Timedelta(days=1)
    required_days = 2 * (labels.horizon_days + labels.lead_days)
    details: dict[str, Any] = {
        "history_days_before_first_cutoff": span_days,
        "required_days": required_days,
    }
    setting = plans.suggest(strict_history=True)
    if setting is None:
        advice = (
            "load older history: no cutoff grid leaves enough history before its first cutoff "
            f"and {MIN_MATURED_CUTOFFS} matured label windows"
        )
    else:
        details["setting"] = setting
        advice = (
            f"use {_describe(setting)} (every cutoff has the history and a matured label "
            "window), or load older history"
        )
    if span_days <= 0:
        return [
            Finding(
                "history_span",
                "error",
                f"no history before the first cutoff {first_cutoff:%Y-%m-%d} (first event "
                f"{first_event:%Y-%m-%d})",
                advice,
                details,
            )
        ]
    if span_days < required_days:
        return [
            Finding(
                "history_span",
                "warning",
                f"only {span_days:,.0f} days of history before the first cutoff "
                f"{first_cutoff:%Y-%m-%d}; at least {required_days} (twice horizon + lead) are "
                "needed for look-back features to be comparable across cutoffs",
                advice,
                details,
            )
        ]
    return []


def _customer_findings(counts: tuple[CutoffCounts, ...], min_customers: int) -> list[Finding]:
    short = [c for c in counts if c.customers_with_history < min_customers]
    if not short:
        return []
    listed = ", ".join(f"{c.customers_with_history:,} at {c.cutoff:%Y-%m-%d}" for c in short)
    every = len(short) == len(counts)
    return [
        Finding(
            "few_customers",
            "error" if every else "warning",
            f"fewer than {min_customers:,} customers with history before the cutoff: {listed}",
            (
                "load more customers or a longer history; with so few customers the model "
                "cannot be trusted"
                if every
                else "drop the early cutoffs or load older history"
            ),
            {"min_customers": min_customers},
        )
    ]


def _outcome_findings(
    counts: tuple[CutoffCounts, ...],
    labels: LabelParams,
    last_event: pd.Timestamp,
    min_positives: int,
    min_negatives: int,
    plans: _Plans,
) -> list[Finding]:
    findings: list[Finding] = []
    matured = [c for c in counts if c.matured and c.churners is not None]
    pending = [c for c in counts if not c.matured]
    setting = plans.suggest(strict_history=False)
    suggestion = "" if setting is None else f"use {_describe(setting)}"
    setting_details = {} if setting is None else {"setting": setting}
    if pending:
        latest = (last_event - pd.Timedelta(days=labels.horizon_days + labels.lead_days)).floor("D")
        if matured:
            advice = (
                "these cutoffs can be scored but not used for training; cutoffs for training "
                f"must be on or before {latest:%Y-%m-%d}"
            )
        elif setting is not None:
            advice = f"{suggestion} so that labels can be built"
        else:
            advice = (
                f"load a longer history: not even a 1-day label window leaves "
                f"{MIN_MATURED_CUTOFFS} matured cutoffs"
            )
        findings.append(
            Finding(
                "labels_not_matured",
                "error" if not matured else "info",
                f"label window not finished for {len(pending)} cutoff(s) "
                f"({', '.join(f'{c.cutoff:%Y-%m-%d}' for c in pending)}): their windows end after "
                f"the observed history ({last_event:%Y-%m-%d})",
                advice,
                {} if matured else setting_details,
            )
        )
    if 0 < len(matured) < MIN_MATURED_CUTOFFS:
        findings.append(
            Finding(
                "few_matured_cutoffs",
                "info",
                f"only {len(matured)} cutoff(s) with matured labels; training needs "
                f"{MIN_MATURED_CUTOFFS} (train, validation, test)",
                suggestion or "load a longer history",
                setting_details,
            )
        )
    if not matured:
        return findings
    more = setting is not None and setting["cutoffs"]["count"] > len(matured)
    earlier = (
        f"add earlier cutoffs, i.e. {suggestion} ({setting['cutoffs']['count']} matured cutoffs "
        f"instead of {len(matured)}), or lengthen the history"
        if more
        else "lengthen the history"
    )
    extra = setting_details if more else {}
    for name, attr, minimum, advice in (
        (
            "churners",
            "churners",
            min_positives,
            earlier,
        ),
        (
            "non-churners",
            "non_churners",
            min_negatives,
            f"{earlier}; or check the churn definition: almost every active customer churns"
            + (
                " (are end_date values cancellations, not scheduled term ends? those go to "
                "term_end)"
                if labels.churn_definition == "subscription"
                else " (qualifying_event_types, active_window_days)"
            ),
        ),
    ):
        values = {c.cutoff: getattr(c, attr) for c in matured}
        total = sum(values.values())
        short = {cutoff: value for cutoff, value in values.items() if value < minimum}
        code = f"few_{attr}"
        if total < minimum:
            findings.append(
                Finding(
                    code,
                    "error",
                    f"only {total:,} {name} over all {len(matured)} matured cutoff(s), fewer "
                    f"than the {minimum:,} needed to train and evaluate a model",
                    advice,
                    {"per_cutoff": {f"{k:%Y-%m-%d}": v for k, v in values.items()}, **extra},
                )
            )
        elif short:
            listed = "; ".join(
                f"only {value:,} {name} at cutoff {cutoff:%Y-%m-%d}"
                for cutoff, value in short.items()
            )
            findings.append(
                Finding(
                    code,
                    "warning",
                    f"{listed} (fewer than {minimum:,}; {total:,} over all matured cutoffs)",
                    advice,
                    {"per_cutoff": {f"{k:%Y-%m-%d}": v for k, v in values.items()}, **extra},
                )
            )
    return findings


def _event_type_findings(type_counts: dict[str, int], labels: LabelParams) -> list[Finding]:
    findings: list[Finding] = []
    present = {name for name, count in type_counts.items() if count > 0}
    qualifying = list(labels.qualifying_event_types)
    absent_qualifying = [name for name in qualifying if name not in present]
    if labels.churn_definition == "activity" and absent_qualifying:
        every = len(absent_qualifying) == len(qualifying)
        findings.append(
            Finding(
                "qualifying_events_missing",
                "error" if every else "warning",
                f"qualifying event type(s) {absent_qualifying} do not occur in the events"
                + ("; activity and churn cannot be measured" if every else ""),
                "map the export's event names onto them with event_type_mapping, or change "
                "labels.qualifying_event_types",
                {"qualifying_event_types": qualifying},
            )
        )
    absent = [name for name in EVENT_TYPES if name not in present]
    if absent:
        findings.append(
            Finding(
                "event_types_absent",
                "info",
                f"no events of type(s) {absent}; features built on them will be zero",
                "map the export's names with event_type_mapping if the export has them under "
                "other names",
                {"counts": type_counts},
            )
        )
    other = {name: count for name, count in type_counts.items() if name not in EVENT_TYPES}
    if other:
        findings.append(
            Finding(
                "event_types_unknown",
                "info",
                f"event types outside the canonical set: {other}",
                "map them with event_type_mapping if they mean a canonical type",
            )
        )
    return findings


def _missing_share_findings(missing_shares: dict[str, dict[str, float]]) -> list[Finding]:
    high = {
        f"{table}.{column}": share
        for table, shares in missing_shares.items()
        for column, share in shares.items()
        if share > MISSING_SHARE_WARNING
    }
    if not high:
        return []
    listed = ", ".join(f"{name} {share:.0%}" for name, share in high.items())
    return [
        Finding(
            "missing_values",
            "warning",
            f"columns mostly missing: {listed} (amount, quantity and category measured on "
            "purchases)",
            "check the export and the column mapping; features built on these columns will be weak",
            {"shares": high},
        )
    ]


def _customers_without_events(customers: pd.DataFrame, events: pd.DataFrame) -> list[Finding]:
    known = pd.Index(customers["customer_id"].dropna().astype(str).unique())
    seen = pd.Index(events["customer_id"].dropna().astype(str).unique())
    silent = int((~known.isin(seen)).sum())
    if not silent:
        return []
    return [
        Finding(
            "customers_without_events",
            "info",
            f"{silent:,} of {len(known):,} customers in the customers table have no events",
            "they get no features and no label; check that both tables cover the same period",
        )
    ]


# --------------------------------------------------------------------------------------------
# Helpers


def _report(
    findings: list[Finding],
    counts: tuple[CutoffCounts, ...],
    events: pd.DataFrame,
    n_customers: int,
    first_event: pd.Timestamp | None,
    last_event: pd.Timestamp | None,
    missing_shares: dict[str, dict[str, float]],
    type_counts: dict[str, int],
) -> UsabilityReport:
    order = {"error": 0, "warning": 1, "info": 2}
    findings = sorted(findings, key=lambda finding: order[finding.severity])
    severities = {finding.severity for finding in findings}
    verdict: Verdict = (
        "not usable"
        if "error" in severities
        else "usable with warnings"
        if "warning" in severities
        else "usable"
    )
    return UsabilityReport(
        verdict=verdict,
        findings=tuple(findings),
        cutoffs=counts,
        events=len(events),
        customers_with_events=n_customers,
        first_event=first_event,
        last_event=last_event,
        missing_shares=missing_shares,
        event_type_counts=type_counts,
    )


def _normalise_cutoffs(cutoffs: Sequence[Any]) -> list[pd.Timestamp]:
    normalised = set()
    for cutoff in cutoffs:
        timestamp = pd.Timestamp(cutoff)
        if timestamp.tzinfo is not None:
            timestamp = timestamp.tz_convert("UTC").tz_localize(None)
        normalised.add(timestamp)
    return sorted(normalised)


def _spacing(cutoffs: list[pd.Timestamp]) -> int:
    """Days between consecutive cutoffs (the median), or the default for fewer than two."""
    if len(cutoffs) < 2:
        return DEFAULT_EVERY_DAYS
    gaps = np.diff([c.value for c in cutoffs]) / 86_400e9
    return max(int(round(float(np.median(gaps)))), 1)


def _customer_codes(customer_id: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes 0..n-1 of the customers present (unused categories are not counted)."""
    codes, uniques = pd.factorize(customer_id, use_na_sentinel=True)
    if (codes < 0).any():
        raise ValueError("customer_id has missing values: pass the validated (clean) table")
    return codes, len(uniques)


def _event_type_counts(events: pd.DataFrame) -> dict[str, int]:
    if "event_type" not in events.columns or len(events) == 0:
        return {}
    counts = events["event_type"].value_counts()
    return {str(name): int(count) for name, count in counts.items() if count > 0}


def _missing_shares(frame: pd.DataFrame) -> dict[str, float]:
    if len(frame) == 0:
        return {}
    return {str(column): float(share) for column, share in frame.isna().mean().items()}


def _missing_shares_events(events: pd.DataFrame) -> dict[str, float]:
    shares = _missing_shares(events.drop(columns=list(_PURCHASE_COLUMNS), errors="ignore"))
    if "event_type" not in events.columns:
        return shares
    purchases = events.loc[_isin(events["event_type"], ("purchase",))]
    for column in _PURCHASE_COLUMNS:
        if column in events.columns and len(purchases):
            shares[column] = float(purchases[column].isna().mean())
    return shares


def _isin(values: pd.Series, wanted: Sequence[str]) -> np.ndarray:
    """``values.isin(wanted)`` as a bool array, done on the categories when categorical."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = values.cat.categories.astype(str).isin(list(wanted))
        codes = values.cat.codes.to_numpy()
        return np.append(categories, False)[codes]  # code -1 (missing) -> False
    return values.astype(str).isin(list(wanted)).to_numpy() & values.notna().to_numpy()
