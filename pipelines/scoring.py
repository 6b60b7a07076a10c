"""Batch scoring: every customer as of a date, ranked into the risk list a CRM team works from.

``run_score(cfg, as_of, out, db_url, db_table)`` (the CLI command ``churn score``) loads and
validates the configured data, builds the features at ``as_of`` with the training code, scores
them with the champion models (``serving.scoring``, the same code the HTTP service runs) and
writes the risk list, ranked by expected value at risk:

* to ``out`` (Parquet or CSV), atomically (``features.files.write_atomically``): a reader sees
  the old file or the new one, never a half-written one;
* to a SQL table when ``db_url`` is given, with ``as_of``, model version and run id columns.
  The rows of that ``as_of`` are replaced in ONE transaction (``DELETE WHERE as_of = ...`` then
  ``INSERT``): re-running a date never duplicates rows, and a failure midway rolls back to the
  previous rows of that date;
* to the service's copy (``serving.risk_list_path``, default ``<output_dir>/risk_list.parquet``)
  with its ``.meta.json`` sidecar (``serving.scoring.RiskListMeta``: bands, global statistics,
  category shares of this run), read by ``POST /risk_list`` and by
  ``serving.scoring.load_champions``. It is only replaced by a run of the same or a later
  ``as_of``, so back-filling an old date does not hide the latest list.

Global statistics (segment cut points, CLV fits) are refitted on the whole customer base at
``as_of``, exactly as training fits them per snapshot cutoff.

Who gets a churn score: the customers whose ``is_active`` feature is true at ``as_of``, the
same population the churn labels were built on (``labels.churn_definition``: a qualifying event
in the active window, or an active subscription). A run in which nobody is in it would write an
empty risk list; it fails instead with :class:`NobodyToScoreError` (``churn score`` exit 2),
saying how many customers were seen and which rule was used, and writes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.config import ProjectConfig
from pipelines.data import LoadedData, load_validated_data
from pipelines.io import write_table
from serving.decisions import is_missing

if TYPE_CHECKING:
    from serving.scoring import RiskListMeta

__all__ = [
    "DB_COLUMN_TYPES",
    "INSERT_CHUNK_ROWS",
    "NobodyToScoreError",
    "clear_risk_list_date",
    "insert_risk_list_rows",
    "replace_risk_list_rows",
    "risk_list_sql_table",
    "run_score",
    "split_table_name",
    "update_service_risk_list",
]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: SQL column types of the risk list table (``serving.scoring.RISK_LIST_COLUMNS`` + scored_at).
DB_COLUMN_TYPES: dict[str, str] = {
    "as_of": "date",
    "rank": "integer",
    "customer_id": "text",
    "churn_probability": "float",
    "churn_percentile": "float",
    "risk_band": "text",
    "at_risk": "boolean",
    "customer_value": "float",
    "expected_value_at_risk": "float",
    "rfm_segment": "text",
    "lifecycle_stage": "text",
    "value_tier": "text",
    "value_growth_segment": "text",
    "suggested_action": "text",
    "action_rule": "text",
    "action_reason": "text",
    "reason_1": "text",
    "reason_2": "text",
    "reason_3": "text",
    "reasons": "text",
    "upsell_probability": "float",
    "cross_sell_candidates": "text",
    "churn_model_version": "text",
    "upsell_model_version": "text",
    "churn_run_id": "text",
    "upsell_run_id": "text",
    "scored_at": "timestamp",
}

#: Rows per INSERT batch.
INSERT_CHUNK_ROWS = 10_000


class NobodyToScoreError(ValueError):
    """No customer is in the churn population at the as-of date: the risk list would be empty."""


def population_rule(cfg: ProjectConfig) -> str:
    """The rule that puts a customer in the churn population, in words (for messages)."""
    labels = cfg.labels
    if labels.churn_definition == "subscription":
        return (
            "labels.churn_definition 'subscription': a subscription started before the date "
            "and not ended before it"
        )
    kinds = "/".join(labels.qualifying_event_types) or "(none)"
    return (
        f"labels.churn_definition 'activity': a {kinds} event in the "
        f"{labels.active_window_days} days before the date"
    )


def require_someone_to_score(scores: pd.DataFrame, cfg: ProjectConfig, as_of: date) -> None:
    """Raise :class:`NobodyToScoreError` (one line) when no scored customer is active."""
    scored = scores["status"].eq("scored")
    if (scored & scores["is_active"].eq(True)).any():
        return
    subject = (
        "has an active subscription"
        if cfg.labels.churn_definition == "subscription"
        else "is active"
    )
    raise NobodyToScoreError(
        f"nobody to score as of {as_of}: none of the {len(scores):,} customers seen "
        f"({int(scored.sum()):,} with history before that date) {subject} by the rule "
        f"{population_rule(cfg)}; no risk list was written"
    )


def split_table_name(name: str) -> tuple[str | None, str]:
    """``(schema, table)`` of a ``--db-table`` value ``NAME`` or ``SCHEMA.NAME`` (schema None).

    Each part must be a plain SQL identifier, so the name is safe to use in statements; a bad
    name raises ``ValueError``. The flows call it first to fail before the slow part.
    """
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise ValueError(
            f"database table name {name!r} must be NAME or SCHEMA.NAME of letters, digits and "
            "underscores (starting with a letter or underscore)"
        )
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def risk_list_sql_table(name: str, metadata: Any | None = None) -> Any:
    """The SQLAlchemy ``Table`` of a risk list table called ``name`` (``[schema.]table``)."""
    import sqlalchemy as sa

    types = {
        "date": sa.Date,
        "integer": sa.Integer,
        "text": sa.Text,
        "float": sa.Float,
        "boolean": sa.Boolean,
        "timestamp": sa.DateTime,
    }
    schema, table = split_table_name(name)
    columns = [
        sa.Column(column, types[kind](), nullable=column not in ("as_of", "rank", "customer_id"))
        for column, kind in DB_COLUMN_TYPES.items()
    ]
    index = sa.Index(f"ix_{table}_as_of"[:63], "as_of")
    return sa.Table(table, metadata or sa.MetaData(), *columns, index, schema=schema)


def _records(table: pd.DataFrame, as_of: date, scored_at: datetime) -> list[tuple[Any, ...]]:
    """Rows as tuples of plain Python values (None for missing), columns in the order of
    :data:`DB_COLUMN_TYPES`."""
    frame = table.copy()
    frame["as_of"] = as_of
    frame["scored_at"] = scored_at.replace(tzinfo=None)
    columns: dict[str, list[Any]] = {}
    for column in DB_COLUMN_TYPES:
        values = frame[column]
        kind = DB_COLUMN_TYPES[column]
        if kind == "float":
            numbers = values.to_numpy(dtype=np.float64)
            columns[column] = [None if not np.isfinite(v) else float(v) for v in numbers]
        elif kind == "integer":
            columns[column] = [int(v) for v in values.to_numpy()]
        elif kind == "boolean":
            columns[column] = [None if pd.isna(v) else bool(v) for v in values.to_numpy(object)]
        elif kind in ("date", "timestamp"):
            columns[column] = list(values.to_numpy(dtype=object))
        else:
            columns[column] = [None if is_missing(v) else str(v) for v in values.to_numpy(object)]
    return list(zip(*columns.values(), strict=True))


def _insert_rows(connection: Any, table: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (tuples in :data:`DB_COLUMN_TYPES` order) inside the caller's
    transaction: ``COPY`` on PostgreSQL through psycopg 3 (a million rows in seconds), chunked
    multi-row INSERTs on other databases."""
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        _copy_rows(connection, table, rows)
        return
    names = list(DB_COLUMN_TYPES)
    for start in range(0, len(rows), INSERT_CHUNK_ROWS):
        chunk = rows[start : start + INSERT_CHUNK_ROWS]
        connection.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in chunk])


