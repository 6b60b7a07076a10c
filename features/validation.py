"""Turn raw CRM tables into canonical ones, quarantining and reporting every row that is unusable.

Two kinds of problem are told apart (see ``features.contract.DataContractError``):

* structural: a required column is missing or nothing usable is left. The table cannot be used
  at all, so ``DataContractError`` is raised with a message saying what to fix.
* row-level: a timestamp that does not parse, a negative amount, a duplicate event, ... The row
  goes to the quarantine frame exactly as it was received, with a ``reason`` column, and the
  report counts it with examples. Nothing is dropped silently: clean rows plus quarantined rows
  always add up to the input rows.

Some findings keep the rows and are only reported (mixed time zones converted to UTC, event
types outside the canonical set, overlapping subscriptions, identical events kept as real
repeats).

Identical events: rows equal in every column with the same ``event_id`` are one event exported
twice and always quarantined (``duplicate_event_id``). Without an event id, identical rows follow
``SourceConfig.duplicates``: ``drop`` quarantines them (``duplicate_event``); ``keep`` keeps them as
repeated events (``repeated_events``, counted in the report); ``auto`` (the default) keeps them
when the source is day-granular (every timestamp at midnight in the source's time zone, e.g.
CDNOW: two identical orders on one day are two orders) and drops them otherwise, as for
event-level exports with times of day.

Everything is vectorised: validation runs on tables of tens of millions of events, so there are
no per-row Python loops; work per distinct value (customer ids, event names) is done on the
distinct values and broadcast back with the factorised codes.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.tseries.api import guess_datetime_format

from features.config import DataConfig, SourceConfig
from features.contract import (
    CUSTOMERS_REQUIRED,
    EVENT_ID,
    EVENT_TYPES,
    EVENTS_COLUMNS,
    EVENTS_KNOWN,
    EVENTS_OPTIONAL,
    EVENTS_REQUIRED,
    SUBSCRIPTIONS_ALIASES,
    SUBSCRIPTIONS_KNOWN,
    SUBSCRIPTIONS_REQUIRED,
    DataContractError,
    apply_aliases,
)
from features.files import jsonable, write_atomically
from features.loading import RawCRM, missing_columns_error

Severity = Literal["error", "warning", "info"]
Action = Literal["quarantined", "kept", "converted", "dropped"]
UnknownCustomers = Literal["quarantine", "keep"]

#: Number of example rows kept per problem in the report.
MAX_EXAMPLES = 5

#: A string timestamp carries its own UTC offset when a time of day is followed by Z/UTC/+hh:mm.
#: The time of day is required so that a date such as 2024-01-05 is not read as offset -05.
_OFFSET_PATTERN = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"
_OFFSET_SUFFIX = r"(?P<offset>Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"

_QUARANTINE_FILE = "{table}_quarantine.csv"
_REPORT_FILE = "validation_report.json"


class NoUsableRowsError(DataContractError):
    """Every row of a table was quarantined. ``result`` still holds the quarantine and report."""

    def __init__(self, message: str, result: ValidationResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Problem:
    """One kind of problem found in a table, with how many rows have it and a few examples."""

    code: str
    severity: Severity  # error: rows quarantined; warning: kept but worth a look; info: FYI
    action: Action
    count: int
    reason: str
    examples: tuple[dict[str, Any], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "action": self.action,
            "count": int(self.count),
            "reason": self.reason,
            "examples": [dict(example) for example in self.examples],
            "details": jsonable(self.details),
        }


@dataclass(frozen=True)
class ValidationReport:
    """What validation found in one table: row counts and the problems, worst first."""

    table: str
    input_rows: int
    clean_rows: int
    quarantined_rows: int
    problems: tuple[Problem, ...] = ()

    def problem(self, code: str) -> Problem | None:
        """The problem with this code, or ``None`` when the table does not have it."""
        return next((problem for problem in self.problems if problem.code == code), None)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(problem.code for problem in self.problems)

    def render(self) -> str:
        """Readable text for a terminal or a log."""
        lines = [
            f"{self.table}: {self.input_rows:,} rows received, {self.clean_rows:,} clean, "
            f"{self.quarantined_rows:,} quarantined"
        ]
        for problem in self.problems:
            lines.append(
                f"  [{problem.severity}] {problem.count:,} row(s) {problem.action}: "
                f"{problem.reason}"
            )
            for key, value in problem.details.items():
                lines.append(f"      {key}: {value}")
            for example in problem.examples:
                lines.append(f"      e.g. {example}")
        if not self.problems:
            lines.append("  no problems found")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``json.dumps`` works on it as is)."""
        return {
            "table": self.table,
            "input_rows": int(self.input_rows),
            "clean_rows": int(self.clean_rows),
            "quarantined_rows": int(self.quarantined_rows),
            "problems": [problem.to_dict() for problem in self.problems],
        }


