"""Flows for ``--engine spark``: features, snapshots and batch scoring on PySpark.

The same summaries as ``pipelines.data`` / ``pipelines.scoring`` and the same tables (columns,
values within float tolerance), computed by ``features.spark`` instead of pandas on one machine.

**Input.** Each configured source is read by Spark: a Parquet file or directory (``path``), or a
table of the Spark catalog / a Spark SQL query (``url: spark`` with ``table`` or ``query``). Column
mappings and event-type mappings of the source are applied in Spark. The Spark engine reads
canonical, validated data: it does not parse free-form timestamps or quarantine rows (run
``churn validate`` on the export and fix it upstream); rows it cannot use are refused with counts
(``features.spark.check_crm``), never dropped.

**Output.** Parquet datasets (a directory of part files, readable by ``pandas.read_parquet``,
Spark, DuckDB). A local target is written next to itself and swapped in by renames, so a reader
sees the old or the new dataset; other file systems (``s3a://``, ``hdfs://``) are written in
place by Spark's commit protocol.

**Session.** ``spark_for_flows`` uses the active SparkSession or starts one: master from
``CHURN_SPARK_MASTER`` (else spark-submit's, else ``local[*]``), with the settings
``features.spark.configure_session`` needs.

**Distributed scoring** (:func:`run_score_spark`) keeps ``pipelines.scoring.run_score``'s risk
list exactly; what is global is computed globally:

1. features at ``as_of`` with ``features.spark.build_features_spark`` (global statistics refitted
   on the whole base, as ``run_score`` does);
2. the champion models are loaded once on the driver (``serving.scoring.load_champions``), their
   MLflow model directories shipped to the executors with ``SparkContext.addFile`` and loaded
   once per Python worker (the ``mlflow.pyfunc.spark_udf`` mechanism, but around the whole
   ``serving.scoring.score_customers`` so decisions, reasons and cross-sell are the service's);
3. pass 1, per bucket of customers: churn probabilities and expected values at risk. Without a
   stored reference (``band_source`` ``scored_population``), the active customers' churn
   probabilities are collected on the driver (8 bytes each), the risk bands fitted on all of
   them (``serving.decisions.risk_bands_for_call``) and the sorted scores broadcast for the
   percentiles (``serving.decisions.percentile_among``). The rows to explain
   (``serving.batch_reason_rows``, largest value at risk in the high and medium bands) are
   chosen globally with a top-N query, and counted per bucket;
4. pass 2, per bucket: ``score_customers`` with those global bands, the global category shares,
   the customers' categorised purchases (for cross-sell) and "explain the top k" where k is the
   bucket's count from step 3 -- the top k of a bucket under the same order are exactly its
   share of the global top N;
5. the risk list is ranked globally (sorted, then numbered by partition offsets) and written.

Who is scored follows ``is_active`` (``labels.churn_definition``) as in ``run_score``; when
nobody is in that population at ``as_of`` (or nobody has history before it) the run fails
before scoring with ``pipelines.scoring``'s ``NobodyToScoreError`` and message (``churn score``
exits 2) and writes nothing.

**Snapshots** (:func:`run_snapshots_spark`) are the training table of
``pipelines.data.build_training_table``: labels on the training window
(``labels.training_horizon_days``), both horizons in the dataset's pandas ``attrs["labels"]``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from features.config import SourceConfig
from features.lifecycle import as_cutoff
from pipelines.config import ProjectConfig
from pipelines.io import write_json

__all__ = [
    "SPARK_TABLE_URL",
    "category_shares_spark",
    "load_spark_crm",
    "rank_risk_list",
    "read_spark_source",
    "run_features_spark",
    "run_score_spark",
    "run_snapshots_spark",
    "score_features_spark",
    "spark_for_flows",
    "write_parquet_dataset",
]

#: ``url`` of a source that is a table of the Spark catalog (``table``) or a Spark SQL query.
SPARK_TABLE_URL = "spark"
_PARQUET_SUFFIXES = (".parquet", ".pq")
_BUCKET = "_bucket"


# --------------------------------------------------------------------------------------------
# session, input, output
# --------------------------------------------------------------------------------------------


def spark_for_flows(master: str | None = None) -> Any:
    """The active SparkSession (configured for the engine) or a new one.

    ``master`` defaults to ``CHURN_SPARK_MASTER``; unset, spark-submit's master or ``local[*]``.
    """
    from pyspark.sql import SparkSession

    from features.spark import configure_session, spark_session

    active = SparkSession.getActiveSession()
    if active is not None:
        return configure_session(active)
    return spark_session(master or os.environ.get("CHURN_SPARK_MASTER") or None)


def read_spark_source(spark: Any, source: SourceConfig, table: str) -> Any:
    """One configured table as a Spark DataFrame with canonical column and event names."""
    from pyspark.sql import functions as F

    if source.url is not None:
        if source.url != SPARK_TABLE_URL:
            raise ValueError(
                f"{table}: the Spark engine reads Parquet or Spark tables (url: {SPARK_TABLE_URL}"
                f" with table or query), not {urlparse(source.url).scheme or source.url!r} "
                "sources; export the table to Parquet or register it in the Spark catalog"
            )
        frame = spark.table(source.table) if source.table else spark.sql(source.query)
    else:
        path = str(source.path)
        if not (path.endswith(_PARQUET_SUFFIXES) or Path(path).is_dir()):
            raise ValueError(
                f"{table}: the Spark engine reads Parquet (a .parquet file or a directory of "
                f"them), got {path!r}; convert it first (e.g. `churn generate` writes Parquet)"
            )
        if "://" not in path and not Path(path).exists():
            raise FileNotFoundError(f"{table} source not found: {path}")
        frame = spark.read.parquet(path)
    if table == "customers":
        from features.spark import mark_nanosecond_times

        # before the renames: the footer knows the columns by their names in the file
        frame = mark_nanosecond_times(frame)
    if source.columns:
        frame = frame.withColumnsRenamed(dict(source.columns))
    if table == "events" and source.event_type_mapping and "event_type" in frame.columns:
        mapping = F.create_map(
            *[F.lit(v) for pair in source.event_type_mapping.items() for v in pair]
        )
        frame = frame.withColumn(
            "event_type", F.coalesce(mapping[F.col("event_type")], F.col("event_type"))
        )
    if source.timezone not in ("UTC", "Etc/UTC"):
        raise ValueError(
            f"{table}: timezone {source.timezone!r}: the Spark engine reads canonical times in "
            "UTC; convert the timestamps when exporting (or use the local engine, which does)"
        )
    return frame


def load_spark_crm(cfg: ProjectConfig, spark: Any, *, before: object | None = None):
    """The configured tables as canonical Spark tables, checked: ``(SparkCRM, CrmSummary)``."""
    from features.spark import canonical_crm, check_crm

    if cfg.data.events is None:
        raise ValueError(
            "no events source configured: set data.events in the config or pass --events FILE"
        )
    tables = {
        name: read_spark_source(spark, source, name)
        for name in ("events", "customers", "subscriptions")
        if (source := getattr(cfg.data, name)) is not None
    }
    crm = canonical_crm(tables["events"], tables.get("customers"), tables.get("subscriptions"))
    summary = check_crm(crm, unknown_customers=cfg.data.unknown_customers, before=before)
    return crm, summary


def _is_local(target: str) -> bool:
    scheme = urlparse(target).scheme
    return scheme in ("", "file") or len(scheme) == 1


#: The zero-row part file that carries a dataset's pandas ``attrs`` (see
#: :func:`write_parquet_dataset`); sorts before Spark's ``part-00000-...`` files.
ATTRS_PART_FILE = "part-0-attrs.parquet"


def _write_attrs_part(directory: Path, attrs: Mapping[str, Any]) -> None:
    """A zero-row Parquet file with the dataset's schema and ``attrs`` where pandas keeps them.

    ``pandas.read_parquet`` of a directory takes the schema metadata of its first file in name
    order (``PANDAS_ATTRS``: what ``DataFrame.to_parquet`` writes), so the dataset reads back
    with ``attrs`` as the local engine's file does; Spark and other readers see no extra row.
    """
    import json

    import pyarrow.parquet as pq

    parts = sorted(p for p in directory.glob("part-*") if p.name != ATTRS_PART_FILE)
    if not parts:
        return
    schema = pq.read_schema(parts[0])
    metadata = {**(schema.metadata or {}), b"PANDAS_ATTRS": json.dumps(dict(attrs)).encode()}
    pq.write_table(
        schema.empty_table().replace_schema_metadata(metadata), directory / ATTRS_PART_FILE
    )


def write_parquet_dataset(
    frame: Any, out: Path | str, *, attrs: Mapping[str, Any] | None = None
) -> str:
    """Write a Spark DataFrame as a Parquet dataset at ``out``; a local target is replaced in
    one rename (written beside it first), so readers never see a half-written dataset.

    ``attrs`` (JSON-able) are stored as pandas stores ``DataFrame.attrs``, so
    ``pandas.read_parquet(out).attrs`` gives them back (local targets only: a remote dataset
    is written without them)."""
    target = str(out)
    if not target.endswith(_PARQUET_SUFFIXES):
        raise ValueError(
            f"the Spark engine writes Parquet: {Path(target).name!r} must end in .parquet or .pq"
        )
    if not _is_local(target):
        frame.write.mode("overwrite").parquet(target)
        return target
    path = Path(urlparse(target).path if target.startswith("file:") else target).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    frame.write.mode("overwrite").parquet(str(staging))
    if attrs:
        _write_attrs_part(staging, attrs)
    previous = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
    try:
        if path.exists():
            os.replace(path, previous)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if previous.exists() and not path.exists():
            os.replace(previous, path)
        raise
    if previous.is_dir():
        shutil.rmtree(previous, ignore_errors=True)
    elif previous.exists():
        previous.unlink()
    return str(path)


# --------------------------------------------------------------------------------------------
# features and snapshots
# --------------------------------------------------------------------------------------------


def run_features_spark(
    cfg: ProjectConfig,
    as_of: date,
    out: Path,
    *,
    spark: Any | None = None,
    n_buckets: int | None = None,
) -> dict[str, Any]:
    """``pipelines.data.run_features`` on Spark: features as of ``as_of`` to a Parquet dataset
    (with a ``customer_id`` column), statistics beside it as ``<out>.stats.json``."""
    from features.spark import build_features_spark

    spark = spark or spark_for_flows()
    cutoff = as_cutoff(pd.Timestamp(as_of))
    crm, summary = load_spark_crm(cfg, spark, before=cutoff)
    result = build_features_spark(
        crm,
        cutoff,
        params=cfg.features,
        label_params=cfg.labels,
        n_buckets=n_buckets,
        n_events=summary.n_events,
    )
    with result:
        written = write_parquet_dataset(result.frame, out)
        columns = len(result.frame.columns)  # customer_id first, as the local table
    stats = result.stats[str(cutoff.date())]
    out = Path(out)
    stats_path = write_json(stats.to_dict(), out.with_name(out.name + ".stats.json"))
    events_used = int(summary.n_events_before or 0)
    return {
        "engine": "spark",
        "as_of": str(cutoff.date()),
        "customers": spark.read.parquet(written).count(),
        "columns": columns,
        "events_used": events_used,
        "events_at_or_after_cutoff_ignored": summary.n_events - events_used,
        "out": str(out),
        "stats": str(stats_path),
        "buckets": result.n_buckets,
        "quarantine_files": [],
    }


def run_snapshots_spark(
    cfg: ProjectConfig,
    out: Path,
    *,
    spark: Any | None = None,
    n_buckets: int | None = None,
) -> dict[str, Any]:
    """``pipelines.data.run_snapshots`` on Spark: the stacked training table as Parquet, each
    cutoff's statistics beside it (``pipelines.data.snapshot_stats_path``) for training.

    As ``pipelines.data.build_training_table``: the default cutoff grid ends at the latest
    cutoff whose *training* window has matured, labels use that window
    (``LabelParams.for_training()``), and the dataset carries ``label_horizons(cfg)`` in its
    pandas ``attrs["labels"]`` (read back by ``churn train --snapshots``)."""
    from pyspark.sql import functions as F

    from features.contract import LABEL_COLUMNS
    from features.spark import build_snapshots_spark
    from pipelines.data import (
        label_horizons,
        resolve_cutoffs,
        snapshot_stats_path,
        training_label_span_days,
    )

    spark = spark or spark_for_flows()
    crm, summary = load_spark_crm(cfg, spark)
    cutoffs = resolve_cutoffs(cfg.cutoffs, summary.data_end, training_label_span_days(cfg))
    result = build_snapshots_spark(
        crm,
        cutoffs,
        feature_params=cfg.features,
        label_params=cfg.labels.for_training(),
        data_end=summary.data_end,
        n_buckets=n_buckets,
        n_events=summary.n_events,
    )
    with result:
        written = write_parquet_dataset(result.frame, out, attrs={"labels": label_horizons(cfg)})
    write_json({k: v.to_dict() for k, v in result.stats.items()}, snapshot_stats_path(out))
    table = spark.read.parquet(written)
    aggregates = []
    for label in LABEL_COLUMNS:
        aggregates += [
            F.count(label).alias(f"{label}_count"),
            F.avg(label).alias(f"{label}_mean"),
        ]
    per_cutoff = {}
    for row in table.groupBy("cutoff").agg(*aggregates).orderBy("cutoff").collect():
        values = row.asDict()
        stamp = pd.Timestamp(values.pop("cutoff"))
        per_cutoff[str(stamp.date())] = {
            k: int(v) if k.endswith("_count") else (float("nan") if v is None else round(v, 4))
            for k, v in values.items()
        }
    return {
        "engine": "spark",
        "out": str(out),
        "rows": table.count(),
        "cutoffs": [str(pd.Timestamp(c).date()) for c in cutoffs],
        "labels": per_cutoff,
        "buckets": result.n_buckets,
    }


# --------------------------------------------------------------------------------------------
# distributed scoring
# --------------------------------------------------------------------------------------------


def _purchases_before(events: Any, cutoff: pd.Timestamp) -> Any:
    """Categorised purchases before the cutoff (time as int64 ns)."""
    from pyspark.sql import functions as F

    if "category" not in events.columns:
        return None
    return events.where(
        (F.col("event_type") == F.lit("purchase"))
        & (F.col("timestamp") < F.lit(int(cutoff.value)))
        & F.col("category").isNotNull()
    )


def category_shares_spark(
    events: Any, cutoff: object, window_days: int | None = None
) -> dict[str, float]:
    """``serving.scoring.category_purchase_shares`` in Spark: the share of the customers with a
    categorised purchase in the window before ``cutoff`` who bought each category."""
    from pyspark.sql import functions as F

    from serving.scoring import CATEGORY_SHARE_WINDOW_DAYS

    cutoff = as_cutoff(cutoff)
    window_days = CATEGORY_SHARE_WINDOW_DAYS if window_days is None else window_days
    purchases = _purchases_before(events, cutoff)
    if purchases is None:
        return {}
    start = int((cutoff - pd.Timedelta(days=window_days)).value)
    pairs = (
        purchases.where(F.col("timestamp") >= F.lit(start))
        .select("customer_id", "category")
        .distinct()
    )
    buyers = pairs.select("customer_id").distinct().count()
    if buyers == 0:
        return {}
    counts = pairs.groupBy("category").count().collect()
    shares = sorted((-int(row["count"]) / buyers, str(row["category"])) for row in counts)
    return {category: -share for share, category in shares}


def _bought_pairs(events: Any, cutoff: pd.Timestamp) -> Any:
    """One purchase event per (customer, category) bought before the cutoff (the latest one):
    all ``serving.scoring.bought_categories`` and the category shares read of the history."""
    from pyspark.sql import functions as F

    purchases = _purchases_before(events, cutoff)
    if purchases is None:
        return None
    return purchases.groupBy("customer_id", "category").agg(
        F.max("timestamp").alias("timestamp"), F.lit("purchase").alias("event_type")
    )


#: Python-worker cache of loaded MLflow models: (task, version, shipped file) -> pyfunc.
_WORKER_MODELS: dict[tuple[str, str, str], Any] = {}


@dataclasses.dataclass(frozen=True)
class _ShippedModels:
    """``ScoringModels`` without the loaded pyfuncs (pickled to the workers) and the names of
    the model directories shipped with ``SparkContext.addFile``."""

    models: Any
    files: Mapping[str, str]

    def load(self) -> Any:
        """The models with their pyfuncs, loaded once per Python worker."""
        import mlflow
        from pyspark import SparkFiles

        tasks = {}
        for task, model in self.models.tasks.items():
            key = (task, model.version, self.files[task])
            if key not in _WORKER_MODELS:
                _WORKER_MODELS[key] = mlflow.pyfunc.load_model(SparkFiles.get(self.files[task]))
            tasks[task] = dataclasses.replace(model, pyfunc=_WORKER_MODELS[key])
        return dataclasses.replace(self.models, tasks=tasks)


def _ship_models(spark: Any, models: Any, workdir: Path) -> _ShippedModels:
    """Download each champion's model directory once and add it to the Spark job's files."""
    import mlflow

    files = {}
    for task, model in models.tasks.items():
        target = workdir / f"model_{task}_v{model.version}_{uuid.uuid4().hex[:8]}"
        target.mkdir(parents=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model.model_uri, dst_path=str(target)
        )
        spark.sparkContext.addFile(str(local), recursive=True)
        files[task] = Path(local).name
    stripped = {task: dataclasses.replace(m, pyfunc=None) for task, m in models.tasks.items()}
    return _ShippedModels(models=dataclasses.replace(models, tasks=stripped), files=files)


def _features_frame(pdf: pd.DataFrame) -> pd.DataFrame:
    """A bucket's feature rows in ``customer_id`` order (the local table's order), no bucket."""
    frame = pdf.drop(columns=[_BUCKET]) if _BUCKET in pdf.columns else pdf
    return frame.sort_values("customer_id", kind="stable").reset_index(drop=True)


def _history_frame(pdf: pd.DataFrame | None) -> pd.DataFrame | None:
    if pdf is None:
        return None
    return pd.DataFrame(
        {
            "customer_id": pdf["customer_id"].to_numpy(dtype=object),
            "timestamp": pdf["timestamp"].to_numpy(dtype=np.int64).view("datetime64[ns]"),
            "event_type": pdf["event_type"].to_numpy(dtype=object),
            "category": pdf["category"].to_numpy(dtype=object),
        }
    )


#: Columns of the per-bucket score rows: the risk list's, plus what the summary counts.
_EXTRA_SCORE_COLUMNS = ("is_active", "winback_probability", "reasons_computed")


def _flat_scores(scores: pd.DataFrame, models: Any) -> pd.DataFrame:
    """Every scored row flat: active rows as ``risk_list_table`` writes them (rank within the
    bucket, replaced later), lapsed rows with the same columns (no churn score, no reasons)."""
    from serving.scoring import risk_list_rows, risk_list_table

    listed = risk_list_table(scores, models)
    by_id = scores.set_index("customer_id")
    lapsed = scores.loc[~scores["customer_id"].isin(set(listed["customer_id"]))]
    n = len(lapsed)
    nothing = np.full(n, None, dtype=object)
    rest = risk_list_rows(
        lapsed,
        rank=np.zeros(n, dtype=np.int64),
        reasons=nothing,
        cross_sell=nothing,
        run_ids=models.run_ids(),
    )
    flat = pd.concat([listed, rest], ignore_index=True) if n else listed.reset_index(drop=True)
    ids = flat["customer_id"].to_numpy(dtype=object)
    flat["is_active"] = by_id["is_active"].reindex(ids).to_numpy(dtype=bool)
    flat["winback_probability"] = by_id["winback_probability"].reindex(ids).to_numpy(np.float64)
    flat["reasons_computed"] = by_id["reasons_computed"].reindex(ids).to_numpy(dtype=bool)
    return flat


def _flat_schema() -> Any:
    from pyspark.sql import types as T

    from pipelines.scoring import DB_COLUMN_TYPES
    from serving.scoring import RISK_LIST_COLUMNS

    kinds = {
        "date": T.TimestampNTZType(),
        "integer": T.LongType(),
        "text": T.StringType(),
        "float": T.DoubleType(),
        "boolean": T.BooleanType(),
    }
    fields = [T.StructField(c, kinds[DB_COLUMN_TYPES[c]], True) for c in RISK_LIST_COLUMNS]
    fields += [
        T.StructField("is_active", T.BooleanType(), True),
        T.StructField("winback_probability", T.DoubleType(), True),
        T.StructField("reasons_computed", T.BooleanType(), True),
    ]
    return T.StructType(fields)


def score_features_spark(
    features: Any,
    history: Any | None,
    models: Any,
    cfg: ProjectConfig,
    *,
    n_buckets: int,
    category_shares: Mapping[str, float],
    workdir: Path,
) -> tuple[Any, dict[str, Any]]:
    """Score a Spark feature table with ``serving.scoring.score_customers`` per bucket of
    customers, with the global decisions of the module docstring.

    ``history``: one categorised purchase per (customer, category) before the cutoff (or None).
    Returns the flat score rows of every customer (risk-list columns + ``is_active``,
    ``winback_probability``, ``reasons_computed``; ``rank`` not yet global) and facts for the
    summary (bands, band source, warnings).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from serving.decisions import RiskBands, percentile_among, risk_bands_for_call
    from serving.scoring import score_customers

    spark = features.sparkSession
    shipped = _ship_models(spark, models, workdir)
    serving = cfg.serving
    warnings = list(models.warnings)
    missing = sorted({c for m in models.tasks.values() for c in m.features} - set(features.columns))
    if missing:
        warnings.append(
            f"{len(missing)} model feature columns were not given and are scored as missing: "
            f"{missing[:20]}"
        )
    bucket = F.pmod(F.xxhash64("customer_id"), F.lit(n_buckets)).alias(_BUCKET)
    bucketed = features.select(bucket, *features.columns)

    # --- pass 1: churn probabilities and values at risk --------------------------------------
    fixed_bands = models.risk_bands
    probe_bands = fixed_bands or RiskBands(high=1.0, medium=0.5)  # unused by these columns

    def probabilities(pdf: pd.DataFrame) -> pd.DataFrame:
        frame = _features_frame(pdf)
        loaded = dataclasses.replace(shipped.load(), risk_bands=probe_bands)
        scored = score_customers(frame, loaded, cfg, explain=False, allow_missing_features=True)
        return pd.DataFrame(
            {
                _BUCKET: np.full(len(frame), int(pdf[_BUCKET].iloc[0]), dtype=np.int64),
                "customer_id": scored["customer_id"].to_numpy(dtype=object),
                "churn_probability": scored["churn_probability"].to_numpy(dtype=np.float64),
                "expected_value_at_risk": scored["expected_value_at_risk"].to_numpy(np.float64),
            }
        )

    schema = T.StructType(
        [
            T.StructField(_BUCKET, T.LongType()),
            T.StructField("customer_id", T.StringType()),
            T.StructField("churn_probability", T.DoubleType()),
            T.StructField("expected_value_at_risk", T.DoubleType()),
        ]
    )
    pass1 = bucketed.groupBy(_BUCKET).applyInPandas(probabilities, schema=schema).persist()
    try:
        scored = pass1.where(F.col("churn_probability").isNotNull())
        reference: np.ndarray | None = None
        if fixed_bands is None:
            churn = scored.select("churn_probability").toArrow().column(0).to_numpy()
            reference = np.sort(churn.astype(np.float64))
            bands, _ = risk_bands_for_call(
                reference,
                None,
                None,
                high_share=serving.high_risk_share,
                medium_share=serving.medium_risk_share,
                warnings=warnings,
                scored_together="the batch",
                advice="",
            )
        else:
            bands = fixed_bands
        explain_counts: dict[int, int] | None = None  # None: explain every scored row
        reason_rows = serving.batch_reason_rows
        if reason_rows is not None:
            explain_counts = {}
            if bands is not None and reason_rows > 0:
                top = (
                    scored.where(F.col("churn_probability") >= F.lit(bands.medium))
                    .orderBy(
                        F.col("expected_value_at_risk").desc_nulls_last(),
                        F.col("churn_probability").desc(),
                        F.col("customer_id").asc(),
                    )
                    .limit(int(reason_rows))
                )
                explain_counts = {
                    int(row[_BUCKET]): int(row["count"])
                    for row in top.groupBy(_BUCKET).count().collect()
                }
    finally:
        pass1.unpersist()

    # --- pass 2: the service's scoring with global bands, shares and explanations -------------
    shared = spark.sparkContext.broadcast(
        {"reference": reference, "explain": explain_counts, "bands": bands}
    )
    shares = dict(category_shares)
    names = [f.name for f in _flat_schema().fields]

    def score_bucket(pdf: pd.DataFrame, history_pdf: pd.DataFrame | None) -> pd.DataFrame:
        if pdf.empty:
            return pd.DataFrame({name: [] for name in names})
        frame = _features_frame(pdf)
        values = shared.value
        counts = values["explain"]
        explain: bool | int = True if counts is None else counts.get(int(pdf[_BUCKET].iloc[0]), 0)
        if explain == 0:
            explain = False
        loaded = shipped.load()
        if values["bands"] is not None and loaded.risk_bands is None:
            loaded = dataclasses.replace(loaded, risk_bands=values["bands"])
        scores = score_customers(
            frame,
            loaded,
            cfg,
            events=_history_frame(history_pdf) if history_pdf is not None else None,
            explain=explain,
            allow_missing_features=True,
            category_shares=shares,
        )
        if values["reference"] is not None:
            scores["churn_percentile"] = percentile_among(
                scores["churn_probability"].to_numpy(dtype=np.float64), values["reference"]
            )
        return _flat_scores(scores, loaded)[names]

    flat_schema = _flat_schema()
    if history is None:
        flat = bucketed.groupBy(_BUCKET).applyInPandas(
            lambda pdf: score_bucket(pdf, None), schema=flat_schema
        )
    else:
        history = history.select(
            F.pmod(F.xxhash64("customer_id"), F.lit(n_buckets)).alias(_BUCKET),
            "customer_id",
            "timestamp",
            "event_type",
            "category",
        )
        flat = (
            bucketed.groupBy(_BUCKET)
            .cogroup(history.groupBy(_BUCKET))
            .applyInPandas(score_bucket, schema=flat_schema)
        )
    facts = {
        "risk_bands": None if bands is None else bands.model_dump(),
        "band_source": models.band_source if fixed_bands is not None else "scored_population",
        "warnings": list(dict.fromkeys(warnings)),
        "broadcast": shared,  # destroy() it when the flat rows have been written
    }
    return flat, facts