def _copy_rows(connection: Any, table: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    from psycopg import sql

    raw = connection.connection.driver_connection  # same connection, same transaction
    target = (
        sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)
    )
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in DB_COLUMN_TYPES)
    )
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _check_existing_layout(connection: Any, table: Any) -> None:
    """Refuse an existing table that lacks columns of :data:`DB_COLUMN_TYPES`."""
    import sqlalchemy as sa

    inspector = sa.inspect(connection)
    if not inspector.has_table(table.name, schema=table.schema):
        return
    present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
    missing = [c for c in DB_COLUMN_TYPES if c not in present]
    if missing:
        raise ValueError(
            f"database table {table.fullname} exists with another layout: it lacks columns "
            f"{missing}; choose another --db-table or migrate it"
        )


def clear_risk_list_date(connection: Any, sql_table: Any, as_of: date) -> None:
    """The first half of replacing a date's rows, inside the caller's transaction: refuse an
    existing table of another layout, create the table (and its index) when missing, delete
    the rows of ``as_of``. The caller then inserts the new rows in the same transaction."""
    _check_existing_layout(connection, sql_table)
    sql_table.create(connection, checkfirst=True)
    connection.execute(sql_table.delete().where(sql_table.c.as_of == as_of))


def insert_risk_list_rows(
    connection: Any, sql_table: Any, table: pd.DataFrame, as_of: date, scored_at: datetime
) -> int:
    """Insert the rows of a risk list frame (:data:`serving.scoring.RISK_LIST_COLUMNS`) with
    ``as_of`` and ``scored_at``, inside the caller's transaction; returns the number inserted.

    For callers that write a large list in pieces (the Spark engine streams partitions) after
    :func:`clear_risk_list_date`.
    """
    rows = _records(table, as_of, scored_at)
    _insert_rows(connection, sql_table, rows)
    return len(rows)


