"""The feature engine on PySpark: the same three phases as ``features.snapshots``, distributed.

Why this layout (measured on 2 cores, 1M events / 50k customers): ``groupBy("customer_id")
.applyInPandas`` calls Python once per customer and took 206 s; grouping by a hash bucket of the
customer id (a few hundred buckets) and running the vectorised phase-1 function once per bucket
took 14 s. So every step here works on buckets, never on single customers:

1. **phase 1 + labels, per bucket**: events are hashed into ``n_buckets`` buckets by
   ``customer_id`` and cogrouped with the customers and subscriptions rows of the same bucket
   (one "side" table, tagged by origin), so every row of a customer meets in one call of
   :func:`features.lifecycle.compute_customer_features` (and :func:`features.labels.build_labels`
   for snapshots). Both are pure per customer, so the result does not depend on the bucketing.
   The phase-1 table is cached (memory and disk): phases 2 and 3 both read it.
2. **phase 2 on the driver**: :func:`features.segments.fit_global_stats` needs every customer.
   Only the columns it reads are collected, with Arrow (``GLOBAL_STATS_COLUMNS``: nine float64
   columns, plus ``customer_id`` to sort them into the local engine's order so the seeded CLV
   sample is the same): about 90 bytes per customer, 90 MB at 1M customers, 9 GB at 100M (and
   twice that while sorting). ``max_stats_customers`` caps that with a
   deterministic hash sample of customers (statistics then come from the sample: still the same
   for any partitioning, but no longer equal to the local engine's).
3. **phase 3 per partition**: the statistics (``GlobalStats.to_dict()``) are broadcast and
   :func:`features.segments.apply_global_stats` runs row-wise with ``mapInPandas``.

Input: canonical tables (``features.contract``) as Spark DataFrames, read from Parquet or a Spark
table. The engine trusts that they passed ``features.validation`` (it cannot quarantine rows in
a distributed job); it still refuses, with counts, rows the phase-1 function could not read
(missing keys or timestamps) instead of dropping them. Timestamps may be Spark timestamps (UTC),
dates, or int64 nanoseconds: pandas writes nanosecond Parquet timestamps, which Spark 4 only
reads with ``spark.sql.legacy.parquet.nanosAsLong`` (set by :func:`configure_session`) as
int64. All times travel to Python as int64 nanoseconds, so no precision is lost on the way.
Everything phase 1 reads locally reaches it: the subscriptions' scheduled term and seats
(``SUBSCRIPTIONS_TERM_COLUMNS``, under the contract's aliases too), every customer attribute
``features.attributes`` admits, by its type only (numbers and flags as double, dates and
timestamps as times, text as strings: phase 1 reads attributes by dtype, so any bucketing gives
the local result), and the events' ``quantity`` when the vocabulary counts it. The customers
table is read as validation leaves it (``features.validation.validate_customers``, run once on
the whole table): ISO-date text already converted to times, identifier-like text dropped.

Phase 1 uses ``applyInArrow``, not ``applyInPandas``: a bucket arrives as Arrow tables whose
string columns (ids, event types, categories, channels, plans...) are dictionary-encoded in Arrow
and reach the phase-1 function as pandas Categoricals, the local engine's canonical dtypes.
``applyInPandas`` would build one Python ``str`` per value, which phase 1 then factorizes back:
on a 173k-event bucket 55-63 ms of phase 1 against 17 ms with Categoricals. The rows go back
as an Arrow table in the declared schema. Output schemas are derived by running phases 1 and 3
on zero rows on the driver.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.config import FeatureParams, LabelParams
from features.contract import (
    CUSTOMERS_KNOWN,
    EVENTS_REQUIRED,
    LABEL_COLUMNS,
    SUBSCRIPTIONS_ALIASES,
    SUBSCRIPTIONS_KNOWN,
    SUBSCRIPTIONS_REQUIRED,
    TIMESTAMP_COLUMNS,
    DataContractError,
    apply_aliases,
)
from features.labels import build_labels
from features.lifecycle import as_cutoff, compute_customer_features, declared_attributes
from features.segments import GlobalStats, apply_global_stats, fit_global_stats
from features.snapshots import stats_key
from features.vocabulary import EventVocabulary, select_vocabulary

try:
    from pyspark import StorageLevel
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the Spark engine needs PySpark 4 and Java 17: pip install 'churn-crm[spark]'"
    ) from error

__all__ = [
    "EVENT_COLUMNS_USED",
    "EVENTS_PER_BUCKET",
    "GLOBAL_STATS_COLUMNS",
    "CrmSummary",
    "SparkCRM",
    "SparkFeatures",
    "build_features_spark",
    "build_snapshots_spark",
    "canonical_crm",
    "check_crm",
    "configure_session",
    "default_bucket_count",
    "fit_global_stats_spark",
    "NANOSECOND_TIME_KEY",
    "mark_nanosecond_times",
    "spark_schema_of",
    "spark_session",
]

#: Event columns phase 1 and the labels always read. ``quantity`` is kept by
#: :func:`canonical_crm` too but only shuffled when the vocabulary counts it
#: (``features.vocabulary.count_weight: quantity``).
EVENT_COLUMNS_USED: tuple[str, ...] = (*EVENTS_REQUIRED, "amount", "category", "channel")
_EVENT_COLUMNS_KEPT: tuple[str, ...] = (*EVENT_COLUMNS_USED, "quantity")

#: Phase-1 columns ``features.segments.fit_global_stats`` reads (besides ``cutoff``).
GLOBAL_STATS_COLUMNS: tuple[str, ...] = (
    "purchases_total",
    "recency_purchase_days",
    "tenure_days",
    "spend_total",
    "value_365d",
    "clv_frequency",
    "clv_recency_weeks",
    "clv_T_weeks",
    "clv_monetary",
)

#: Target events per bucket: one phase-1 call on 200k events takes ~50 ms, so the fixed cost
#: per call (~5 ms) is amortised while a bucket stays a few tens of MB in the Python worker.
EVENTS_PER_BUCKET = 200_000

#: Nanoseconds of a missing time (pandas' NaT as int64) in the int64 time columns.
_NAT_NS = np.iinfo(np.int64).min
_NS_PER_MICROSECOND = 1_000
_BUCKET = "_bucket"
_ORIGIN = "_origin"
_CUSTOMER_PREFIX = "c__"
_SUBSCRIPTION_PREFIX = "s__"
_LABEL_OUTPUT_COLUMNS: tuple[str, ...] = (*LABEL_COLUMNS, "label_matured")
#: Canonical columns that are numbers (double in Spark, float64 in pandas).
_NUMBER_COLUMNS = frozenset(
    {"amount", "quantity", "mrr", "bill_period_months", "seats", "price", "discount"}
)
#: Spark field metadata key marking an int64 column as nanosecond timestamps (pandas' Parquet
#: timestamps, which Spark 4 reads as int64 with ``nanosAsLong``): see
#: :func:`mark_nanosecond_times`.
NANOSECOND_TIME_KEY = "churn.nanosecond_time"


# --------------------------------------------------------------------------------------------
# session
# --------------------------------------------------------------------------------------------


def configure_session(spark: SparkSession) -> SparkSession:
    """Session settings the engine relies on (set on the given session, returned for chaining).

    * ``spark.sql.session.timeZone=UTC``: canonical times are naive UTC; timestamp columns are
      converted with the session zone, so any other zone would shift them;
    * ``spark.sql.legacy.parquet.nanosAsLong=true``: pandas writes nanosecond timestamps, which
      Spark 4 cannot read as timestamps; as int64 nanoseconds they stay exact;
    * Arrow for ``toPandas`` (collecting the phase-2 columns);
    * ``spark.sql.optimizer.canChangeCachedPlanOutputPartitioning=true``: lets adaptive query
      execution coalesce the shuffle partitions of the cached phase-1 table; without it every
      later step runs ``spark.sql.shuffle.partitions`` (200) mostly empty Python tasks, which
      made phase 3 ten times slower in our measurements.
    """
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.optimizer.canChangeCachedPlanOutputPartitioning", "true")
    spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    return spark


def spark_session(
    master: str | None = None,
    *,
    app_name: str = "churn-crm",
    shuffle_partitions: int | None = None,
    conf: dict[str, str] | None = None,
    log_level: str = "WARN",
) -> SparkSession:
    """A configured SparkSession (the active one if any: Spark allows one per driver).

    ``PYSPARK_PYTHON`` is set to this interpreter for local masters (and when unset), so Python
    workers import the project's packages from the same virtualenv. ``master=None`` keeps what
    ``spark-submit``/``PYSPARK_SUBMIT_ARGS`` set (``local[*]`` by default). The Spark UI is off
    (and its console progress bar) unless ``conf`` turns it on.
    """
    if master is None or master.startswith("local") or "PYSPARK_PYTHON" not in os.environ:
        os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master is not None:
        builder = builder.master(master)
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    return configure_session(spark)


# --------------------------------------------------------------------------------------------
# canonical input
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkCRM:
    """Canonical CRM tables as Spark DataFrames (see :func:`canonical_crm`)."""

    events: DataFrame
    customers: DataFrame | None = None
    subscriptions: DataFrame | None = None


@dataclass(frozen=True)
class CrmSummary:
    """What one pass over the events found: size and the end of the observed data."""

    n_events: int
    last_event: pd.Timestamp
    n_events_before: int | None = None  # events strictly before the ``before`` of the check

    @property
    def data_end(self) -> pd.Timestamp:
        """The day after the last event (as ``pipelines.data.LoadedData.data_end``)."""
        return (self.last_event + pd.Timedelta(days=1)).normalize()


def _time_ns(frame: DataFrame, name: str, table: str) -> Column:
    """A time column as int64 nanoseconds since the epoch (naive UTC)."""
    dtype = frame.schema[name].dataType
    column = F.col(name)
    if isinstance(dtype, T.LongType):
        return column  # pandas' nanosecond Parquet timestamps, read with nanosAsLong
    if isinstance(dtype, T.TimestampType):
        return F.unix_micros(column) * _NS_PER_MICROSECOND
    if isinstance(dtype, (T.TimestampNTZType, T.DateType)):
        # wall time read as UTC: the session zone is UTC (configure_session)
        return F.unix_micros(column.cast(T.TimestampType())) * _NS_PER_MICROSECOND
    raise DataContractError(
        f"{table}.{name} is {dtype.simpleString()}; the Spark engine reads canonical tables with "
        "timestamp, date or int64-nanosecond times (parse and validate raw exports first, e.g. "
        "with `churn validate`)"
    )


def _canonical_table(
    frame: DataFrame, table: str, required: Sequence[str], known: Sequence[str]
) -> DataFrame:
    """The ``known`` columns the frame has, in that order, with their canonical types."""
    _require(frame, table, required)
    columns = []
    for name in known:
        if name not in frame.columns:
            continue
        if name in TIMESTAMP_COLUMNS[table]:
            kind = "time"
        elif name in _NUMBER_COLUMNS:
            kind = "number"
        else:
            kind = "text"
        columns.append(_typed(frame, name, table, kind))
    return frame.select(*columns)


def _require(frame: DataFrame, table: str, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataContractError(
            f"{table} table lacks required column(s) {missing}; it has {frame.columns}"
        )


def _typed(frame: DataFrame, name: str, table: str, kind: str) -> Column:
    if kind == "time":
        return _time_ns(frame, name, table).cast(T.LongType()).alias(name)
    if kind == "number":
        return F.col(name).cast(T.DoubleType()).alias(name)
    return F.col(name).cast(T.StringType()).alias(name)


def _parquet_nanosecond_columns(frame: DataFrame) -> set[str]:
    """Columns stored as nanosecond timestamps in the Parquet footer of the frame's first input
    file (local files only; empty when the frame has no readable Parquet input)."""
    try:
        files = frame.inputFiles()
    except Exception:  # not a file-based plan (or Spark Connect)
        return set()
    if not files:
        return set()
    parsed = urlparse(files[0])
    if parsed.scheme not in ("", "file"):
        return set()
    try:
        schema = pq.read_schema(url2pathname(parsed.path))
    except (OSError, pa.ArrowException):
        return set()
    return {f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}


def mark_nanosecond_times(frame: DataFrame) -> DataFrame:
    """The frame with its int64 columns that are pandas' nanosecond Parquet timestamps marked
    (field metadata ``NANOSECOND_TIME_KEY``), so they stay times after column renames.

    Spark 4 reads nanosecond timestamps as plain int64 (``nanosAsLong``); the known time
    columns of the contract are read as times anyway, but a customer attribute such as
    ``contract_signed`` could not be told from a number without its file's footer. Reads one
    footer (local files only: on other file systems write such columns as Spark timestamps or
    dates, or they are numbers).
    """
    nanos = _parquet_nanosecond_columns(frame)
    marked = [
        f.name
        for f in frame.schema.fields
        if f.name in nanos
        and isinstance(f.dataType, T.LongType)
        and not f.metadata.get(NANOSECOND_TIME_KEY)
    ]
    if not marked:
        return frame
    return frame.select(
        *[
            F.col(name).alias(name, metadata={NANOSECOND_TIME_KEY: True})
            if name in marked
            else F.col(name)
            for name in frame.columns
        ]
    )


def _attribute_kind(field: T.StructField) -> str:
    """How a customers-table attribute travels: ``time`` (int64 ns), ``number`` (double) or
    ``text`` (string), so that phase 1 reads it as it reads the local table's column."""
    dtype = field.dataType
    if isinstance(dtype, (T.DateType, T.TimestampType, T.TimestampNTZType)):
        return "time"
    if isinstance(dtype, T.LongType) and field.metadata.get(NANOSECOND_TIME_KEY):
        return "time"
    if isinstance(dtype, (T.NumericType, T.BooleanType)):
        return "number"
    return "text"


