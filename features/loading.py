"""Load the CRM tables from CSV, Parquet or a SQL database onto the canonical column names.

Loading is deliberately dumb about values: it renames columns (``SourceConfig.columns``) and
event names (``SourceConfig.event_type_mapping``) and otherwise keeps what the source holds,
timestamps as strings included. Parsing and normalisation happen in ``features.validation`` so
that a bad row is quarantined and reported instead of crashing a 20-million-row load.

Only the columns the contract needs are read (customers keep their attribute columns too): a
CRM export often carries dozens of wide free-text columns that would otherwise dominate memory.

Problems that make a source unreadable (missing file, unreachable database, missing table,
missing required columns) raise ``FileNotFoundError`` or ``DataContractError`` with a message
that names the source, never a raw stack trace from deep inside pandas or the database driver.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from features.config import DataConfig, SourceConfig
from features.contract import (
    CUSTOMERS_REQUIRED,
    EVENT_ID,
    EVENTS_KNOWN,
    EVENTS_REQUIRED,
    SUBSCRIPTIONS_ALIASES,
    SUBSCRIPTIONS_KNOWN,
    SUBSCRIPTIONS_REQUIRED,
    TIMESTAMP_COLUMNS,
    DataContractError,
    apply_aliases,
)

TableKind = Literal["events", "customers", "subscriptions"]

#: Canonical columns read for each table; ``None`` means every column (customer attributes).
#: Subscriptions also read the canonical aliases (``cancelled_at`` -> ``end_date``, ...).
CONTRACT_COLUMNS: dict[str, tuple[str, ...] | None] = {
    "events": EVENTS_KNOWN,
    "customers": None,
    "subscriptions": SUBSCRIPTIONS_KNOWN + tuple(SUBSCRIPTIONS_ALIASES),
}

#: Canonical aliases renamed after the column mapping, per table.
ALIASES: dict[str, dict[str, str]] = {"subscriptions": SUBSCRIPTIONS_ALIASES}

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": EVENTS_REQUIRED,
    "customers": CUSTOMERS_REQUIRED,
    "subscriptions": SUBSCRIPTIONS_REQUIRED,
}

#: Columns read as strings from CSV whatever they look like: identifiers such as ``00123`` must
#: not become the integer 123, and timestamps stay raw until validation parses them.
_STRING_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("customer_id", "timestamp", "event_type", "category", "channel", EVENT_ID),
    "customers": ("customer_id", *TIMESTAMP_COLUMNS["customers"]),
    "subscriptions": (
        "customer_id",
        "plan",
        *TIMESTAMP_COLUMNS["subscriptions"],
        *(
            alias
            for alias, name in SUBSCRIPTIONS_ALIASES.items()
            if name in ("end_date", "term_end")
        ),
    ),
}

#: Names CRM exports commonly use for the canonical columns, used to suggest a column mapping.
_COMMON_SOURCE_NAMES: dict[str, tuple[str, ...]] = {
    "customer_id": (
        "account_id",
        "accountid",
        "user_id",
        "userid",
        "client_id",
        "contact_id",
        "cust_id",
        "customer",
        "customerid",
        "member_id",
    ),
    "timestamp": (
        "event_time",
        "event_timestamp",
        "event_date",
        "time",
        "ts",
        "datetime",
        "date",
        "created_at",
        "occurred_at",
        "invoicedate",
    ),
    "event_type": ("type", "event", "event_name", "action", "activity", "activity_type"),
    "amount": ("revenue", "value", "price", "total", "order_value", "amount_eur", "amount_usd"),
    "quantity": ("qty", "units", "count"),
    "category": ("product_category", "product_line", "product", "category_name"),
    "channel": ("source", "medium", "touchpoint"),
    "signup_date": ("created_at", "registration_date", "signup", "created", "join_date"),
    "plan": ("plan_name", "tier", "product"),
    "start_date": ("start", "started_at", "valid_from", "begin_date"),
    "end_date": ("end", "ended_at", "valid_to", "churn_date", "canceled_at"),
    "mrr": ("monthly_revenue", "monthly_fee", "price", "amount"),
}

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".csv.zst", ".tsv")
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class RawCRM:
    """The tables as loaded: canonical column names, raw values (see ``features.validation``)."""

    events: pd.DataFrame
    customers: pd.DataFrame | None = None
    subscriptions: pd.DataFrame | None = None


def load_crm_data(data: DataConfig) -> RawCRM:
    """Load every configured table; customers and subscriptions are ``None`` when not configured."""
    if data.events is None:
        raise DataContractError(
            "no events source is configured: set data.events.path (CSV/Parquet) or "
            "data.events.url with a table or query"
        )
    return RawCRM(
        events=load_table(data.events, "events"),
        customers=None if data.customers is None else load_table(data.customers, "customers"),
        subscriptions=(
            None if data.subscriptions is None else load_table(data.subscriptions, "subscriptions")
        ),
    )


def load_table(source: SourceConfig, kind: TableKind) -> pd.DataFrame:
    """Read one table, keep only the columns the contract needs and rename them to canonical.

    Values are left as read (timestamps may be strings, amounts may be strings if the file has
    junk in them); ``features.validation`` parses them and reports what it cannot use.
    """
    if kind not in CONTRACT_COLUMNS:
        raise ValueError(f"unknown table kind {kind!r}; expected one of {list(CONTRACT_COLUMNS)}")
    _check_mapping(source.columns, kind)
    if source.path is not None:
        frame = _read_file(Path(source.path), source, kind)
    else:
        frame = _read_sql(source, kind)
    # The frame is ours (just read): renaming in place avoids copying millions of rows.
    frame.columns = apply_aliases(
        [source.columns.get(column, column) for column in frame.columns], ALIASES.get(kind, {})
    )
    if kind == "events" and source.event_type_mapping and "event_type" in frame.columns:
        frame["event_type"] = map_event_types(frame["event_type"], source.event_type_mapping)
    return frame


def map_event_types(event_types: pd.Series, mapping: Mapping[str, str]) -> pd.Series:
    """Rename export event names to canonical ones; names not in ``mapping`` are kept as they are.

    Vectorised over the distinct values (a handful) rather than the rows (millions).
    """
    codes, uniques = pd.factorize(event_types, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    renamed = np.array([mapping.get(value, value) for value in uniques], dtype=object)
    values = np.empty(len(codes), dtype=object)
    present = codes >= 0
    values[present] = renamed[codes[present]]
    values[~present] = None
    return pd.Series(values, index=event_types.index, name=event_types.name)


def columns_to_read(
    source_columns: Iterable[str], mapping: Mapping[str, str], kind: TableKind
) -> list[str]:
    """The source columns worth reading, in source order, under their source names.

    A source column is read when its canonical name (after the mapping) is a contract column of
    ``kind``; customers keep every column (attributes such as country or plan tier). A source
    column that merely has the same name as a mapping target is not read: the mapped column wins.
    """
    keep = _column_filter(mapping, kind)
    return [column for column in source_columns if keep(column)]


def missing_columns_error(
    kind: str,
    missing: Iterable[str],
    found: Iterable[str],
    mapping: Mapping[str, str] | None = None,
) -> DataContractError:
    """A ``DataContractError`` that says what is missing, what was found and how to map it."""
    missing = list(missing)
    found = [str(column) for column in found]
    mapping = dict(mapping or {})
    lines = [
        f"{kind}: missing required column(s) {missing}; columns found: {found}.",
    ]
    absent_sources = [src for src, dst in mapping.items() if dst in missing and src not in found]
    if absent_sources:
        lines.append(
            f"The column mapping expects source column(s) {absent_sources}, which the source "
            "does not have (names are case-sensitive)."
        )
    suggestion = _suggest_mapping(missing, found)
    if suggestion:
        pairs = ", ".join(f"{src}: {dst}" for src, dst in suggestion.items())
        lines.append(
            f"Map source names onto canonical ones in the source config, e.g. columns: {{{pairs}}}."
        )
    else:
        lines.append(
            "Map the source's own column names onto the canonical ones with the 'columns' "
            "mapping of this source in the config, e.g. columns: {account_id: customer_id}."
        )
    if mapping:
        lines.append(f"Current mapping: {mapping}.")
    return DataContractError(" ".join(lines))


# --------------------------------------------------------------------------------------------
# Column selection


def _check_mapping(mapping: Mapping[str, str], kind: str) -> None:
    targets = pd.Series(list(mapping.values()), dtype=object)
    doubled = sorted(set(targets[targets.duplicated()]))
    if doubled:
        sources = {t: [s for s, d in mapping.items() if d == t] for t in doubled}
        raise DataContractError(
            f"{kind}: the column mapping sends several source columns to the same canonical "
            f"name: {sources}; keep one source column per canonical column"
        )


def _column_filter(mapping: Mapping[str, str], kind: TableKind) -> Callable[[str], bool]:
    wanted = CONTRACT_COLUMNS[kind]
    targets = set(mapping.values())

    def keep(column: str) -> bool:
        if column not in mapping and column in targets:
            return False  # shadowed by an explicitly mapped source column
        return wanted is None or mapping.get(column, column) in wanted

    return keep


def _check_required(found: list[str], mapping: Mapping[str, str], kind: TableKind) -> None:
    keep = _column_filter(mapping, kind)
    canonical = {mapping.get(column, column) for column in found if keep(column)}
    missing = [column for column in REQUIRED_COLUMNS[kind] if column not in canonical]
    if missing:
        raise missing_columns_error(kind, missing, found, mapping)


def _suggest_mapping(missing: list[str], found: list[str]) -> dict[str, str]:
    by_lower = {column.lower().strip(): column for column in found}
    suggestion: dict[str, str] = {}
    for canonical in missing:
        candidates = [
            by_lower[name] for name in _COMMON_SOURCE_NAMES.get(canonical, ()) if name in by_lower
        ]
        if not candidates:
            close = difflib.get_close_matches(canonical, list(by_lower), n=1, cutoff=0.75)
            candidates = [by_lower[name] for name in close]
        for candidate in candidates:
            if candidate not in suggestion:
                suggestion[candidate] = canonical
                break
    return suggestion


# --------------------------------------------------------------------------------------------
# Files


def _read_file(path: Path, source: SourceConfig, kind: TableKind) -> pd.DataFrame:
    name = path.name.lower()
    if not path.exists():
        raise FileNotFoundError(f"{kind}: source file not found: {path}")
    if name.endswith(_PARQUET_SUFFIXES):
        return _read_parquet(path, source, kind)
    if name.endswith(_CSV_SUFFIXES):
        return _read_csv(path, source, kind)
    raise DataContractError(
        f"{kind}: cannot tell the format of {path} from its extension; "
        f"supported: {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
    )


def _read_parquet(path: Path, source: SourceConfig, kind: TableKind) -> pd.DataFrame:
    try:
        schema = (
            pads.dataset(path, format="parquet").schema if path.is_dir() else pq.read_schema(path)
        )
    except (pa.ArrowException, OSError) as error:
        raise DataContractError(f"{kind}: cannot read Parquet file {path}: {error}") from error
    found = list(schema.names)
    _check_required(found, source.columns, kind)
    columns = columns_to_read(found, source.columns, kind)
    try:
        return pd.read_parquet(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise DataContractError(f"{kind}: cannot read Parquet file {path}: {error}") from error


def _read_csv(path: Path, source: SourceConfig, kind: TableKind) -> pd.DataFrame:
    sep = "\t" if path.name.lower().endswith(".tsv") else source.csv_separator
    try:
        found = list(pd.read_csv(path, sep=sep, nrows=0).columns)
    except pd.errors.EmptyDataError as error:
        raise DataContractError(f"{kind}: {path} is empty (not even a header row)") from error
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as error:
        raise DataContractError(f"{kind}: cannot read the header of {path}: {error}") from error
    _check_required(found, source.columns, kind)
    keep = _column_filter(source.columns, kind)
    as_string = {
        column: str
        for column in found
        if keep(column) and source.columns.get(column, column) in _STRING_COLUMNS[kind]
    }
    try:
        with warnings.catch_warnings():
            # Columns with a few junk values come back as object; validation handles them.
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            return pd.read_csv(path, sep=sep, usecols=keep, dtype=as_string)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as error:
        raise DataContractError(f"{kind}: cannot parse {path}: {error}") from error


# --------------------------------------------------------------------------------------------
# SQL


def _read_sql(source: SourceConfig, kind: TableKind) -> pd.DataFrame:
    try:
        engine = sa.create_engine(source.url)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as error:
        raise DataContractError(f"{kind}: invalid database URL: {error}") from error
    shown_url = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            if source.table is not None:
                statement = _table_select(connection, source, kind, shown_url)
            else:
                statement = _query_select(connection, source, kind, shown_url)
            return pd.read_sql_query(statement, connection)
    except sa_exc.OperationalError as error:
        raise DataContractError(
            f"{kind}: cannot read from the database at {shown_url}: {_first_line(error)}"
        ) from error
    except sa_exc.DBAPIError as error:
        raise DataContractError(
            f"{kind}: the database at {shown_url} rejected the statement: {_first_line(error)}"
        ) from error
    finally:
        engine.dispose()


def _table_select(
    connection: sa.Connection, source: SourceConfig, kind: TableKind, shown_url: str
) -> sa.Select:
    """SELECT of the needed columns of a reflected table; identifiers are quoted by SQLAlchemy."""
    schema, _, name = source.table.rpartition(".")
    schema = schema or None
    inspector = sa.inspect(connection)
    if not inspector.has_table(name, schema=schema):
        available = sorted(inspector.get_table_names(schema=schema))
        shown = available[:20] + (["..."] if len(available) > 20 else [])
        raise DataContractError(
            f"{kind}: table {source.table!r} not found in the database at {shown_url}; "
            f"tables there: {shown}"
        )
    table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=connection)
    found = [column.name for column in table.columns]
    _check_required(found, source.columns, kind)
    return sa.select(*(table.c[column] for column in columns_to_read(found, source.columns, kind)))


def _query_select(
    connection: sa.Connection, source: SourceConfig, kind: TableKind, shown_url: str
) -> sa.Select:
    """The configured query wrapped as a subquery so only the needed columns are fetched."""
    # Colons are escaped so that SQLAlchemy does not read ':name' inside the SQL as a parameter.
    query = source.query.strip().rstrip(";").strip().replace(":", r"\:")
    probe_source = sa.text(query).columns().subquery("crm_source")
    probe = sa.select(sa.literal_column("*")).select_from(probe_source).limit(0)
    found = list(connection.execute(probe).keys())
    _check_required(found, source.columns, kind)
    subquery = (
        sa.text(query).columns(*(sa.column(column) for column in found)).subquery("crm_source")
    )
    return sa.select(
        *(subquery.c[column] for column in columns_to_read(found, source.columns, kind))
    )


def _first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    text = str(original).strip()
    return text.splitlines()[0] if text else type(original).__name__
