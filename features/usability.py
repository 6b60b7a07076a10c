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

Churn is counted here with a small vectorised re-implementation of the label definition (see
``features.config.LabelParams``) so this check stays independent of the labelling code; it only
has to be right about orders of magnitude, but it follows the same windows:
active = a qualifying event in [cutoff - active_window_days, cutoff); churner = active and no
qualifying event in [cutoff + lead_days, cutoff + lead_days + horizon_days).

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

from features.config import LabelParams
from features.contract import EVENT_TYPES
from features.files import jsonable

Severity = Literal["error", "warning", "info"]
Verdict = Literal["usable", "usable with warnings", "not usable"]

#: A column missing in more than this share of the rows where it applies gets a warning.
MISSING_SHARE_WARNING = 0.5

#: Event columns that only apply to purchases: their missing share is measured on purchases.
_PURCHASE_COLUMNS = ("amount", "quantity", "category")


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
) -> UsabilityReport:
    """Check that the validated tables can support a trustworthy churn model at these cutoffs.

    ``events`` (and ``customers``/``subscriptions``) are the clean tables of
    ``features.validation``. ``subscriptions`` is needed only when
    ``labels.churn_definition == "subscription"``. ``data_end`` is the end of the observed
    history (the pipeline uses the day after the last event, as ``features.labels`` does);
    without it, the last event's timestamp.
    """
    cutoff_times = _normalise_cutoffs(cutoffs)
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

    codes, n_customers = _customer_codes(events["customer_id"])
    timestamps = events["timestamp"].to_numpy(dtype="datetime64[ns]")
    first_event, last_event = pd.Timestamp(timestamps.min()), pd.Timestamp(timestamps.max())
    observed_end = last_event if data_end is None else max(last_event, pd.Timestamp(data_end))

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
        findings += _history_span(first_event, cutoff_times[0], labels)
        counts, churn_findings = _cutoff_counts(
            events,
            codes,
            n_customers,
            timestamps,
            labels,
            cutoff_times,
            observed_end,
            subscriptions,
        )
        findings += churn_findings
        findings += _customer_findings(counts, min_customers)
        findings += _outcome_findings(counts, labels, observed_end, min_positives, min_negatives)
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
) -> pd.DataFrame:
    """Per cutoff: customers with history, active customers, churners and non-churners.

    Churners/non-churners are NaN for cutoffs whose label window has not matured.
    """
    if len(events) == 0:
        return pd.DataFrame(columns=[f.name for f in CutoffCounts.__dataclass_fields__.values()])
    codes, n_customers = _customer_codes(events["customer_id"])
    timestamps = events["timestamp"].to_numpy(dtype="datetime64[ns]")
    counts, _ = _cutoff_counts(
        events,
        codes,
        n_customers,
        timestamps,
        labels,
        _normalise_cutoffs(cutoffs),
        pd.Timestamp(timestamps.max()),
        subscriptions,
    )
    return pd.DataFrame([asdict(c) for c in counts])


# --------------------------------------------------------------------------------------------
# Counting


def _cutoff_counts(
    events: pd.DataFrame,
    codes: np.ndarray,
    n_customers: int,
    timestamps: np.ndarray,
    labels: LabelParams,
    cutoffs: list[pd.Timestamp],
    last_event: pd.Timestamp,
    subscriptions: pd.DataFrame | None,
) -> tuple[tuple[CutoffCounts, ...], list[Finding]]:
    findings: list[Finding] = []
    first_seen = np.sort(
        pd.Series(timestamps).groupby(codes).min().to_numpy(dtype="datetime64[ns]")
    )
    qualifying = _isin(events["event_type"], labels.qualifying_event_types)
    q_codes, q_times = codes[qualifying], timestamps[qualifying]
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
    data_end = last_event
    if by_subscription and subscriptions is not None and len(subscriptions):
        data_end = max(last_event, pd.Timestamp(subscriptions["start_date"].max()))

    lead = pd.Timedelta(days=labels.lead_days)
    horizon = pd.Timedelta(days=labels.horizon_days)
    active_window = pd.Timedelta(days=labels.active_window_days)
    rows = []
    for cutoff in cutoffs:  # a handful of cutoffs; each step is vectorised over the events
        window_start, window_end = cutoff + lead, cutoff + lead + horizon
        matured = window_end <= data_end
        if by_subscription:
            active, retained = _subscription_status(subscriptions, cutoff, window_end)
        else:
            active = _customers_with_events(
                q_codes, q_times, cutoff - active_window, cutoff, n_customers
            )
            retained = _customers_with_events(
                q_codes, q_times, window_start, window_end, n_customers
            )
        history = int(np.searchsorted(first_seen, cutoff.to_datetime64(), side="left"))
        churners = non_churners = None
        if matured and active is not None:
            churners = int(np.count_nonzero(active & ~retained))
            non_churners = int(np.count_nonzero(active & retained))
        rows.append(
            CutoffCounts(
                cutoff=cutoff,
                customers_with_history=history,
                active_customers=0 if active is None else int(np.count_nonzero(active)),
                label_window_end=window_end,
                matured=bool(matured),
                churners=churners,
                non_churners=non_churners,
            )
        )
    return tuple(rows), findings