def _canonical_customers(frame: DataFrame) -> DataFrame:
    """Every column of the customers table, in its order: the contract's known columns as
    before (``signup_date`` a time, the rest strings), every other column (an attribute) by its
    type: numbers and flags as double, dates and timestamps as int64 nanoseconds, the rest as
    strings."""
    _require(frame, "customers", ("customer_id",))
    frame = mark_nanosecond_times(frame)
    columns = []
    for spark_field in frame.schema.fields:
        name = spark_field.name
        if name == "signup_date":
            kind = "time"
        elif name in CUSTOMERS_KNOWN:
            kind = "text"
        else:
            kind = _attribute_kind(spark_field)
        columns.append(_typed(frame, name, "customers", kind))
    return frame.select(*columns)


def canonical_crm(
    events: DataFrame, customers: DataFrame | None = None, subscriptions: DataFrame | None = None
) -> SparkCRM:
    """The columns the engine uses, with canonical types: ids, categories and text as strings,
    money and other numbers as double, times as int64 nanoseconds. Missing required columns
    are an error.

    Events keep the contract's columns (``quantity`` too, shuffled only when the vocabulary
    counts it). Customers keep every column: the contract's and the attributes
    (``features.attributes`` picks among them later). Subscriptions keep
    ``SUBSCRIPTIONS_KNOWN`` (the scheduled term and seats too: ``term_end`` a time, the others
    numbers), after the contract's aliases (``cancelled_at``, ``renewal_date``, ``units``...).
    """
    configure_session(events.sparkSession)
    if subscriptions is not None:
        subscriptions = subscriptions.toDF(
            *apply_aliases(list(subscriptions.columns), SUBSCRIPTIONS_ALIASES)
        )
    return SparkCRM(
        events=_canonical_table(events, "events", EVENTS_REQUIRED, _EVENT_COLUMNS_KEPT),
        customers=None if customers is None else _canonical_customers(customers),
        subscriptions=None
        if subscriptions is None
        else _canonical_table(
            subscriptions, "subscriptions", SUBSCRIPTIONS_REQUIRED, SUBSCRIPTIONS_KNOWN
        ),
    )