@dataclass(frozen=True)
class ValidationResult:
    """Canonical clean rows, the unusable rows as received (plus ``reason``), and the report."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    report: ValidationReport


@dataclass(frozen=True)
class ValidatedCRM:
    """The validated tables of a CRM export; customers and subscriptions are optional."""

    events: ValidationResult
    customers: ValidationResult | None = None
    subscriptions: ValidationResult | None = None

    @property
    def results(self) -> dict[str, ValidationResult]:
        """The results by table name, for ``write_quarantine``."""
        named = {
            "events": self.events,
            "customers": self.customers,
            "subscriptions": self.subscriptions,
        }
        return {name: result for name, result in named.items() if result is not None}

    def render(self) -> str:
        return "\n\n".join(result.report.render() for result in self.results.values())


# --------------------------------------------------------------------------------------------
# Public entry points


def validate_crm_data(
    raw: RawCRM, data: DataConfig, now: pd.Timestamp | None = None
) -> ValidatedCRM:
    """Validate customers first, then events and subscriptions against the valid customer ids."""
    customers = (
        None
        if raw.customers is None
        else validate_customers(raw.customers, source=data.customers, now=now)
    )
    known = None if customers is None else customers.clean["customer_id"]
    events = validate_events(
        raw.events,
        source=data.events,
        known_customers=known,
        unknown_customers=data.unknown_customers,
        now=now,
    )
    subscriptions = (
        None
        if raw.subscriptions is None
        else validate_subscriptions(
            raw.subscriptions,
            source=data.subscriptions,
            known_customers=known,
            unknown_customers=data.unknown_customers,
            now=now,
        )
    )
    return ValidatedCRM(events=events, customers=customers, subscriptions=subscriptions)


def validate_events(
    raw: pd.DataFrame,
    *,
    source: SourceConfig | None = None,
    known_customers: pd.Series | None = None,
    unknown_customers: UnknownCustomers = "quarantine",
    now: pd.Timestamp | None = None,
) -> ValidationResult:
    """Validate an events table (canonical column names, raw values) against the contract.

    ``known_customers`` (the valid ids of the customers table) enables the unknown-customer
    check; ``now`` is the extraction time: later events are quarantined.
    """
    _check_unknown_policy(unknown_customers)
    check = _TableCheck("events", raw, EVENTS_REQUIRED, EVENTS_KNOWN, source)
    now = _extraction_time(now)
    clean: dict[str, Any] = {}

    customer_id, missing_id = _as_categorical(raw["customer_id"])
    check.quarantine("missing_customer_id", missing_id, "customer_id is missing")
    clean["customer_id"] = customer_id

    clean["timestamp"] = check.timestamps("timestamp", required=True, now=now)

    event_type, missing_type = _as_categorical(raw["event_type"])
    check.quarantine("missing_event_type", missing_type, "event_type is missing")
    clean["event_type"] = event_type
    _report_unknown_event_types(check, event_type, missing_type)

    for column in ("amount", "quantity"):
        clean[column] = check.non_negative_numbers(
            column,
            negative_reason=(
                f"{column} is negative: refunds and returns are not modelled as events; net "
                "them into the original purchase or leave them out of the export"
            ),
        )
    for column in ("category", "channel"):
        clean[column] = (
            _as_categorical(raw[column])[0]
            if column in raw.columns
            else _empty_categorical(len(raw))
        )
    check.report_absent_optional(EVENTS_OPTIONAL)
    if EVENT_ID in raw.columns:
        clean[EVENT_ID] = _as_categorical(raw[EVENT_ID])[0]

    if known_customers is not None:
        check.unknown_customers(customer_id, missing_id, known_customers, unknown_customers)

    frame = pd.DataFrame(clean, index=raw.index)
    _handle_identical_events(check, frame, "auto" if source is None else source.duplicates)
    return check.finish(frame)


def validate_customers(
    raw: pd.DataFrame,
    *,
    source: SourceConfig | None = None,
    now: pd.Timestamp | None = None,
) -> ValidationResult:
    """Validate a customers table: one row per customer id, parseable signup dates.

    Attribute columns (every column but ``customer_id`` and ``signup_date``) are kept as they
    are, except for two decisions taken here, once on the whole table, because phase 1 runs
    per partition and reads attributes by dtype only (``features.lifecycle._attribute_values``):
    text columns of ISO dates (and columns of date objects) become datetime64 naive UTC, and
    identifier-like text columns are dropped. Both are reported (see
    :func:`_settle_customer_attributes`).
    """
    check = _TableCheck("customers", raw, CUSTOMERS_REQUIRED, None, source)
    now = _extraction_time(now)
    customer_id, missing_id = _as_categorical(raw["customer_id"])
    check.quarantine("missing_customer_id", missing_id, "customer_id is missing")
    frame = raw.copy()
    frame["customer_id"] = customer_id
    frame["signup_date"] = check.timestamps("signup_date", required=False, now=now, future="warn")
    check.report_absent_optional(("signup_date",))
    check.quarantine_duplicates(
        frame,
        ["customer_id"],
        "duplicate_customer_id",
        "customer_id appears more than once (the first row is kept)",
    )
    frame = _settle_customer_attributes(check, frame)
    return check.finish(frame)


#: Attribute text holds dates when at least this share of its values are ISO dates.
_ISO_DATE_SHARE = 0.9
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}"
#: A text attribute with more distinct values than this share of its values (and more than
#: ``_ID_LIKE_MIN`` of them) is an identifier or free text (a name, an e-mail): not a feature.
_ID_LIKE_SHARE = 0.5
_ID_LIKE_MIN = 50
_ID_LIKE_REASON = "identifier-like text: not a feature, and it may be personal data"


def _settle_customer_attributes(check: _TableCheck, frame: pd.DataFrame) -> pd.DataFrame:
    """The customers frame with its attribute columns settled on the whole table.

    Decided on the rows that pass every other check, applied to the whole column:

    * text whose values are at least 90% ISO dates (``YYYY-MM-DD...``) becomes datetime64
      naive UTC (offsets converted, values without one read as UTC); the other values become
      NaT and are reported with their count (``unparseable_attribute_dates``). Columns of
      date or datetime objects become datetime64 the same way;
    * text with more distinct values than half its values and more than 50 is an identifier
      or free text: the column is dropped and reported (``identifier_like_columns``).

    Phase 1 then reads every attribute by its dtype, the same on any partition of the table.
    """
    usable = ~check.bad()
    converted: dict[str, int] = {}
    unparseable_counts: dict[str, int] = {}
    unparseable = np.zeros(check.rows, dtype=bool)
    dropped: dict[str, str] = {}
    for name in frame.columns:
        if name in ("customer_id", "signup_date"):
            continue
        values = frame[name]
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes, uniques = values.cat.codes.to_numpy(), values.cat.categories
        elif values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
        else:
            continue  # numbers, flags, datetime64: phase 1 reads them by dtype
        uniques = np.asarray(uniques, dtype=object)
        present = (codes >= 0) & usable
        n_present = int(present.sum())
        if n_present == 0:
            continue
        kind = pd.api.types.infer_dtype(uniques, skipna=True)
        if kind in ("date", "datetime"):
            parsed = pd.to_datetime(pd.Series(uniques), errors="coerce", utc=True)
        elif kind == "string":
            texts = pd.Series(uniques, dtype=object)
            iso = texts.str.match(_ISO_DATE).to_numpy(dtype=bool)
            if np.bincount(codes[present], minlength=len(uniques))[iso].sum() < (
                _ISO_DATE_SHARE * n_present
            ):
                distinct = np.unique(codes[present]).size
                if distinct > _ID_LIKE_MIN and distinct > _ID_LIKE_SHARE * n_present:
                    dropped[name] = (
                        f"{_ID_LIKE_REASON} ({distinct:,} distinct values in {n_present:,} rows)"
                    )
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = pd.to_datetime(
                    texts.where(iso), format="ISO8601", errors="coerce", utc=True
                )
        else:
            continue  # mixed objects: text in phase 1
        stamps = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        lookup = np.append(stamps, np.datetime64("NaT", "ns"))  # code -1 (missing) -> NaT
        column = lookup[codes]
        frame[name] = pd.Series(column, index=frame.index, name=name)
        failed = (codes >= 0) & np.isnat(column) & usable
        converted[name] = int(((codes >= 0) & ~np.isnat(column) & usable).sum())
        if failed.any():
            unparseable_counts[name] = int(failed.sum())
            unparseable |= failed
    if converted:
        check.note(
            "attribute_dates",
            "info",
            "converted",
            sum(converted.values()),
            f"attribute columns of dates read as dates (naive UTC): {list(converted)}",
            details={"columns": converted},
        )
    if unparseable_counts:
        check.note(
            "unparseable_attribute_dates",
            "warning",
            "converted",
            int(unparseable.sum()),
            "values of date attribute columns that are not ISO dates (YYYY-MM-DD...), set to "
            f"missing: {unparseable_counts}",
            mask=unparseable,
            details={"columns": unparseable_counts},
        )
    if dropped:
        check.note(
            "identifier_like_columns",
            "warning",
            "dropped",
            len(dropped),
            f"{_ID_LIKE_REASON}; column(s) dropped from the clean table: {list(dropped)}",
            details={"columns": list(dropped), "reasons": dropped},
        )
        frame = frame.drop(columns=list(dropped))
    return frame


def validate_subscriptions(
    raw: pd.DataFrame,
    *,
    source: SourceConfig | None = None,
    known_customers: pd.Series | None = None,
    unknown_customers: UnknownCustomers = "quarantine",
    now: pd.Timestamp | None = None,
) -> ValidationResult:
    """Validate a subscriptions table: dates in order, non-negative MRR; overlaps are reported.

    The canonical aliases (``cancelled_at``, ``renewal_date``, ``quantity``, ``units``; see
    ``features.contract``) are renamed first. The scheduled-term columns are kept only when the
    source has them: ``term_end`` must parse and be after ``start_date``, ``bill_period_months``
    must be a whole number >= 1, ``seats``/``price``/``discount`` non-negative numbers; a row that
    breaks one is quarantined with the reason. Missing values there are allowed (unknown).
    """
    _check_unknown_policy(unknown_customers)
    renamed = apply_aliases(list(raw.columns), SUBSCRIPTIONS_ALIASES)
    if renamed != list(raw.columns):
        raw = raw.set_axis(renamed, axis=1)
    check = _TableCheck("subscriptions", raw, SUBSCRIPTIONS_REQUIRED, SUBSCRIPTIONS_KNOWN, source)
    now = _extraction_time(now)
    clean: dict[str, Any] = {}
    customer_id, missing_id = _as_categorical(raw["customer_id"])
    check.quarantine("missing_customer_id", missing_id, "customer_id is missing")
    clean["customer_id"] = customer_id
    plan, missing_plan = _as_categorical(raw["plan"])
    check.quarantine("missing_plan", missing_plan, "plan is missing")
    clean["plan"] = plan
    clean["start_date"] = check.timestamps("start_date", required=True, now=now, future="warn")
    clean["end_date"] = check.timestamps("end_date", required=False, now=None)
    clean["mrr"] = check.non_negative_numbers(
        "mrr", negative_reason="mrr is negative", required=True
    )
    check.report_absent_optional(("end_date",))
    check.quarantine(
        "end_before_start",
        (clean["end_date"] < clean["start_date"]).to_numpy(),
        "end_date is before start_date",
    )
    clean.update(_subscription_terms(check, clean["start_date"]))
    if known_customers is not None:
        check.unknown_customers(customer_id, missing_id, known_customers, unknown_customers)
    frame = pd.DataFrame(clean, index=raw.index)
    check.quarantine_duplicates(
        frame,
        list(frame.columns),
        "duplicate_subscription",
        "exact duplicate of an earlier subscription row (first kept)",
    )
    _report_overlaps(check, frame)
    return check.finish(frame)


def _subscription_terms(check: _TableCheck, start: pd.Series) -> dict[str, pd.Series]:
    """The scheduled-term columns the source has, parsed; bad values quarantined."""
    raw = check.raw
    terms: dict[str, pd.Series] = {}
    if "bill_period_months" in raw.columns:
        period = check.non_negative_numbers(
            "bill_period_months", negative_reason="bill_period_months is negative"
        )
        values = period.to_numpy()
        with np.errstate(invalid="ignore"):
            not_whole = ~np.isnan(values) & (values >= 0) & ((values < 1) | (values % 1 != 0))
        check.quarantine(
            "invalid_bill_period_months",
            not_whole,
            "bill_period_months must be a whole number of months, at least 1",
        )
        terms["bill_period_months"] = period
    if "term_end" in raw.columns:
        term_end = check.timestamps("term_end", required=False, now=None)
        check.quarantine(
            "term_end_not_after_start",
            (term_end <= start).to_numpy(),
            "term_end is not after start_date",
        )
        terms["term_end"] = term_end
    for column in ("seats", "price"):
        if column in raw.columns:
            terms[column] = check.non_negative_numbers(
                column, negative_reason=f"{column} is negative"
            )
    if "discount" in raw.columns:
        terms["discount"] = check.non_negative_numbers(
            "discount",
            negative_reason="discount is negative (give it as a positive fraction or amount off)",
        )
    return terms


def _handle_identical_events(check: _TableCheck, frame: pd.DataFrame, policy: str) -> None:
    """Identical events: same event_id -> quarantined; no id -> by ``policy`` (module doc)."""
    if policy not in ("auto", "drop", "keep"):
        raise ValueError(f"duplicates must be 'auto', 'drop' or 'keep', not {policy!r}")
    columns = list(EVENTS_COLUMNS) + ([EVENT_ID] if EVENT_ID in frame.columns else [])
    identical = check.repeated_rows(frame, columns)
    if not identical.any():
        return
    if EVENT_ID in frame.columns:
        with_id = identical & frame[EVENT_ID].notna().to_numpy()
        check.quarantine(
            "duplicate_event_id",
            with_id,
            "exact duplicate of an earlier event with the same event_id (the first one is kept)",
        )
        identical &= ~with_id
        if not identical.any():
            return
    day_granular = _is_day_granular(frame["timestamp"], ~check.bad(), check.timezone)
    if policy == "keep" or (policy == "auto" and day_granular):
        why = (
            "duplicates: keep"
            if policy == "keep"
            else "the source is day-granular (every timestamp at midnight), so identical rows "
            "are separate events of the same day; set duplicates: drop if they are not"
        )
        check.note(
            "repeated_events",
            "info",
            "kept",
            int(identical.sum()),
            f"events identical to an earlier row kept as repeats ({why})",
            mask=identical,
        )
        return
    check.quarantine(
        "duplicate_event",
        identical,
        "exact duplicate of an earlier event (the first one is kept)",
    )


def _is_day_granular(timestamps: pd.Series, usable: np.ndarray, timezone: str) -> bool:
    """Every usable timestamp is at midnight in the source's time zone (no time of day)."""
    values = timestamps[usable]
    if len(values) == 0:
        return False
    if timezone != "UTC":
        values = values.dt.tz_localize("UTC").dt.tz_convert(timezone).dt.tz_localize(None)
    ns = values.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return bool((ns % (86_400 * 10**9) == 0).all())