def _customers_with_events(
    codes: np.ndarray, times: np.ndarray, start: pd.Timestamp, end: pd.Timestamp, n: int
) -> np.ndarray:
    """Boolean per customer code: at least one of the events in [start, end)."""
    in_window = (times >= start.to_datetime64()) & (times < end.to_datetime64())
    flags = np.zeros(n, dtype=bool)
    flags[codes[in_window]] = True
    return flags


def _subscription_status(
    subscriptions: pd.DataFrame | None, cutoff: pd.Timestamp, window_end: pd.Timestamp
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per subscribed customer: subscribed at the cutoff, and still subscribed at window end.

    Subscribed at t: a subscription started before t that has not ended by t (end NaT = open).
    """
    if subscriptions is None or len(subscriptions) == 0:
        return None, None
    codes, _ = _customer_codes(subscriptions["customer_id"])
    n = int(codes.max()) + 1
    start = subscriptions["start_date"].to_numpy(dtype="datetime64[ns]")
    end = subscriptions["end_date"].to_numpy(dtype="datetime64[ns]")
    open_ended = np.isnat(end)

    def subscribed(at: pd.Timestamp) -> np.ndarray:
        t = at.to_datetime64()
        covering = (start < t) & (open_ended | (end > t))
        flags = np.zeros(n, dtype=bool)
        flags[codes[covering]] = True
        return flags

    return subscribed(cutoff), subscribed(window_end)


# --------------------------------------------------------------------------------------------
# Findings


def _history_span(
    first_event: pd.Timestamp, first_cutoff: pd.Timestamp, labels: LabelParams
) -> list[Finding]:
    span_days = (first_cutoff - first_event) / pd.Timedelta(days=1)
    required_days = 2 * (labels.horizon_days + labels.lead_days)
    details = {"history_days_before_first_cutoff": span_days, "required_days": required_days}
    earliest = first_event.ceil("D") + pd.Timedelta(days=required_days)
    advice = f"move the first cutoff to {earliest:%Y-%m-%d} or later, or load older history"
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
) -> list[Finding]:
    findings: list[Finding] = []
    matured = [c for c in counts if c.matured and c.churners is not None]
    pending = [c for c in counts if not c.matured]
    if pending:
        latest = last_event - pd.Timedelta(days=labels.horizon_days + labels.lead_days)
        findings.append(
            Finding(
                "labels_not_matured",
                "error" if not matured else "info",
                f"label window not finished for {len(pending)} cutoff(s) "
                f"({', '.join(f'{c.cutoff:%Y-%m-%d}' for c in pending)}): their windows end after "
                f"the observed history ({last_event:%Y-%m-%d})",
                (
                    "these cutoffs can be scored but not used for training; cutoffs for training "
                    f"must be on or before {latest:%Y-%m-%d}"
                    if matured
                    else f"add cutoffs on or before {latest:%Y-%m-%d} so that labels can be built"
                ),
            )
        )
    if not matured:
        return findings
    for name, attr, minimum, advice in (
        (
            "churners",
            "churners",
            min_positives,
            "add earlier cutoffs or lengthen the history",
        ),
        (
            "non-churners",
            "non_churners",
            min_negatives,
            "add earlier cutoffs, or check the activity definition (qualifying_event_types, "
            "active_window_days): almost every active customer churns",
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
                    {"per_cutoff": {f"{k:%Y-%m-%d}": v for k, v in values.items()}},
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
                    {"per_cutoff": {f"{k:%Y-%m-%d}": v for k, v in values.items()}},
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