def _null_counts(frame: DataFrame, columns: Sequence[str], extra: Sequence[Column] = ()) -> dict:
    aggregates = [F.count(F.lit(1)).alias("_rows")]
    aggregates += [F.count_if(F.col(c).isNull()).alias(c) for c in columns]
    return frame.agg(*aggregates, *extra).first().asDict()


def check_crm(
    crm: SparkCRM, *, unknown_customers: str = "keep", before: object | None = None
) -> CrmSummary:
    """Refuse rows phase 1 cannot read, with counts; return the events' size and last time.

    Null ids, timestamps or event types (and null required subscription fields) raise
    ``DataContractError`` naming every count: the engine never drops a row silently. With
    ``unknown_customers="quarantine"`` and a customers table, events of customers absent from it
    are refused too (the local pipeline would quarantine them, so the results would differ).
    ``before`` (a cutoff) also counts the events strictly before it, in the same pass.
    """
    problems: list[str] = []
    extra = [F.max("timestamp").alias("_last_ns")]
    if before is not None:
        before_ns = int(as_cutoff(before).value)
        extra.append(F.count_if(F.col("timestamp") < F.lit(before_ns)).alias("_before"))
    found = _null_counts(crm.events, EVENTS_REQUIRED, extra)
    problems += [f"{found[c]:,} events without {c}" for c in EVENTS_REQUIRED if found[c]]
    if crm.customers is not None:
        counts = _null_counts(crm.customers, ("customer_id",))
        if counts["customer_id"]:
            problems.append(f"{counts['customer_id']:,} customers without customer_id")
    if crm.subscriptions is not None:
        counts = _null_counts(crm.subscriptions, SUBSCRIPTIONS_REQUIRED)
        problems += [
            f"{counts[c]:,} subscriptions without {c}" for c in SUBSCRIPTIONS_REQUIRED if counts[c]
        ]
    if unknown_customers == "quarantine" and crm.customers is not None:
        unknown = (
            crm.events.select("customer_id")
            .distinct()
            .join(crm.customers.select("customer_id"), "customer_id", "left_anti")
        )
        n_unknown = unknown.count()
        if n_unknown:
            problems.append(
                f"events of {n_unknown:,} customer ids absent from the customers table "
                "(data.unknown_customers = 'quarantine')"
            )
    if problems:
        raise DataContractError(
            "the Spark engine reads canonical, validated tables and drops nothing silently; "
            "found " + "; ".join(problems) + ". Validate or fix these rows upstream."
        )
    if found["_rows"] == 0:
        raise DataContractError("the events table is empty")
    return CrmSummary(
        n_events=int(found["_rows"]),
        last_event=pd.Timestamp(int(found["_last_ns"]), unit="ns"),
        n_events_before=None if before is None else int(found["_before"]),
    )