def replace_risk_list_rows(
    db_url: str, db_table: str, table: pd.DataFrame, as_of: date, *, scored_at: datetime
) -> int:
    """Replace the rows of ``as_of`` in ``db_table`` by ``table``'s, in one transaction.

    Creates the table (and its ``as_of`` index) when missing. DELETE and INSERT share one
    transaction: on any failure the database rolls back and keeps the previous rows of that
    date. Returns the number of rows inserted.
    """
    import sqlalchemy as sa

    sql_table = risk_list_sql_table(db_table)
    rows = _records(table, as_of, scored_at)
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as connection:  # one transaction: commit at the end, else rollback
            clear_risk_list_date(connection, sql_table, as_of)
            _insert_rows(connection, sql_table, rows)
    finally:
        engine.dispose()
    return len(rows)


def _redact(url: str) -> str:
    from training.train import redact

    return redact(url)


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts(dropna=True).sort_index().items()}


def update_service_risk_list(
    path: Path, table: pd.DataFrame, meta: RiskListMeta
) -> tuple[bool, str]:
    """Replace the service's risk list (``serving.risk_list_path``) and its sidecar by
    ``table`` and ``meta``, unless the current one holds a later ``as_of``: back-filling an old
    date must not hide the latest list from ``POST /risk_list``. An unreadable current list is
    replaced. Returns (written, a note for the summary)."""
    from serving.scoring import read_risk_list, write_risk_list

    if path.is_file():
        try:
            current = read_risk_list(path).meta.as_of
        except Exception:  # unreadable: replace it
            current = None
        if current is not None and str(current) > str(meta.as_of):
            return False, f"kept: it holds the later date {current}"
    write_risk_list(table, path, meta)
    return True, "updated"