def write_quarantine(results: dict[str, ValidationResult], out_dir: Path) -> list[Path]:
    """Write each non-empty quarantine as ``<table>_quarantine.csv`` and all reports as JSON.

    Files are written atomically (temporary file + ``os.replace``) under stable names, so a
    re-run overwrites the previous output; a stale quarantine file of a table that is now clean
    is removed so it cannot be mistaken for current output. The CSV's ``row`` column is the row's
    index in the table as loaded (its 0-based position for files).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table, result in results.items():
        path = out_dir / _QUARANTINE_FILE.format(table=table)
        if len(result.quarantine):
            _atomic_write(
                path,
                lambda handle, q=result.quarantine: q.to_csv(handle, index=True, index_label="row"),
            )
            written.append(path)
        elif path.exists():
            path.unlink()
    report = {table: result.report.to_dict() for table, result in results.items()}
    report_path = out_dir / _REPORT_FILE
    _atomic_write(report_path, lambda handle: json.dump(report, handle, indent=2))
    written.append(report_path)
    return written


# --------------------------------------------------------------------------------------------
# The per-table bookkeeping


class _TableCheck:
    """Collects row masks of quarantined problems and kept-row findings for one table."""

    def __init__(
        self,
        table: str,
        raw: pd.DataFrame,
        required: Sequence[str],
        contract_columns: Sequence[str] | None,
        source: SourceConfig | None,
    ) -> None:
        missing = [column for column in required if column not in raw.columns]
        if missing:
            raise missing_columns_error(
                table, missing, raw.columns, None if source is None else source.columns
            )
        if len(raw) == 0:
            raise DataContractError(f"{table}: the table has no rows")
        if raw.columns.duplicated().any():
            doubled = sorted(set(raw.columns[raw.columns.duplicated()]))
            raise DataContractError(
                f"{table}: columns {doubled} appear more than once; check the column mapping"
            )
        self.table = table
        self.raw = raw
        self.rows = len(raw)
        self.source = source
        self.timestamp_format = None if source is None else source.timestamp_format
        self.timezone = "UTC" if source is None else source.timezone
        self.quarantined: list[tuple[str, np.ndarray, str]] = []
        self.findings: list[Problem] = []
        if contract_columns is not None:
            ignored = [c for c in raw.columns if c not in contract_columns]
            if ignored:
                self.note(
                    "ignored_columns",
                    "info",
                    "kept",
                    len(ignored),
                    f"columns outside the contract are not used: {ignored}",
                )

    # -- recording -----------------------------------------------------------------------

    def quarantine(self, code: str, mask: np.ndarray, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.quarantined.append((code, mask, reason))

    def note(
        self,
        code: str,
        severity: Severity,
        action: Action,
        count: int,
        reason: str,
        mask: np.ndarray | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.findings.append(
            Problem(
                code=code,
                severity=severity,
                action=action,
                count=int(count),
                reason=reason,
                examples=() if mask is None else _examples(self.raw, mask),
                details=details or {},
            )
        )

    def bad(self) -> np.ndarray:
        bad = np.zeros(self.rows, dtype=bool)
        for _, mask, _ in self.quarantined:
            bad |= mask
        return bad

    # -- column checks -------------------------------------------------------------------

    def timestamps(
        self,
        column: str,
        *,
        required: bool,
        now: pd.Timestamp | None,
        future: Literal["quarantine", "warn"] = "quarantine",
    ) -> pd.Series:
        """Parse a timestamp column to naive UTC, quarantining what cannot be used."""
        if column not in self.raw.columns:
            return pd.Series(pd.NaT, index=self.raw.index, dtype="datetime64[ns]")
        parsed = _parse_timestamps(self.raw[column], self.timestamp_format, self.timezone)
        if required:
            self.quarantine(f"missing_{column}", parsed.missing, f"{column} is missing")
        hint = (
            f" with timestamp_format {self.timestamp_format!r}"
            if self.timestamp_format
            else " (set timestamp_format in the source config if the export is not ISO-8601)"
        )
        self.quarantine(
            f"unparseable_{column}",
            parsed.unparseable,
            f"{column} could not be parsed as a timestamp{hint}",
        )
        for finding in parsed.findings:
            self.note(
                f"{finding.code}_{column}",
                finding.severity,
                finding.action,
                finding.count,
                f"{column}: {finding.reason}",
                mask=finding.mask,
                details=finding.details,
            )
        values = parsed.values
        if now is not None:
            in_future = (values > now).to_numpy()
            reason = f"{column} is in the future of the extraction time {now.isoformat()}"
            if future == "quarantine":
                self.quarantine(f"future_{column}", in_future, reason)
            elif in_future.any():
                self.note(
                    f"future_{column}", "warning", "kept", in_future.sum(), reason, mask=in_future
                )
        return values

    def non_negative_numbers(
        self, column: str, *, negative_reason: str, required: bool = False
    ) -> pd.Series:
        """A float64 column; non-numbers and negatives are quarantined."""
        if column not in self.raw.columns:
            return pd.Series(np.nan, index=self.raw.index, dtype="float64")
        values, not_numeric = _as_float(self.raw[column])
        self.quarantine(f"non_numeric_{column}", not_numeric, f"{column} is not a number")
        if required:
            missing = np.isnan(values) & ~not_numeric
            self.quarantine(f"missing_{column}", missing, f"{column} is missing")
        with np.errstate(invalid="ignore"):
            self.quarantine(f"negative_{column}", values < 0, negative_reason)
        return pd.Series(values, index=self.raw.index, dtype="float64")

    def unknown_customers(
        self,
        customer_id: pd.Series,
        missing_id: np.ndarray,
        known_customers: pd.Series,
        policy: UnknownCustomers,
    ) -> None:
        known = pd.Index(pd.unique(known_customers.dropna().astype(str)))
        categories_known = customer_id.cat.categories.isin(known)
        codes = customer_id.cat.codes.to_numpy()
        unknown = ~missing_id & ~np.append(categories_known, True)[codes]  # -1: missing
        reason = "customer_id is not in the customers table"
        if policy == "quarantine":
            self.quarantine("unknown_customer", unknown, reason)
        elif unknown.any():
            distinct = pd.unique(codes[unknown]).size
            self.note(
                "unknown_customer",
                "warning",
                "kept",
                unknown.sum(),
                f"{reason} (kept: unknown_customers = 'keep')",
                mask=unknown,
                details={"distinct_unknown_customers": int(distinct)},
            )

    def quarantine_duplicates(
        self, frame: pd.DataFrame, columns: list[str], code: str, reason: str
    ) -> None:
        """Quarantine repeats among rows that pass every other check (the first is kept)."""
        self.quarantine(code, self.repeated_rows(frame, columns), reason)

    def repeated_rows(self, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
        """Rows equal on ``columns`` to an earlier row, among rows passing every other check.

        A 64-bit key of the first three columns (for events: customer, timestamp, event type)
        finds the few rows that may repeat, with one sort instead of a hash table over all
        rows; the exact ``duplicated`` over all ``columns`` then runs on those only. On 20M
        events this takes about a second instead of eight.
        """
        rows = np.flatnonzero(~self.bad())
        keys = _row_keys(frame, columns[:3])[rows]
        rows = rows[_repeated(keys)]
        duplicated = np.zeros(self.rows, dtype=bool)
        if rows.size:
            duplicated[rows] = frame[columns].iloc[rows].duplicated(keep="first").to_numpy()
        return duplicated

    def report_absent_optional(self, columns: Sequence[str]) -> None:
        absent = [column for column in columns if column not in self.raw.columns]
        if absent:
            self.note(
                "absent_optional_columns",
                "info",
                "kept",
                0,
                f"optional columns not in the source, filled with missing values: {absent}",
            )

    # -- result --------------------------------------------------------------------------

    def finish(self, frame: pd.DataFrame) -> ValidationResult:
        bad = self.bad()
        quarantine = self.raw.loc[bad].copy()
        reason_column = "reason" if "reason" not in quarantine.columns else "quarantine_reason"
        quarantine[reason_column] = _combined_reasons(self.quarantined, bad)
        clean = frame.loc[~bad] if bad.any() else frame
        clean = clean.reset_index(drop=True)
        for column in clean.columns:
            if isinstance(clean[column].dtype, pd.CategoricalDtype):
                clean[column] = _drop_unused_categories(clean[column])
        problems = [
            Problem(
                code=code,
                severity="error",
                action="quarantined",
                count=int(mask.sum()),
                reason=reason,
                examples=_examples(self.raw, mask),
            )
            for code, mask, reason in self.quarantined
        ]
        order = {"error": 0, "warning": 1, "info": 2}
        problems += sorted(self.findings, key=lambda problem: order[problem.severity])
        report = ValidationReport(
            table=self.table,
            input_rows=self.rows,
            clean_rows=len(clean),
            quarantined_rows=int(bad.sum()),
            problems=tuple(problems),
        )
        result = ValidationResult(clean=clean, quarantine=quarantine, report=report)
        if len(clean) == 0:
            top = "; ".join(f"{p.count:,} x {p.reason}" for p in problems if p.severity == "error")
            raise NoUsableRowsError(
                f"{self.table}: none of the {self.rows:,} rows is usable ({top})", result
            )
        return result


# --------------------------------------------------------------------------------------------
# Timestamps


@dataclass
class _Finding:
    code: str
    severity: Severity
    action: Action
    count: int
    reason: str
    mask: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _ParsedTimestamps:
    values: pd.Series  # datetime64[ns], naive UTC; NaT where missing or unparseable
    missing: np.ndarray
    unparseable: np.ndarray
    findings: list[_Finding]


def _parse_timestamps(
    raw: pd.Series, timestamp_format: str | None, timezone: str
) -> _ParsedTimestamps:
    """Parse to naive UTC; offsets in the strings win, values without one are in ``timezone``."""
    _check_timezone(timezone)
    missing = raw.isna().to_numpy()
    findings: list[_Finding] = []
    dtype = raw.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        values = raw.dt.tz_convert("UTC").dt.tz_localize(None)
        values, out_of_range = _to_ns(values)
    elif pd.api.types.is_datetime64_dtype(dtype):
        values, out_of_range = _to_ns(raw)
        values = pd.Series(_localize(values.to_numpy(), timezone, findings), index=raw.index)
    elif missing.all():
        values = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
        out_of_range = np.zeros(len(raw), dtype=bool)
    elif pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        raise DataContractError(
            f"column {raw.name!r} holds numbers ({dtype}), not timestamps; epoch numbers are "
            "not supported: export timestamps as text (ISO-8601 or a format given in "
            "timestamp_format)"
        )
    else:
        strings = _as_strings(raw, missing)
        values = _parse_strings(strings, missing, timestamp_format, timezone, findings)
        out_of_range = np.zeros(len(raw), dtype=bool)
    values = pd.Series(values.to_numpy(dtype="datetime64[ns]"), index=raw.index, name=raw.name)
    unparseable = ~missing & (values.isna().to_numpy() | out_of_range)
    values = values.where(~unparseable)
    return _ParsedTimestamps(values, missing, unparseable, findings)


def _parse_strings(
    strings: np.ndarray,
    missing: np.ndarray,
    timestamp_format: str | None,
    timezone: str,
    findings: list[_Finding],
) -> pd.Series:
    arrow = pa.array(strings, type=pa.string(), mask=missing)
    has_offset = pc.fill_null(pc.match_substring_regex(arrow, _OFFSET_PATTERN), False)
    has_offset = has_offset.to_numpy(zero_copy_only=False)
    naive = ~missing & ~has_offset
    nanoseconds = np.full(len(strings), np.iinfo(np.int64).min, dtype=np.int64)  # NaT

    if naive.any():
        naive_format = (
            None if timestamp_format is None else re.sub(r"\s*%[zZ]", "", timestamp_format).strip()
        )
        parsed, guessed = _parse_with_formats(strings[naive], naive_format, utc=False)
        localized = _localize(parsed, timezone, findings, positions=np.flatnonzero(naive))
        nanoseconds[naive] = localized.view(np.int64)
        if guessed:
            _note_guessed_format(findings, guessed)
    if has_offset.any():
        aware_format = None
        if timestamp_format is not None:
            aware_format = (
                timestamp_format
                if re.search(r"%[zZ]", timestamp_format)
                else timestamp_format.rstrip() + "%z"
            )
        parsed, guessed = _parse_with_formats(strings[has_offset], aware_format, utc=True)
        nanoseconds[has_offset] = parsed.view(np.int64)
        if guessed:
            _note_guessed_format(findings, guessed)
        parsed_naive = naive & (nanoseconds != np.iinfo(np.int64).min)
        _note_offsets(findings, arrow, has_offset, parsed_naive, timezone)
    return pd.Series(nanoseconds.view("datetime64[ns]"))


def _parse_with_formats(
    strings: np.ndarray, timestamp_format: str | None, *, utc: bool
) -> tuple[np.ndarray, dict[str, int]]:
    """Naive-UTC datetime64 values; tries the given format, else ISO-8601 then a guessed one.

    Returns the values (NaT where nothing fits) and ``{guessed format: rows}`` when a format
    had to be guessed, so the report can ask for an explicit ``timestamp_format``.
    """
    result = np.full(len(strings), np.datetime64("NaT"), dtype="datetime64[ns]")
    remaining = np.arange(len(strings))
    formats: list[str] = [timestamp_format] if timestamp_format else ["ISO8601"]
    if timestamp_format and utc:
        formats.append("ISO8601")  # aware strings in another layout than the configured one
    guessed: dict[str, int] = {}
    for position, fmt in enumerate([*formats, None]):
        if remaining.size == 0:
            break
        if fmt is None:  # last resort: guess from the first value that did not parse
            if timestamp_format:
                break
            fmt = guess_datetime_format(str(strings[remaining[0]]))
            if fmt is None or fmt in formats:
                break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(
                pd.Series(strings[remaining], dtype=object), format=fmt, errors="coerce", utc=utc
            )
        if parsed.dtype == object:  # offsets the offset pattern did not recognise
            parsed = pd.to_datetime(parsed, errors="coerce", utc=True)
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        parsed = parsed.to_numpy(dtype="datetime64[ns]")
        ok = ~np.isnat(parsed)
        result[remaining[ok]] = parsed[ok]
        if position == len(formats) and ok.any():
            guessed[fmt] = int(ok.sum())
        remaining = remaining[~ok]
    return result, guessed


def _localize(
    values: np.ndarray,
    timezone: str,
    findings: list[_Finding],
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """Naive wall-clock times in ``timezone`` -> naive UTC; DST gaps and repeats are reported.

    ``positions`` are the rows of the table the values come from (for the report's examples).
    """
    values = np.asarray(values, dtype="datetime64[ns]")
    if timezone.upper() == "UTC":
        return values
    index = pd.DatetimeIndex(values)
    localized = index.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    result = localized.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]").copy()
    problem = np.isnat(result) & ~np.isnat(values)
    if problem.any():
        fixed = index[problem].tz_localize(
            timezone,
            ambiguous=np.zeros(int(problem.sum()), dtype=bool),
            nonexistent="shift_forward",
        )
        result[problem] = fixed.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
        rows = np.flatnonzero(problem) if positions is None else positions[problem]
        mask = np.zeros(int(rows.max()) + 1, dtype=bool)
        mask[rows] = True
        findings.append(
            _Finding(
                "dst_adjusted",
                "warning",
                "converted",
                int(problem.sum()),
                f"local times that do not exist or occur twice in {timezone} (daylight saving "
                "change): gaps shifted forward, repeated hours read as standard time",
                mask=mask,
            )
        )
    return result


def _note_guessed_format(findings: list[_Finding], guessed: dict[str, int]) -> None:
    for fmt, count in guessed.items():
        findings.append(
            _Finding(
                "guessed_format",
                "warning",
                "converted",
                count,
                f"not ISO-8601; parsed with the guessed format {fmt!r}: set timestamp_format in "
                "the source config to be sure (day/month order cannot always be told apart)",
            )
        )


def _note_offsets(
    findings: list[_Finding],
    arrow: pa.Array,
    has_offset: np.ndarray,
    naive: np.ndarray,
    timezone: str,
) -> None:
    offsets = pc.extract_regex(arrow.filter(pa.array(has_offset)), _OFFSET_SUFFIX)
    texts = pd.Series(pc.struct_field(offsets, "offset").to_numpy(zero_copy_only=False))
    by_offset: dict[str, int] = {}
    for text, count in texts.value_counts().items():
        offset = _normal_offset(str(text))
        by_offset[offset] = by_offset.get(offset, 0) + int(count)
    by_offset = dict(sorted(by_offset.items()))
    naive_count = int(naive.sum())
    if naive_count or len(by_offset) > 1:
        details = dict(by_offset)
        if naive_count:
            details[f"no offset (read as {timezone})"] = naive_count
        findings.append(
            _Finding(
                "mixed_timezones",
                "warning",
                "converted",
                int(has_offset.sum()) + naive_count,
                "values carry different UTC offsets, or some carry an offset and others none; "
                f"all converted to UTC, values without an offset read in {timezone}",
                mask=has_offset,
                details=details,
            )
        )
    elif set(by_offset) != {"+00:00"}:
        findings.append(
            _Finding(
                "offset_converted",
                "info",
                "converted",
                int(has_offset.sum()),
                f"values carry the UTC offset {next(iter(by_offset))}; converted to UTC",
            )
        )


def _normal_offset(text: str) -> str:
    """'Z', 'UTC', '+0100', '+01' -> '+00:00', '+00:00', '+01:00', '+01:00'."""
    if text.upper() in ("Z", "UTC", "GMT"):
        return "+00:00"
    digits = text[1:].replace(":", "")
    hours, minutes = digits[:2], digits[2:4] or "00"
    normal = f"{text[0]}{hours}:{minutes}"
    return "+00:00" if normal == "-00:00" else normal


def _as_strings(raw: pd.Series, missing: np.ndarray) -> np.ndarray:
    """An object array of str (None where missing) from strings, dates or mixed objects."""
    kind = pd.api.types.infer_dtype(raw, skipna=True)
    if kind == "string":
        values = raw.to_numpy(dtype=object, na_value=None)
    else:  # datetime objects, dates, mixed: their text form is ISO-8601 with any offset
        values = raw.astype(str).to_numpy(dtype=object)
        values[missing] = None
    return values


def _to_ns(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Cast to datetime64[ns]; values outside its range (years < 1677 or > 2262) become NaT."""
    if values.dtype == "datetime64[ns]":
        return values, np.zeros(len(values), dtype=bool)
    bounds = (pd.Timestamp.min.to_datetime64(), pd.Timestamp.max.to_datetime64())
    array = values.to_numpy()
    out_of_range = ~np.isnat(array) & ((array < bounds[0]) | (array > bounds[1]))
    cast = np.where(out_of_range, np.datetime64("NaT"), array).astype("datetime64[ns]")
    return pd.Series(cast, index=values.index), out_of_range


def _check_timezone(timezone: str) -> None:
    try:
        pd.Timestamp("2000-01-01").tz_localize(timezone)
    except Exception as error:  # pytz/zoneinfo raise different types
        raise DataContractError(
            f"unknown timezone {timezone!r} in the source config; use an IANA name such as "
            "'Europe/Paris' or 'UTC'"
        ) from error


def _extraction_time(now: pd.Timestamp | None) -> pd.Timestamp:
    now = pd.Timestamp.now("UTC") if now is None else pd.Timestamp(now)
    if now.tzinfo is not None:
        now = now.tz_convert("UTC").tz_localize(None)
    return now


# --------------------------------------------------------------------------------------------
# Values


def _as_categorical(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """A Categorical of stripped str and the mask of missing (or blank) values.

    Work is done on the distinct values only; numeric ids become their integer text
    (``123.0`` -> ``"123"``) so that ids read as numbers by a database still match.
    """
    if isinstance(raw.dtype, pd.CategoricalDtype):  # e.g. Parquet dictionaries: no hashing
        codes, uniques = raw.cat.codes.to_numpy(), raw.cat.categories
    else:
        codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    if uniques.size and pd.api.types.infer_dtype(uniques, skipna=True) in (
        "floating",
        "mixed-integer-float",
    ):
        uniques = np.array(
            [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in uniques],
            dtype=object,
        )
    text = pd.Series(uniques, dtype=object).astype(str).str.strip()
    blank = (text == "").to_numpy()
    new_codes, categories = pd.factorize(text.where(~blank), use_na_sentinel=True)
    # index -1 (missing) picks the appended -1: one gather, no np.where over all rows
    lookup = np.append(new_codes, -1).astype(np.int8 if len(categories) < 127 else np.int32)
    codes = lookup[codes]
    categorical = pd.Categorical.from_codes(
        codes, categories=pd.Index(categories, dtype=object), validate=False
    )
    return pd.Series(categorical, index=raw.index, name=raw.name), codes < 0


def _empty_categorical(rows: int) -> pd.Categorical:
    return pd.Categorical.from_codes(np.full(rows, -1), categories=pd.Index([], dtype=object))


def _as_float(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN where missing) and the mask of values present but not finite numbers."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        not_numeric = np.isinf(values)
        values = np.where(not_numeric, np.nan, values)
        return values, not_numeric
    missing = raw.isna().to_numpy()
    numbers = pd.to_numeric(raw, errors="coerce")
    values = np.asarray(numbers, dtype="float64")
    failed = ~missing & (np.isnan(values) | np.isinf(values))
    if failed.any():  # blank strings are missing values, not junk
        blank = pd.Series(raw.to_numpy()[failed], dtype=object).astype(str).str.strip() == ""
        failed[np.flatnonzero(failed)[blank.to_numpy()]] = False
    values = np.where(np.isinf(values), np.nan, values)
    return values, failed


def _report_unknown_event_types(
    check: _TableCheck, event_type: pd.Series, missing: np.ndarray
) -> None:
    counts = np.bincount(
        event_type.cat.codes.to_numpy()[~missing], minlength=len(event_type.cat.categories)
    )
    by_type = pd.Series(counts, index=event_type.cat.categories)
    unknown = by_type[~by_type.index.isin(EVENT_TYPES) & (by_type > 0)].sort_values(ascending=False)
    if len(unknown):
        check.note(
            "unknown_event_types",
            "info",
            "kept",
            int(unknown.sum()),
            f"event types outside the canonical set {list(EVENT_TYPES)} are kept: the "
            "per-event-type features (features.vocabulary) count them, the canonical ones do "
            "not; map them with event_type_mapping if they are the same thing under another "
            "name",
            details={"counts": {str(k): int(v) for k, v in unknown.head(20).items()}},
        )


def _report_overlaps(check: _TableCheck, frame: pd.DataFrame) -> None:
    """Subscription rows of one customer whose periods overlap (kept: plan changes can)."""
    usable = ~check.bad()
    rows = frame.loc[usable, ["customer_id", "start_date", "end_date"]]
    if len(rows) < 2:
        return
    order = np.lexsort((rows["start_date"].to_numpy(), rows["customer_id"].cat.codes.to_numpy()))
    ordered = rows.iloc[order]
    end = ordered["end_date"].fillna(pd.Timestamp.max)
    by_customer = ordered["customer_id"].cat.codes.to_numpy()
    latest_end_before = end.groupby(by_customer).cummax().groupby(by_customer).shift()
    overlapping_sorted = (ordered["start_date"] < latest_end_before).to_numpy()
    if overlapping_sorted.any():
        mask = np.zeros(check.rows, dtype=bool)
        mask[np.flatnonzero(usable)[order[overlapping_sorted]]] = True
        check.note(
            "overlapping_subscriptions",
            "warning",
            "kept",
            int(mask.sum()),
            "subscription starts before an earlier subscription of the same customer ends "
            "(kept; MRR may be double counted if these are not add-ons)",
            mask=mask,
            details={"customers": int(pd.unique(by_customer[overlapping_sorted]).size)},
        )


# --------------------------------------------------------------------------------------------
# Helpers


def _combined_reasons(
    quarantined: list[tuple[str, np.ndarray, str]], bad: np.ndarray
) -> np.ndarray:
    """One reason text per quarantined row, joining every problem the row has.

    Rows are grouped by their set of problems (a bit pattern), so text is built once per
    combination instead of once per row.
    """
    pattern = np.zeros(int(bad.sum()), dtype=np.int64)
    for bit, (_, mask, _) in enumerate(quarantined):
        pattern |= mask[bad].astype(np.int64) << bit
    texts = {
        value: "; ".join(
            reason for bit, (_, _, reason) in enumerate(quarantined) if value >> bit & 1
        )
        for value in np.unique(pattern)
    }
    return pd.Series(pattern).map(texts).to_numpy(dtype=object)


_KEY_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio)


def _column_bits(values: pd.Series) -> np.ndarray:
    """uint64 per value such that equal values (as ``duplicated`` sees them) get equal bits."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy().astype(np.int64).view(np.uint64)
    if pd.api.types.is_datetime64_dtype(dtype):
        return values.to_numpy(dtype="datetime64[ns]").view(np.int64).view(np.uint64)
    if pd.api.types.is_float_dtype(dtype):  # one NaN pattern, and -0.0 == 0.0
        array = values.to_numpy(dtype="float64")
        return (np.where(np.isnan(array), np.nan, array) + 0.0).view(np.uint64)
    return pd.util.hash_array(values.to_numpy(dtype=object))


def _row_keys(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """A uint64 key per row; equal rows on ``columns`` get equal keys (collisions possible)."""
    keys = np.zeros(len(frame), dtype=np.uint64)
    for column in columns:
        keys = keys * _KEY_MULTIPLIER + _column_bits(frame[column])
    return keys


def _repeated(keys: np.ndarray) -> np.ndarray:
    """Mask of the keys that occur more than once (a SIMD sort, no hash table)."""
    ordered = np.sort(keys)
    repeated_values = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if repeated_values.size == 0:
        return np.zeros(keys.size, dtype=bool)
    return np.isin(keys, repeated_values)


def _drop_unused_categories(values: pd.Series) -> pd.Series:
    """``cat.remove_unused_categories`` with a bincount instead of a sort over all rows."""
    codes = values.cat.codes.to_numpy()
    used = np.bincount(codes[codes >= 0], minlength=len(values.cat.categories)) > 0
    if used.all():
        return values
    recode = np.full(used.size + 1, -1, dtype=np.int64)  # last slot maps -1 (missing) to -1
    recode[np.flatnonzero(used)] = np.arange(int(used.sum()))
    categorical = pd.Categorical.from_codes(recode[codes], categories=values.cat.categories[used])
    return pd.Series(categorical, index=values.index, name=values.name)


def _examples(raw: pd.DataFrame, mask: np.ndarray) -> tuple[dict[str, Any], ...]:
    positions = np.flatnonzero(mask)[:MAX_EXAMPLES]
    if positions.size == 0:
        return ()
    rows = raw.iloc[positions]
    examples = []
    for label, (_, row) in zip(rows.index, rows.iterrows(), strict=True):  # at most 5 rows
        example = {"row": jsonable(label)}
        example.update({str(k): jsonable(v) for k, v in row.items()})
        examples.append(example)
    return tuple(examples)


def _atomic_write(path: Path, write: Callable[[IO[str]], object]) -> None:
    """Write text through ``features.files.write_atomically``."""

    def write_text(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            write(handle)

    write_atomically(path, write_text)


def _check_unknown_policy(policy: str) -> None:
    if policy not in ("quarantine", "keep"):
        raise ValueError(f"unknown_customers must be 'quarantine' or 'keep', not {policy!r}")