def rank_risk_list(flat: Any) -> tuple[Any, Any, int]:
    """The risk list from flat score rows: active scored customers ranked by expected value at
    risk (unknown last), then churn probability, then id, numbered 1..n across partitions.

    Returns the ranked frame (its partitions in rank order), the cached sorted frame it reads
    (``unpersist`` it when done) and the number of rows."""
    from pyspark import StorageLevel, TaskContext
    from pyspark.sql import functions as F

    from serving.scoring import RISK_LIST_COLUMNS

    listed = flat.where(F.col("is_active") & F.col("churn_probability").isNotNull())
    ordered = (
        listed.orderBy(
            F.col("expected_value_at_risk").desc_nulls_last(),
            F.col("churn_probability").desc(),
            F.col("customer_id").asc(),
        )
        .select(*RISK_LIST_COLUMNS)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    sizes = {
        int(row["p"]): int(row["count"])
        for row in ordered.groupBy(F.spark_partition_id().alias("p")).count().collect()
    }
    offsets, running = {}, 0
    for partition in sorted(sizes):
        offsets[partition] = running
        running += sizes[partition]

    def number(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        position = offsets.get(TaskContext.get().partitionId(), 0)
        for pdf in batches:
            pdf = pdf.copy()
            pdf["rank"] = np.arange(position + 1, position + 1 + len(pdf), dtype=np.int64)
            position += len(pdf)
            yield pdf

    ranked = ordered.mapInPandas(number, schema=ordered.schema)
    return ranked, ordered, running


def _stream_to_database(
    ranked: Any, db_url: str, db_table: str, as_of: date, scored_at: datetime
) -> int:
    """Replace the rows of ``as_of`` in one transaction, streaming partitions from Spark (the
    driver holds one chunk at a time, not the whole list)."""
    import sqlalchemy as sa

    from pipelines.scoring import INSERT_CHUNK_ROWS, clear_risk_list_date, risk_list_sql_table

    sql_table = risk_list_sql_table(db_table)
    engine = sa.create_engine(db_url)
    inserted = 0
    try:
        with engine.begin() as connection:
            clear_risk_list_date(connection, sql_table, as_of)
            chunk: list[Any] = []
            rows = ranked.toLocalIterator()  # partitions come in rank order
            for row in rows:
                chunk.append(row)
                if len(chunk) >= INSERT_CHUNK_ROWS:
                    inserted += _insert_chunk(connection, sql_table, chunk, as_of, scored_at)
                    chunk = []
            if chunk:
                inserted += _insert_chunk(connection, sql_table, chunk, as_of, scored_at)
    finally:
        engine.dispose()
    return inserted


def _insert_chunk(
    connection: Any, sql_table: Any, rows: list, as_of: date, scored_at: datetime
) -> int:
    from pipelines.scoring import insert_risk_list_rows
    from serving.scoring import RISK_LIST_COLUMNS

    frame = pd.DataFrame([r.asDict() for r in rows], columns=list(RISK_LIST_COLUMNS))
    return insert_risk_list_rows(connection, sql_table, frame, as_of, scored_at)


def _known_ids(crm: Any, events_from: pd.Timestamp | None = None) -> Any:
    """Customer ids of the customers and subscriptions tables and of the events (only those
    at or after ``events_from`` when given), not yet distinct."""
    from pyspark.sql import functions as F

    events = crm.events
    if events_from is not None:
        events = events.where(F.col("timestamp") >= F.lit(int(events_from.value)))
    known = events.select("customer_id")
    for table in (crm.customers, crm.subscriptions):
        if table is not None:
            known = known.unionByName(table.select("customer_id"))
    return known


def _no_history_count(crm: Any, features: Any, cutoff: pd.Timestamp) -> int:
    """Customers of any table without history before the cutoff (``serving.scoring``'s
    ``no_history``): every customer with an event before it has a feature row, so the events
    at or after it are the only ones to look at."""
    known = _known_ids(crm, events_from=cutoff).distinct()
    return known.join(features.select("customer_id"), "customer_id", "left_anti").count()


def _has_history_before(crm: Any, cutoff: pd.Timestamp, events_before: int | None) -> bool:
    """Whether any customer has history before the cutoff: an event, a signup or a
    subscription start (``serving.scoring.score_events``' test)."""
    from pyspark.sql import functions as F

    if events_before is None or events_before > 0:
        return True
    before = F.lit(int(cutoff.value))
    for table, column in ((crm.customers, "signup_date"), (crm.subscriptions, "start_date")):
        usable = table is not None and column in table.columns
        if usable and table.where(F.col(column) < before).limit(1).count():
            return True
    return False


def _require_someone_to_score(
    cfg: ProjectConfig, cutoff: pd.Timestamp, *, seen: int, with_history: int, active: int
) -> None:
    """``pipelines.scoring.require_someone_to_score`` from counts: the same
    ``NobodyToScoreError`` (one line, ``churn score`` exits 2) when nobody is active."""
    if active:
        return
    from pipelines.scoring import require_someone_to_score
    from serving.scoring import STATUS_NO_HISTORY, STATUS_SCORED

    # Only reached when it fails: 2 bytes per customer seen, for the message's counts.
    codes = np.repeat(np.array([0, 1], dtype=np.int8), [with_history, seen - with_history])
    statuses = pd.Categorical.from_codes(codes, categories=[STATUS_SCORED, STATUS_NO_HISTORY])
    scores = pd.DataFrame({"status": statuses, "is_active": np.zeros(seen, dtype=bool)})
    require_someone_to_score(scores, cfg, cutoff.date())


def run_score_spark(
    cfg: ProjectConfig,
    as_of: date | None = None,
    out: Path | None = None,
    db_url: str | None = None,
    db_table: str | None = None,
    *,
    spark: Any | None = None,
    models: Any | None = None,
    n_buckets: int | None = None,
    service_copy_max_rows: int = 2_000_000,
) -> dict[str, Any]:
    """``pipelines.scoring.run_score`` on Spark: the same risk list (Parquet dataset at ``out``,
    optionally the SQL table), computed as described in the module docstring.

    The service's copy (``serving.risk_list_path`` and its sidecar) is updated as ``run_score``
    does when the list has at most ``service_copy_max_rows`` rows (it is collected to the
    driver); otherwise the summary says it was skipped.
    """
    from pyspark.sql import functions as F

    from features.spark import build_features_spark
    from pipelines.scoring import split_table_name, update_service_risk_list
    from serving.scoring import RiskListMeta, load_champions

    if (db_url is None) != (db_table is None):
        raise ValueError("--db-url and --db-table go together: give both or neither")
    if db_table is not None:
        split_table_name(db_table)
    if out is not None and not str(out).endswith(_PARQUET_SUFFIXES):
        raise ValueError(f"the Spark engine writes Parquet: {Path(out).name!r}")

    timings: dict[str, float] = {}
    started = time.perf_counter()
    spark = spark or spark_for_flows()
    given = as_cutoff(pd.Timestamp(as_of)) if as_of is not None else None
    crm, summary = load_spark_crm(cfg, spark, before=given)
    cutoff = given if given is not None else summary.data_end
    if cutoff > summary.data_end:
        raise ValueError(
            f"as_of {cutoff.date()} is after the end of the data ({summary.data_end.date()}): "
            "features would treat the missing days as silence"
        )
    timings["load_s"] = time.perf_counter() - started

    step = time.perf_counter()
    models = models or load_champions(cfg)
    timings["models_s"] = time.perf_counter() - step

    step = time.perf_counter()
    if not _has_history_before(crm, cutoff, summary.n_events_before):
        seen = _known_ids(crm).distinct().count()
        _require_someone_to_score(cfg, cutoff, seen=seen, with_history=0, active=0)
    features = build_features_spark(
        crm,
        cutoff,
        params=cfg.features,
        label_params=cfg.labels,
        n_buckets=n_buckets,
        n_events=summary.n_events,
    )
    shares = category_shares_spark(crm.events, cutoff)
    scored_at = datetime.now(UTC)
    summary_out: dict[str, Any] = {"engine": "spark", "as_of": str(cutoff.date())}
    workdir = Path(tempfile.mkdtemp(prefix="churn-spark-models-"))
    flat = ranked = ordered = None
    facts: dict[str, Any] = {}
    # both scoring passes and the no-history count read the features: phase 3 runs once
    features.frame = features.frame.persist()
    features.cached.append(features.frame)
    try:
        # nobody in the churn population (is_active, labels.churn_definition): fail as run_score
        found = features.frame.agg(
            F.count(F.lit(1)).alias("rows"), F.count_if(F.col("is_active")).alias("active")
        ).first()
        no_history = _no_history_count(crm, features.frame, cutoff)
        _require_someone_to_score(
            cfg,
            cutoff,
            seen=int(found["rows"]) + no_history,
            with_history=int(found["rows"]),
            active=int(found["active"]),
        )
        flat, facts = score_features_spark(
            features.frame,
            _bought_pairs(crm.events, cutoff),
            models,
            cfg,
            n_buckets=features.n_buckets,
            category_shares=shares,
            workdir=workdir,
        )
        flat = flat.persist()
        # one small aggregation answers every count of the summary
        groups = pd.DataFrame(
            [
                row.asDict()
                for row in flat.groupBy(
                    "is_active", "risk_band", "suggested_action", "reasons_computed"
                )
                .count()
                .collect()
            ],
            columns=["is_active", "risk_band", "suggested_action", "reasons_computed", "count"],
        )
        ranked, ordered, risk_rows = rank_risk_list(flat)
        timings["score_s"] = time.perf_counter() - step

        step = time.perf_counter()

        def tally(column: str) -> dict[str, int]:
            sums = groups.dropna(subset=[column]).groupby(column)["count"].sum()
            return {str(k): int(v) for k, v in sorted(sums.items())}

        n_scored = int(groups["count"].sum())
        n_active = int(groups.loc[groups["is_active"].astype(bool), "count"].sum())
        status = {"scored": n_scored}
        if no_history:
            status["no_history"] = int(no_history)
        versions = models.model_versions()
        warnings = list(facts["warnings"])
        if no_history:
            warnings.append(f"{no_history} customers have no history before {cutoff.date()}")
        summary_out.update(
            {
                "customers": n_scored + int(no_history),
                "status": dict(sorted(status.items())),
                "active": n_active,
                "lapsed": n_scored - n_active,
                "risk_list_rows": risk_rows,
                "risk_bands": tally("risk_band"),
                "risk_band_thresholds": facts["risk_bands"],
                "band_source": facts["band_source"],
                "suggested_actions": tally("suggested_action"),
                "explained_rows": int(
                    groups.loc[groups["reasons_computed"].astype(bool), "count"].sum()
                ),
                "model_versions": versions,
                "run_ids": models.run_ids(),
                "warnings": warnings,
                "buckets": features.n_buckets,
            }
        )
        if out is not None:
            write_parquet_dataset(ranked, out)
            summary_out["out"] = str(out)
        if db_url is not None and db_table is not None:
            summary_out["db_rows"] = _stream_to_database(
                ranked, db_url, db_table, cutoff.date(), scored_at
            )
            summary_out["db_table"] = db_table
            from training.train import redact

            summary_out["db_url"] = redact(db_url)
        service_path = cfg.serving.risk_list_location(cfg.output_dir)
        if risk_rows <= service_copy_max_rows:
            table = ranked.toPandas().sort_values("rank").reset_index(drop=True)
            table["as_of"] = pd.to_datetime(table["as_of"]).astype("datetime64[ns]")
            meta = RiskListMeta(
                as_of=str(cutoff.date()),
                scored_at=scored_at.isoformat(),
                rows=len(table),
                model_versions=versions,
                run_ids=models.run_ids(),
                risk_bands=facts["risk_bands"],
                band_source=facts["band_source"],
                global_stats=features.stats[str(cutoff.date())].to_dict(),
                category_shares=shares,
                explained_rows=summary_out["explained_rows"],
            )
            written, why = update_service_risk_list(service_path, table, meta)
        else:
            written = False
            why = f"skipped: {risk_rows:,} rows exceed service_copy_max_rows"
        summary_out["service_risk_list"] = {
            "path": str(service_path),
            "written": written,
            "note": why,
        }
        timings["write_s"] = time.perf_counter() - step
    finally:
        for frame in (ordered, flat):
            if frame is not None:
                frame.unpersist()
        if "broadcast" in facts:  # the sorted scores can be large: free the executors' copies
            facts["broadcast"].destroy()
        features.release()
        shutil.rmtree(workdir, ignore_errors=True)
    timings["total_s"] = time.perf_counter() - started
    summary_out["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return summary_out