def run_score(
    cfg: ProjectConfig,
    as_of: date | None = None,
    out: Path | None = None,
    db_url: str | None = None,
    db_table: str | None = None,
    *,
    data: LoadedData | None = None,
    models: Any | None = None,
    now: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """Score every customer as of ``as_of`` (default: the end of the data) and write the risk
    list to ``out``, the database table and the service's copy; returns a JSON-able summary.

    ``data`` / ``models`` (``serving.scoring.ScoringModels``) may be passed in to reuse them.
    """
    from serving.scoring import (
        RiskListMeta,
        category_purchase_shares,
        load_champions,
        risk_list_table,
        score_events,
    )

    if (db_url is None) != (db_table is None):
        raise ValueError("--db-url and --db-table go together: give both or neither")
    if db_table is not None:
        split_table_name(db_table)  # fail before the slow part
    if out is not None and Path(out).suffix not in (".parquet", ".pq", ".csv", ".gz"):
        raise ValueError(f"unsupported output format {Path(out).name!r}: use .parquet or .csv")

    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = data or load_validated_data(cfg, now=now)
    timings["load_s"] = time.perf_counter() - started
    cutoff = pd.Timestamp(as_of) if as_of is not None else data.data_end
    if cutoff.normalize() != cutoff:
        raise ValueError(f"as_of must be a date, got {cutoff}")
    if cutoff > data.data_end:
        raise ValueError(
            f"as_of {cutoff.date()} is after the end of the data ({data.data_end.date()}): "
            "features would treat the missing days as silence"
        )

    step = time.perf_counter()
    models = models or load_champions(cfg)
    timings["models_s"] = time.perf_counter() - step

    step = time.perf_counter()
    shares = category_purchase_shares(data.events, cutoff)
    reason_rows = cfg.serving.batch_reason_rows
    scores = score_events(
        data.events,
        cutoff,
        models,
        cfg,
        customers=data.customers,
        subscriptions=data.subscriptions,
        refit_stats=True,
        explain=True if reason_rows is None else int(reason_rows),
        category_shares=shares,
    )
    timings["score_s"] = time.perf_counter() - step
    require_someone_to_score(scores, cfg, cutoff.date())
    table = risk_list_table(scores, models)
    scored_at = datetime.now(UTC)

    step = time.perf_counter()
    versions = models.model_versions()
    run_ids = models.run_ids()
    summary: dict[str, Any] = {
        "as_of": str(cutoff.date()),
        "customers": len(scores),
        "status": _counts(scores["status"]),
        "active": int((scores["status"].eq("scored") & scores["is_active"].eq(True)).sum()),
        "lapsed": int((scores["status"].eq("scored") & scores["is_active"].eq(False)).sum()),
        "risk_list_rows": len(table),
        "risk_bands": _counts(scores["risk_band"]),
        "risk_band_thresholds": scores.attrs.get("risk_bands"),
        "band_source": scores.attrs.get("band_source"),
        "suggested_actions": _counts(scores["suggested_action"]),
        "explained_rows": int(scores["reasons_computed"].sum()),
        "model_versions": versions,
        "run_ids": run_ids,
        "warnings": scores.attrs.get("warnings", []),
    }
    if out is not None:
        write_table(table, Path(out))
        summary["out"] = str(out)
    if db_url is not None and db_table is not None:
        summary["db_rows"] = replace_risk_list_rows(
            db_url, db_table, table, cutoff.date(), scored_at=scored_at
        )
        summary["db_table"] = db_table
        summary["db_url"] = _redact(db_url)
    meta = RiskListMeta(
        as_of=str(cutoff.date()),
        scored_at=scored_at.isoformat(),
        rows=len(table),
        model_versions=versions,
        run_ids=run_ids,
        risk_bands=scores.attrs.get("risk_bands"),
        band_source=scores.attrs.get("band_source"),
        global_stats=scores.attrs.get("global_stats"),
        category_shares=shares,
        explained_rows=summary["explained_rows"],
    )
    service_path = cfg.serving.risk_list_location(cfg.output_dir)
    written, why = update_service_risk_list(service_path, table, meta)
    summary["service_risk_list"] = {"path": str(service_path), "written": written, "note": why}
    timings["write_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - started
    summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return summary