def default_bucket_count(n_events: int, parallelism: int) -> int:
    """Buckets so that each holds about ``EVENTS_PER_BUCKET`` events, at least 2 per core."""
    return max(2 * parallelism, math.ceil(n_events / EVENTS_PER_BUCKET))


# --------------------------------------------------------------------------------------------
# pandas <-> Spark
# --------------------------------------------------------------------------------------------


def _spark_type(dtype: Any, name: str) -> T.DataType:
    if pd.api.types.is_bool_dtype(dtype):
        return T.BooleanType()
    if pd.api.types.is_integer_dtype(dtype):
        return T.LongType()
    if pd.api.types.is_float_dtype(dtype):
        return T.DoubleType()
    if pd.api.types.is_datetime64_dtype(dtype):
        return T.TimestampNTZType()
    if (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ):
        return T.StringType()
    raise TypeError(f"column {name!r} has dtype {dtype} with no Spark equivalent here")


def spark_schema_of(frame: pd.DataFrame) -> T.StructType:
    """The Spark schema of a pandas frame's columns (all nullable: NaN travels as null)."""
    return T.StructType(
        [T.StructField(str(n), _spark_type(frame[n].dtype, str(n)), True) for n in frame.columns]
    )


def _as_datetime(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype=np.int64).view("datetime64[ns]")


def _events_frame(pdf: pd.DataFrame) -> pd.DataFrame:
    columns = {name: pdf[name] for name in _EVENT_COLUMNS_KEPT if name in pdf.columns}
    columns["timestamp"] = _as_datetime(pdf["timestamp"])
    return pd.DataFrame(columns).reset_index(drop=True)


def _side_tables(
    side: pd.DataFrame | None,
    customer_columns: Sequence[str] | None,
    subscription_columns: Sequence[str] | None,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Split the tagged side table of a bucket back into customers and subscriptions.

    Times arrive as int64 nanoseconds (the only int64 columns of the canonical customers and
    subscriptions tables: numbers are double) and become naive datetime64[ns].
    """
    if side is None:
        return None, None
    tables: list[pd.DataFrame | None] = []
    for origin, prefix, names in (
        ("customers", _CUSTOMER_PREFIX, customer_columns),
        ("subscriptions", _SUBSCRIPTION_PREFIX, subscription_columns),
    ):
        if names is None:  # that table was not given
            tables.append(None)
            continue
        rows = side[side[_ORIGIN] == origin]
        # a Categorical stays one (unused categories are ids without rows: phase 1 skips them)
        frame = {"customer_id": rows["customer_id"]}
        for name in names:
            values = rows[prefix + name]
            is_time = pd.api.types.is_integer_dtype(values.dtype)
            frame[name] = _as_datetime(values) if is_time else values
        tables.append(pd.DataFrame(frame).reset_index(drop=True))
    return tables[0], tables[1]


def _side_table(
    crm: SparkCRM, attributes: Sequence[str] = ()
) -> tuple[DataFrame | None, list[str] | None, list[str] | None]:
    """Customers and subscriptions as one table tagged by origin, columns prefixed by table.

    Customers carry the contract's known columns and the given ``attributes``; subscriptions
    every canonical column they have (the term and seat columns too). Times are int64
    nanoseconds with NaT as ``int64 min`` (a nullable int64 would reach pandas as float64 and
    lose nanoseconds), so every time column is non-null.
    """
    parts: list[tuple[str, str, DataFrame, list[str]]] = []
    if crm.customers is not None:
        keep = {*CUSTOMERS_KNOWN, *attributes} - {"customer_id"}
        names = [c for c in crm.customers.columns if c in keep]
        parts.append(("customers", _CUSTOMER_PREFIX, crm.customers, names))
    if crm.subscriptions is not None:
        names = [c for c in crm.subscriptions.columns if c != "customer_id"]
        parts.append(("subscriptions", _SUBSCRIPTION_PREFIX, crm.subscriptions, names))
    if not parts:
        return None, None, None
    fields: list[tuple[str, str, T.DataType]] = []  # (origin, column, type)
    for origin, _, frame, names in parts:
        fields += [(origin, n, frame.schema[n].dataType) for n in names]
    selected = []
    for origin, _, frame, _ in parts:
        columns = [F.col("customer_id"), F.lit(origin).alias(_ORIGIN)]
        for field_origin, name, dtype in fields:
            target = _CUSTOMER_PREFIX if field_origin == "customers" else _SUBSCRIPTION_PREFIX
            is_time = isinstance(dtype, T.LongType)  # canonical tables: times are the int64s
            if field_origin == origin:
                value = F.coalesce(F.col(name), F.lit(_NAT_NS)) if is_time else F.col(name)
            else:
                value = F.lit(_NAT_NS) if is_time else F.lit(None)
            columns.append(value.cast(dtype).alias(target + name))
        selected.append(frame.select(*columns))
    side = selected[0] if len(selected) == 1 else selected[0].unionByName(selected[1])
    customer_names = parts[0][3] if parts[0][0] == "customers" else None
    subscription_names = parts[-1][3] if parts[-1][0] == "subscriptions" else None
    return side, customer_names, subscription_names


def _attribute_columns(customers: DataFrame | None, params: FeatureParams) -> tuple[str, ...]:
    """The customers-table attributes ``features.attributes`` admits, shipped to the buckets.

    Chosen from the schema and the config only: how an attribute is read is its type
    (:func:`_attribute_kind`), the same in every bucket, as in the local engine.
    """
    if customers is None:
        return ()
    return tuple(declared_attributes(customers.columns, params.attributes))


# --------------------------------------------------------------------------------------------
# phase 1 (+ labels) per bucket
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Phase1Spec:
    """Everything a bucket needs to compute its phase-1 rows (shipped to the workers)."""

    cutoffs: tuple[pd.Timestamp, ...]
    params: FeatureParams
    label_params: LabelParams
    customer_columns: tuple[str, ...] | None  # None: no customers table
    subscription_columns: tuple[str, ...] | None  # None: no subscriptions table
    data_end: pd.Timestamp | None = None  # labels are computed when given
    vocabulary: EventVocabulary | None = None  # fitted once on the driver, never per bucket
    attributes: tuple[str, ...] = ()  # customer attribute columns shipped (config + schema)

    def compute(self, events_pdf: pd.DataFrame, side_pdf: pd.DataFrame | None) -> pd.DataFrame:
        """The phase-1 rows (and labels) of a bucket."""
        events = _events_frame(events_pdf)
        customers, subscriptions = _side_tables(
            side_pdf, self.customer_columns, self.subscription_columns
        )
        frames = []
        for cutoff in self.cutoffs:
            features = compute_customer_features(
                events,
                cutoff,
                customers=customers,
                subscriptions=subscriptions,
                params=self.params,
                label_params=self.label_params,
                vocabulary=self.vocabulary,
            )
            columns = {"customer_id": features.index.to_numpy(dtype=object)}
            columns.update({name: features[name].to_numpy() for name in features})
            if self.data_end is not None:
                population = pd.DataFrame(
                    {"customer_id": columns["customer_id"], "is_active": features["is_active"]}
                )
                labels = build_labels(
                    events,
                    cutoff,
                    population=population.reset_index(drop=True),
                    subscriptions=subscriptions,
                    params=self.label_params,
                    data_end=self.data_end,
                )
                columns.update({name: labels[name].to_numpy() for name in labels})
            frames.append(pd.DataFrame(columns, copy=False))
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


_PANDAS_DTYPES: dict[type, str] = {
    T.StringType: "object",
    T.LongType: "int64",
    T.DoubleType: "float64",
    T.BooleanType: "bool",
    T.TimestampNTZType: "datetime64[ns]",
}


def _empty_pandas(schema: T.StructType) -> pd.DataFrame:
    """The zero-row pandas frame Arrow would hand a ``mapInPandas`` function for this schema.

    Phase 3's output schema comes from running its own code on this on the driver: it gives
    the same columns and dtypes for zero rows as for any batch (a tested property), and no
    Spark job is spent on sampling rows.
    """
    return pd.DataFrame(
        {f.name: pd.Series([], dtype=_PANDAS_DTYPES[type(f.dataType)]) for f in schema.fields}
    )


def _is_string(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _categorical_pandas(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as pandas with every string column a Categorical (other columns as
    ``to_pandas`` makes them).

    Why: ``applyInPandas`` would turn every string of a bucket into a Python ``str``, which
    phase 1 then factorizes back into codes: 55-63 ms of phase 1 on a 173k-event bucket against
    17 ms with Categoricals (the encoding itself ~12 ms). Arrow dictionary-encodes its string
    buffers without Python objects, and the categories are the values present in
    first-appearance order, as phase 1's own factorization of strings finds them, so the rows
    do not change.
    """
    columns = [
        column.combine_chunks().dictionary_encode() if _is_string(column.type) else column
        for column in table.columns
    ]
    return pa.Table.from_arrays(columns, names=table.column_names).to_pandas()


def _phase1_frame(
    crm: SparkCRM, spec: _Phase1Spec, n_buckets: int, *, events_before: pd.Timestamp | None
) -> tuple[DataFrame, pd.DataFrame]:
    """Phase-1 rows (and labels) of every customer, computed per hash bucket of customer ids;
    also the zero-row pandas frame of its schema (the input of phase 3's schema).

    Buckets travel as Arrow tables (``applyInArrow``) and reach phase 1 with Categorical
    strings (:func:`_categorical_pandas`); the rows go back as Arrow in the declared schema.
    """
    events = crm.events
    if events_before is not None:
        # Phase 1 ignores later events anyway; dropping them before the shuffle saves its cost.
        events = events.where(F.col("timestamp") < F.lit(int(events_before.value)))
    counted = spec.vocabulary is not None and spec.vocabulary.count_weight == "quantity"
    used = (*EVENT_COLUMNS_USED, "quantity") if counted else EVENT_COLUMNS_USED
    events = events.select(*[c for c in used if c in events.columns])
    side, customer_columns, subscription_columns = _side_table(crm, spec.attributes)
    spec = replace(
        spec,
        customer_columns=None if customer_columns is None else tuple(customer_columns),
        subscription_columns=None if subscription_columns is None else tuple(subscription_columns),
    )

    def empty(frame: DataFrame) -> pd.DataFrame:
        return _categorical_pandas(to_arrow_schema(frame.schema).empty_table())

    # The output schema: the same function on zero rows, on the driver.
    sample = spec.compute(empty(events), None if side is None else empty(side))
    schema = spark_schema_of(sample)
    names = list(sample.columns)
    large = events.sparkSession.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false")
    arrow_schema = to_arrow_schema(schema, prefers_large_types=large == "true")

    def rows_of(events_table: pa.Table, side_table: pa.Table | None) -> pa.Table:
        side_pdf = None if side_table is None else _categorical_pandas(side_table)
        rows = spec.compute(_categorical_pandas(events_table), side_pdf)[names]
        # safe=False: nanosecond times to Spark's microseconds as applyInPandas would
        return pa.Table.from_pandas(rows, schema=arrow_schema, preserve_index=False, safe=False)

    bucket = F.pmod(F.xxhash64("customer_id"), F.lit(n_buckets)).alias(_BUCKET)
    events = events.select(bucket, *events.columns)
    # phase 3 reads the phase-1 table with mapInPandas: plain strings
    phase3_input = _empty_pandas(schema)

    def events_only(events_table: pa.Table) -> pa.Table:
        return rows_of(events_table, None)

    if side is None:
        frame = events.groupBy(_BUCKET).applyInArrow(events_only, schema=schema)
        return frame, phase3_input

    side = side.select(bucket, *side.columns)
    frame = (
        events.groupBy(_BUCKET).cogroup(side.groupBy(_BUCKET)).applyInArrow(rows_of, schema=schema)
    )
    return frame, phase3_input


# --------------------------------------------------------------------------------------------
# phase 2 on the driver, phase 3 per partition
# --------------------------------------------------------------------------------------------


def _stats_sample_condition(max_customers: int, n_customers: int, seed: int) -> Column | None:
    if n_customers <= max_customers:
        return None
    modulus = 1_000_000
    keep = math.floor(modulus * max_customers / n_customers)
    return F.pmod(F.xxhash64(F.col("customer_id"), F.lit(seed)), F.lit(modulus)) < keep


def fit_global_stats_spark(
    phase1: DataFrame,
    cutoffs: Sequence[pd.Timestamp],
    params: FeatureParams,
    *,
    max_stats_customers: int | None = None,
) -> dict[str, GlobalStats]:
    """Phase 2 for each cutoff on the driver, from the phase-1 columns it needs.

    One Arrow collect of ``customer_id`` and ``GLOBAL_STATS_COLUMNS``, sorted on the driver by
    (cutoff, customer_id), the row order of the local phase-1 table, so the seeded CLV fit
    sample is the same. Driver memory: ~72 bytes per customer for the numbers plus the id
    strings (~14 bytes for 10-character ids), twice during the sort. With
    ``max_stats_customers``, each cutoff above that size is represented by a deterministic hash
    sample of about that many customers (one extra pass to count them).
    """
    selected = phase1.select("cutoff", "customer_id", *GLOBAL_STATS_COLUMNS)
    if max_stats_customers is not None:
        sizes = {
            stats_key(row["cutoff"]): int(row["count"])
            for row in selected.groupBy("cutoff").count().collect()
        }
        conditions = []
        for cutoff in cutoffs:
            n = sizes.get(stats_key(cutoff), 0)
            condition = _stats_sample_condition(max_stats_customers, n, params.seed)
            at_cutoff = F.col("cutoff") == F.lit(cutoff.to_pydatetime()).cast(T.TimestampNTZType())
            conditions.append(at_cutoff if condition is None else at_cutoff & condition)
        keep = conditions[0]
        for condition in conditions[1:]:
            keep = keep | condition
        selected = selected.where(keep)
    # Arrow keeps the ids as compact buffers, and its string order (bytes) is the local
    # engine's row order: no distributed sort (whose sampling pass would recompute phase 1).
    collected = selected.toArrow()
    order = pc.sort_indices(
        collected, sort_keys=[("cutoff", "ascending"), ("customer_id", "ascending")]
    )
    collected = collected.select(["cutoff", *GLOBAL_STATS_COLUMNS]).take(order)
    stamps = collected.column("cutoff").cast(pa.timestamp("ns")).to_numpy().astype("datetime64[ns]")
    stats: dict[str, GlobalStats] = {}
    for cutoff in cutoffs:
        rows = np.flatnonzero(stamps == cutoff.to_datetime64())
        if rows.size == 0:
            raise DataContractError(
                f"no customer has history before the cutoff {cutoff.date()}: nothing to fit "
                "segment cut points and CLV models on"
            )
        frame = pd.DataFrame(
            {
                name: collected.column(name).to_numpy().astype(np.float64)[rows]
                for name in GLOBAL_STATS_COLUMNS
            }
        )
        frame["cutoff"] = cutoff
        stats[stats_key(cutoff)] = fit_global_stats(frame, params)
    return stats


def fit_vocabulary_spark(
    events: DataFrame, before: pd.Timestamp, params: FeatureParams
) -> EventVocabulary | None:
    """``features.vocabulary.fit_vocabulary`` on Spark: one small aggregate per event type,
    collected to the driver, then the same selection as the local engine."""
    if not params.vocabulary.enabled:
        return None
    earlier = events.where(F.col("timestamp") < F.lit(int(as_cutoff(before).value)))
    priced = (
        F.count_if(F.col("amount").isNotNull())
        if "amount" in events.columns
        else F.lit(0).cast(T.LongType())
    )
    rows = (
        earlier.groupBy("event_type")
        .agg(
            F.count(F.lit(1)).alias("events"),
            F.countDistinct("customer_id").alias("customers"),
            priced.alias("priced"),
        )
        .collect()
    )
    statistics = pd.DataFrame(
        [(r["event_type"], r["events"], r["customers"], r["priced"]) for r in rows],
        columns=["event_type", "events", "customers", "priced"],
    ).set_index("event_type")
    return select_vocabulary(statistics.astype(np.int64).sort_index(), params.vocabulary)


def _with_vocabulary(stats: GlobalStats, vocabulary: EventVocabulary | None) -> GlobalStats:
    return stats if vocabulary is None else replace(stats, vocabulary=vocabulary.to_dict())


def _broadcast(spark: SparkSession, payload: dict[str, Any]) -> Any:
    """A broadcast variable of the payload, or the payload itself under Spark Connect."""
    try:
        return spark.sparkContext.broadcast(payload)
    except Exception:  # Spark Connect has no SparkContext: ship it with the closure
        return None


def _apply_stats_batch(
    pdf: pd.DataFrame,
    stats: dict[str, GlobalStats],
    params: FeatureParams,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Phase 3 on one batch of phase-1 rows (any mix of cutoffs), label columns carried over.

    Output: ``customer_id``, the phase-3 columns, then the label columns (as
    ``features.snapshots.build_snapshots``), in the order ``names`` when given.
    """
    label_columns = [c for c in _LABEL_OUTPUT_COLUMNS if c in pdf.columns]
    stamps = pd.to_datetime(pdf["cutoff"]).to_numpy(dtype="datetime64[ns]")
    outputs = []
    # zero rows still go through phase 3 once (with any statistics): the schema comes from it
    groups = [(stats_key(pd.Timestamp(s)), stamps == s) for s in np.unique(stamps)]
    for key, at in groups or [(next(iter(stats)), np.zeros(0, dtype=bool))]:
        rows = pdf[at]
        features = rows.drop(columns=["customer_id", *label_columns])
        features.index = pd.Index(rows["customer_id"].to_numpy(dtype=object), name="customer_id")
        features["cutoff"] = stamps[at]
        applied = apply_global_stats(features, stats[key], params)
        columns = {"customer_id": applied.index.to_numpy(dtype=object)}
        columns.update({name: applied[name].to_numpy() for name in applied})
        columns.update({name: rows[name].to_numpy() for name in label_columns})
        outputs.append(pd.DataFrame(columns, copy=False))
    out = outputs[0] if len(outputs) == 1 else pd.concat(outputs, ignore_index=True)
    return out if names is None else out[list(names)]


def _phase3_frame(
    phase1: DataFrame,
    phase1_sample: pd.DataFrame,
    stats: dict[str, GlobalStats],
    params: FeatureParams,
) -> DataFrame:
    spark = phase1.sparkSession
    payload = {key: value.to_dict() for key, value in stats.items()}
    shared = _broadcast(spark, payload)
    sample = _apply_stats_batch(phase1_sample, stats, params)
    names = list(sample.columns)
    schema = spark_schema_of(sample)

    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        values = shared.value if shared is not None else payload
        resolved = {key: GlobalStats.from_dict(value) for key, value in values.items()}
        for pdf in batches:
            if len(pdf):
                yield _apply_stats_batch(pdf, resolved, params, names)

    return phase1.mapInPandas(apply, schema=schema)


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


@dataclass
class SparkFeatures:
    """A lazily computed feature (or snapshot) table and the statistics applied to it.

    ``frame`` reads the cached phase-1 table: write or collect it, then :meth:`release` the
    cache (or use the object as a context manager).
    """

    frame: DataFrame
    stats: dict[str, GlobalStats]
    n_buckets: int
    cached: list[DataFrame] = field(default_factory=list)

    def release(self) -> None:
        for frame in self.cached:
            frame.unpersist()
        self.cached.clear()

    def __enter__(self) -> SparkFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _resolve_buckets(crm: SparkCRM, n_buckets: int | None, n_events: int | None) -> int:
    if n_buckets is not None:
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
        return n_buckets
    if n_events is None:
        n_events = crm.events.count()
    parallelism = crm.events.sparkSession.sparkContext.defaultParallelism
    return default_bucket_count(n_events, parallelism)


def build_snapshots_spark(
    crm: SparkCRM,
    cutoffs: Iterable[object],
    *,
    feature_params: FeatureParams,
    label_params: LabelParams,
    data_end: object | None = None,
    stats_cutoff: object | None = None,
    n_buckets: int | None = None,
    max_stats_customers: int | None = None,
    n_events: int | None = None,
) -> SparkFeatures:
    """``features.snapshots.build_snapshots`` on Spark: features and labels over ``cutoffs``.

    Same columns and values (within float tolerance) as the local engine; the row order is not
    defined (sort by ``cutoff, customer_id`` when it matters). ``data_end`` defaults to the
    latest event timestamp, as locally. ``n_buckets`` defaults to
    :func:`default_bucket_count`; ``n_events`` (e.g. from :func:`check_crm`) saves a count.
    """
    resolved = sorted({as_cutoff(c) for c in cutoffs})
    if not resolved:
        raise ValueError("build_snapshots_spark needs at least one cutoff")
    if data_end is None:
        last = crm.events.agg(F.max("timestamp")).first()[0]
        if last is None:
            raise ValueError("data_end is unknown: no events and no data_end given")
        data_end = pd.Timestamp(int(last), unit="ns")
    buckets = _resolve_buckets(crm, n_buckets, n_events)
    vocabulary = fit_vocabulary_spark(crm.events, resolved[0], feature_params)
    attributes = _attribute_columns(crm.customers, feature_params)
    spec = _Phase1Spec(
        cutoffs=tuple(resolved),
        params=feature_params,
        label_params=label_params,
        customer_columns=None,
        subscription_columns=None,
        data_end=pd.Timestamp(data_end),
        vocabulary=vocabulary,
        attributes=attributes,
    )
    cached: list[DataFrame] = []
    shared: dict[str, GlobalStats] | None = None
    if stats_cutoff is not None:
        stats_at = as_cutoff(stats_cutoff)
        if stats_at > resolved[0]:
            raise ValueError(
                f"stats_cutoff {stats_at.date()} is after the earliest cutoff "
                f"{resolved[0].date()}: its statistics would leak later data into that snapshot"
            )
        stats_spec = _Phase1Spec(
            cutoffs=(stats_at,),
            params=feature_params,
            label_params=label_params,
            customer_columns=None,
            subscription_columns=None,
            vocabulary=vocabulary,
            attributes=attributes,
        )
        stats_phase1, _ = _phase1_frame(crm, stats_spec, buckets, events_before=stats_at)
        if max_stats_customers is not None:  # two passes over it: count, then collect
            stats_phase1 = stats_phase1.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            fitted = fit_global_stats_spark(
                stats_phase1, [stats_at], feature_params, max_stats_customers=max_stats_customers
            )
        finally:
            stats_phase1.unpersist()
        shared = {
            stats_key(c): _with_vocabulary(fitted[stats_key(stats_at)], vocabulary)
            for c in resolved
        }
    phase1, sample = _phase1_frame(crm, spec, buckets, events_before=None)
    phase1 = phase1.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(phase1)
    try:
        stats = shared or {
            key: _with_vocabulary(value, vocabulary)
            for key, value in fit_global_stats_spark(
                phase1, resolved, feature_params, max_stats_customers=max_stats_customers
            ).items()
        }
        frame = _phase3_frame(phase1, sample, stats, feature_params)
    except BaseException:
        phase1.unpersist()
        raise
    return SparkFeatures(frame=frame, stats=stats, n_buckets=buckets, cached=cached)


def build_features_spark(
    crm: SparkCRM,
    cutoff: object,
    *,
    params: FeatureParams,
    stats: GlobalStats | None = None,
    label_params: LabelParams | None = None,
    n_buckets: int | None = None,
    max_stats_customers: int | None = None,
    n_events: int | None = None,
) -> SparkFeatures:
    """``features.snapshots.build_features`` on Spark: phases 1-3 at one cutoff.

    The frame has ``customer_id`` as its first column (the local table's index) followed by the
    local table's columns in the same order. ``stats`` given: phase 2 is skipped and they are
    applied (e.g. the statistics of a training run). Events at or after the cutoff are filtered
    out before the shuffle.
    """
    at = as_cutoff(cutoff)
    label_params = LabelParams() if label_params is None else label_params
    buckets = _resolve_buckets(crm, n_buckets, n_events)
    vocabulary = (
        stats.event_vocabulary()
        if stats is not None
        else fit_vocabulary_spark(crm.events, at, params)
    )
    spec = _Phase1Spec(
        cutoffs=(at,),
        params=params,
        label_params=label_params,
        customer_columns=None,
        subscription_columns=None,
        vocabulary=vocabulary,
        attributes=_attribute_columns(crm.customers, params),
    )
    phase1, sample = _phase1_frame(crm, spec, buckets, events_before=at)
    phase1 = phase1.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if stats is None:
            fitted = {
                key: _with_vocabulary(value, vocabulary)
                for key, value in fit_global_stats_spark(
                    phase1, [at], params, max_stats_customers=max_stats_customers
                ).items()
            }
        else:
            fitted = {stats_key(at): stats}
        frame = _phase3_frame(phase1, sample, fitted, params)
    except BaseException:
        phase1.unpersist()
        raise
    return SparkFeatures(frame=frame, stats=fitted, n_buckets=buckets, cached=[phase1])
